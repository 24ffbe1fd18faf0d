//! A stage against Kafka: batches in, the pure [`Stage`] over them, the
//! outputs, dead letters and re-keyed events out with the input offsets in
//! one transaction; partitions rebuilt from the log; the idle advance once
//! a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_bus::rdkafka::message::{Message, OwnedMessage};
use pitcrew_bus::{
    read_partition_range, BusError, BusMetrics, Output as BusOutput, TransactionalStage,
};
use pitcrew_contract::{
    decode_with_limit, encode, DecodeError, Event, IncidentStatus, Keyed, Timestamp,
};
use pitcrew_observe::StageLabel;
use pitcrew_rules::{Emit, EngineConfig, Output, Stage, StageConfig, StageKind};
use tokio::sync::watch;

use super::metrics::{FutureEventsClamped, PartitionRebuilt, RuleLabel, RulesMetrics};
use super::{Loaded, StageCfg};

/// A stage's Kafka side: the pure stage and what it needs to run against
/// the bus.
struct Runner {
    stage: Stage,
    cfg: StageCfg,
    metrics: RulesMetrics,
    /// The transactional id, naming this instance's stage in logs.
    id: String,
    /// The consumer's rebalance count when the partitions were rebuilt.
    epoch: u64,
    /// The origin of the wall time the idle advance measures.
    origin: Instant,
}

impl Runner {
    fn input_topic(&self) -> &str {
        match self.stage.kind() {
            StageKind::Node => &self.cfg.events_topic,
            StageKind::Group => &self.cfg.group_topic,
        }
    }

    fn label(&self) -> StageLabel {
        StageLabel::new(self.stage.kind().name())
    }

    /// Rebuilds a partition's state from its recent past, read from Kafka.
    fn rebuild(
        &mut self,
        partition: i32,
        first_offset: i64,
        first_ts_ms: i64,
    ) -> Result<(), BusError> {
        self.stage.begin_rebuild(partition, first_offset);
        let lookback = self.stage.lookback();
        let from = first_ts_ms - lookback.nanos() / 1_000_000;
        let mut restored = 0u64;
        let topic = self.input_topic().to_owned();
        let kafka = self.cfg.kafka.clone();
        let limit = self.cfg.max_message_bytes;
        let skew = self.cfg.max_future_skew;
        // As when they were first processed (at a later now).
        let now = Timestamp::now();
        let stage = &mut self.stage;
        let read = tokio::task::block_in_place(|| {
            read_partition_range(
                &kafka,
                &topic,
                partition,
                from,
                first_offset,
                Duration::from_secs(120),
                |payload| {
                    if let Ok(mut ev) = decode_with_limit::<Event>(payload, limit) {
                        restored += 1;
                        clamp_future(&mut ev, now, skew);
                        stage.restore(partition, &ev);
                    }
                },
            )
        });
        let read = match read {
            Ok(n) => n,
            Err(e) => {
                self.stage.forget(partition);
                return Err(e);
            }
        };
        self.metrics.emit(PartitionRebuilt {
            id: &self.id,
            stage: self.stage.kind().name(),
            partition,
            first_offset,
            read,
            restored,
            lookback,
        });
        Ok(())
    }

    /// Turns a stage's emits into topic records.
    fn records(&self, emits: Vec<Emit>, out: &mut Vec<BusOutput>) {
        for e in emits {
            match e {
                Emit::Output(Output::Incident(i)) => {
                    if matches!(i.status, IncidentStatus::Open | IncidentStatus::Suppressed) {
                        self.metrics
                            .incidents
                            .get_or_create(&RuleLabel {
                                rule: i.rule.clone(),
                            })
                            .inc();
                    }
                    out.push(BusOutput {
                        topic: self.cfg.alerts_topic.clone(),
                        key: Keyed::key(&i),
                        payload: encode(&i),
                    });
                }
                Emit::Output(Output::Action(a)) => {
                    self.metrics.actions.inc();
                    out.push(BusOutput {
                        topic: self.cfg.actions_topic.clone(),
                        key: Keyed::key(&a),
                        payload: encode(&a),
                    });
                }
                Emit::Forward { key, event } => out.push(BusOutput {
                    topic: self.cfg.group_topic.clone(),
                    key,
                    payload: encode(&event),
                }),
            }
        }
    }

    fn update_state_gauges(&self) {
        let label = self.label();
        let size = self.stage.state_size();
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics
            .open_incidents
            .get_or_create(&label)
            .set(gauge(size.open_incidents));
        self.metrics
            .state_entries
            .get_or_create(&label)
            .set(gauge(size.entries));
        self.metrics
            .state_bytes
            .get_or_create(&label)
            .set(gauge(size.bytes));
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn stage_loop(
    kind: StageKind,
    cfg: StageCfg,
    group_id: String,
    transactional_id: String,
    mut rules: watch::Receiver<Loaded>,
    metrics: RulesMetrics,
    bus_metrics: BusMetrics,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let input = match kind {
        StageKind::Node => cfg.events_topic.clone(),
        StageKind::Group => cfg.group_topic.clone(),
    };
    let loaded = rules.borrow_and_update().clone();
    if kind == StageKind::Group && loaded.plan.routes.is_empty() {
        tracing::info!("no topology-group rules: the group stage idles");
    }
    let tstage = TransactionalStage::new(
        &cfg.kafka,
        &group_id,
        &transactional_id,
        &[input.as_str()],
        bus_metrics,
    )
    .await
    .with_context(|| format!("{} stage", kind.name()))?;
    ready.store(true, Ordering::Relaxed);
    let stage = Stage::new(
        kind,
        Arc::clone(&loaded.plan),
        loaded.horizon,
        Arc::clone(&cfg.inventory),
        StageConfig {
            engine: EngineConfig {
                allowed_lateness: cfg.lateness,
                dry_run: cfg.dry_run,
                expect_inventory: true,
                ..EngineConfig::default()
            },
            lookback_cap: cfg.lookback_cap,
            idle_grace: cfg.idle_grace,
            node_partitions: cfg.events_partitions,
            partitioner: pitcrew_bus::partition_of,
        },
    );
    let mut runner = Runner {
        stage,
        cfg,
        metrics,
        id: transactional_id.clone(),
        epoch: 0,
        origin: Instant::now(),
    };
    let mut last_tick = Instant::now();
    let mut ticks = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if rules.has_changed().unwrap_or(false) {
            let l = rules.borrow_and_update().clone();
            runner.stage.set_rules(l.plan, l.horizon);
        }
        // Never cancelled half-read: it returns empty after the wait.
        let batch = tstage
            .next_batch_within(
                runner.cfg.max_batch,
                Duration::from_millis(2),
                Duration::from_millis(500),
            )
            .await?;
        if !batch.is_empty() {
            process_batch(&mut runner, &tstage, &batch).await?;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            on_tick(&mut runner, &tstage).await?;
            ticks += 1;
            if ticks.is_multiple_of(5) {
                // Lag is a round trip per partition: every 5 s is enough.
                if let Err(e) = tstage.record_lag(Duration::from_secs(2)) {
                    tracing::debug!(error = %e, "lag not measured");
                }
            }
        }
    }
    Ok(())
}

/// Takes an event dated more than `skew` past `now` at `now`, returning
/// how far ahead it was. Event time is the latest time seen less the
/// lateness: one event from a clock hours ahead would move it on by hours
/// and fire every absence timer (every node "silent") at once.
fn clamp_future(ev: &mut Event, now: Timestamp, skew: pitcrew_rules::Span) -> Option<i64> {
    let limit = now.add_nanos(skew.nanos());
    (ev.time > limit).then(|| {
        let ahead = (ev.time.unix_nanos() - now.unix_nanos()) / 1_000_000_000;
        ev.time = now;
        ahead
    })
}

async fn process_batch(
    runner: &mut Runner,
    tstage: &TransactionalStage,
    batch: &[OwnedMessage],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let wall = started.duration_since(runner.origin);
    let label = runner.label();
    let mut emits = Vec::new();
    let mut dead: Vec<(&OwnedMessage, DecodeError)> = Vec::new();
    let mut evaluated = 0u64;
    let now = Timestamp::now();
    let (mut future, mut future_example) = (0u64, None::<(String, i64)>);
    let (late0, over0) = runner.stage.totals();
    // After a rebalance any partition may have been processed elsewhere in
    // between: rebuild them all from the log.
    let epoch = tstage.rebalance_epoch();
    if epoch != runner.epoch {
        runner.epoch = epoch;
        runner.stage.reset();
    }
    for m in batch {
        let p = m.partition();
        if runner.stage.needs_rebuild(p, m.offset()) {
            let ts = m.timestamp().to_millis().unwrap_or(0);
            runner.rebuild(p, m.offset(), ts)?;
        }
        let payload = m.payload().unwrap_or_default();
        match decode_with_limit::<Event>(payload, runner.cfg.max_message_bytes) {
            Err(e) => {
                runner.metrics.dead_letters.get_or_create(&label).inc();
                runner.stage.skip(p, m.offset());
                dead.push((m, e));
            }
            Ok(mut ev) => {
                evaluated += 1;
                if let Some(ahead) = clamp_future(&mut ev, now, runner.cfg.max_future_skew) {
                    future += 1;
                    future_example.get_or_insert((ev.node.clone(), ahead));
                }
                runner.stage.process(p, m.offset(), &ev, wall, &mut emits);
            }
        }
    }
    if let Some((node, ahead_s)) = &future_example {
        runner.metrics.emit(FutureEventsClamped {
            stage: &label,
            count: future,
            node,
            ahead_s: *ahead_s,
        });
    }
    let eval = started.elapsed().as_secs_f64();
    if evaluated > 0 {
        runner
            .metrics
            .eval_seconds
            .get_or_create(&label)
            .observe(eval / evaluated as f64);
    }
    runner
        .metrics
        .events
        .get_or_create(&label)
        .inc_by(evaluated);
    let (late1, over1) = runner.stage.totals();
    runner
        .metrics
        .late
        .get_or_create(&label)
        .inc_by(late1.saturating_sub(late0));
    runner
        .metrics
        .overflow
        .get_or_create(&label)
        .inc_by(over1.saturating_sub(over0));
    let mut outs = Vec::with_capacity(emits.len());
    runner.records(emits, &mut outs);

    let stage_name = format!("rules-{}", runner.stage.kind().name());
    let mut txn = tstage.begin(batch)?;
    let mut result = Ok(());
    for o in &outs {
        if let Err(e) = txn.produce(o) {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        for (m, e) in &dead {
            let reason = e.to_string();
            if let Err(e) = txn.dead_letter(
                &runner.cfg.dlq_topic,
                *m,
                &reason,
                e.reason_label(),
                &stage_name,
            ) {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() && crash_before_commit(evaluated) {
        // Test failpoint: the outputs are in the open transaction, the
        // offsets are not committed. A restart must write them once.
        let _ = txn.flush_outputs().await;
        tracing::error!("failpoint: crashing between processing and commit");
        std::process::abort();
    }
    let committed = match result {
        Ok(()) => txn.commit().await,
        Err(e) => {
            let _ = txn.abort().await;
            Err(e)
        }
    };
    match committed {
        Ok(()) => Ok(()),
        Err(e) => {
            // The inputs come again: their partitions rebuild from the log
            // so nothing is counted twice.
            for m in batch {
                runner.stage.forget(m.partition());
            }
            if e.is_retryable() {
                tracing::warn!(stage = %runner.id, error = %e, events = batch.len(), "transaction aborted; the batch will be processed again");
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

/// `PITCREW_FAILPOINT=rules-crash-before-commit` makes the first batch
/// with events abort the process after producing and before committing
/// (for the exactly-once test; never set in production).
fn crash_before_commit(evaluated: u64) -> bool {
    evaluated > 0
        && std::env::var("PITCREW_FAILPOINT").is_ok_and(|v| v == "rules-crash-before-commit")
}

/// Once a second: drop partitions no longer assigned, and move quiet
/// partitions' event time on so their timers fire.
async fn on_tick(runner: &mut Runner, tstage: &TransactionalStage) -> anyhow::Result<()> {
    if let Ok(assigned) = tstage.assignment() {
        let topic = runner.input_topic().to_owned();
        runner
            .stage
            .retain(|p| assigned.iter().any(|(t, q)| *t == topic && *q == p));
        runner
            .metrics
            .assigned
            .get_or_create(&runner.label())
            .set(assigned.len() as i64);
    }
    let mut emits = Vec::new();
    runner
        .stage
        .advance_idle(Instant::now().duration_since(runner.origin), &mut emits);
    if !emits.is_empty() {
        let mut outs = Vec::new();
        runner.records(emits, &mut outs);
        let mut txn = tstage.begin(&[])?;
        for o in &outs {
            txn.produce(o)?;
        }
        txn.commit().await?;
    }
    runner.update_state_gauges();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_from_a_clock_ahead_is_taken_at_the_wall_clock() {
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let skew = pitcrew_rules::Span::parse("30s").unwrap();
        let mut ev = pitcrew_contract::examples::event(pitcrew_contract::EventKind::GpuXid);
        ev.time = now.add_nanos(29_000_000_000);
        assert_eq!(clamp_future(&mut ev, now, skew), None, "within the skew");
        assert_eq!(ev.time, now.add_nanos(29_000_000_000));
        ev.time = now.add_nanos(1_743_000_000_000);
        assert_eq!(clamp_future(&mut ev, now, skew), Some(1743));
        assert_eq!(ev.time, now);
        // The past is the watermark's business (late events), not this.
        ev.time = now.add_nanos(-3_600_000_000_000);
        assert_eq!(clamp_future(&mut ev, now, skew), None);
    }
}
