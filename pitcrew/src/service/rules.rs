//! The rules stage as a service: the streaming rule engine on Kafka.
//!
//! Two stages, each a consumer group with a transactional producer:
//!
//! - the **node stage** consumes `pitcrew.events` (keyed by node) and runs
//!   every rule that does not need a topology group. It writes incidents
//!   (`pitcrew.alerts`), action requests (`pitcrew.actions`), dead letters
//!   (`pitcrew.dlq`) and the events the group rules read, re-keyed by their
//!   group (`pitcrew.events.by-group`), together with its input offsets in
//!   one Kafka transaction;
//! - the **group stage** consumes the re-keyed topic and runs the fan-in
//!   rules over topology groups (leaf switch, driver version, job...) with
//!   the rules they claim, one engine per route and partition.
//!
//! State is per partition and is rebuilt, not stored: when a stage first
//! sees a partition (start, rebalance, an aborted transaction, a reload)
//! it re-reads that partition from `horizon` before the first offset it
//! must process up to that offset, with the outputs discarded (they were
//! written by whoever processed those events, with the same ids), then
//! goes on live. Why re-reading rather than a changelog topic: the state is
//! a pure function of the events, the evaluator is deterministic and fast
//! (tens of millions of events a second), and the default pack's horizon is
//! an hour; a changelog would add a topic, a write per state change and a
//! second source of truth. The price: memory longer than the horizon cap
//! (`--lookback-cap`, e.g. a 7-day repeat count) starts empty after a
//! rebalance; remediation's per-target attempt budget covers that case.
//!
//! Time: event time. A partition that goes quiet still needs its timers
//! (absence, holds) to fire: once it has been quiet for `--idle-grace`, its
//! event time moves on at wall-clock pace, the grace behind its last event
//! (so an agent's spooled backlog delayed by less than the grace still
//! counts; one delayed by more is late, counted and ignored). Outputs of such timers are written
//! in transactions of their own; after a crash they may be written again,
//! with the same ids.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use pitcrew_bus::rdkafka::message::{Message, OwnedMessage};
use pitcrew_bus::{
    ensure_topic_specs, partition_count, read_partition_range, BusConfig, BusError, BusMetrics,
    KafkaConfig, Output as BusOutput, TopicSpec, TransactionalStage,
};
use pitcrew_contract::{decode_with_limit, encode, DecodeError, Event, IncidentStatus, Keyed};
use pitcrew_rules::{
    compile, Diagnostic, Emit, EngineConfig, Inventory, Output, Span, Stage, StageConfig,
    StageKind, StagePlan,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::rulefiles;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The rule stage's metrics, `pitcrew_rules_*`.
#[derive(Clone, Debug)]
pub struct RulesMetrics {
    events: Family<StageLabel, Counter>,
    late: Family<StageLabel, Counter>,
    overflow: Family<StageLabel, Counter>,
    dead_letters: Family<StageLabel, Counter>,
    restored: Family<StageLabel, Counter>,
    state_entries: Family<StageLabel, Gauge>,
    state_bytes: Family<StageLabel, Gauge>,
    incidents: Family<RuleLabel, Counter>,
    actions: Counter,
    reloads: Family<OutcomeLabel, Counter>,
    rules_loaded: Gauge,
    assigned: Family<StageLabel, Gauge>,
    eval_seconds: Family<StageLabel, Histogram>,
    node_info: Family<pitcrew_ingest::telemetry::NodeInfoLabel, Gauge>,
    open_incidents: Family<StageLabel, Gauge>,
}

impl Default for RulesMetrics {
    fn default() -> Self {
        RulesMetrics {
            events: Family::default(),
            late: Family::default(),
            overflow: Family::default(),
            dead_letters: Family::default(),
            restored: Family::default(),
            state_entries: Family::default(),
            state_bytes: Family::default(),
            incidents: Family::default(),
            actions: Counter::default(),
            reloads: Family::default(),
            rules_loaded: Gauge::default(),
            assigned: Family::default(),
            eval_seconds: Family::new_with_constructor(|| {
                Histogram::new([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
            }),
            node_info: Family::default(),
            open_incidents: Family::default(),
        }
    }
}

impl RulesMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pitcrew_node_info",
            "1 per inventory node, with its rack and leaf switch (for joins)",
            self.node_info.clone(),
        );
        let r = registry.sub_registry_with_prefix("pitcrew_rules");
        r.register("events", "Events evaluated, by stage", self.events.clone());
        r.register(
            "late_events",
            "Events older than the watermark, counted and ignored",
            self.late.clone(),
        );
        r.register(
            "state_overflow",
            "Keys, members or steps refused at a state bound",
            self.overflow.clone(),
        );
        r.register(
            "dead_letters",
            "Undecodable events sent to the dead-letter topic",
            self.dead_letters.clone(),
        );
        r.register(
            "restored_events",
            "Events re-read to rebuild a partition's state",
            self.restored.clone(),
        );
        r.register(
            "state_entries",
            "Keys and open incidents held",
            self.state_entries.clone(),
        );
        r.register(
            "open_incidents",
            "Incidents open now (not suppressed, not resolved)",
            self.open_incidents.clone(),
        );
        r.register(
            "state_bytes",
            "Estimated bytes of rule state held",
            self.state_bytes.clone(),
        );
        r.register(
            "incidents",
            "Incidents opened or suppressed, by rule",
            self.incidents.clone(),
        );
        r.register(
            "action_requests",
            "Action requests written",
            self.actions.clone(),
        );
        r.register(
            "reloads",
            "Rule reloads by outcome (ok, error)",
            self.reloads.clone(),
        );
        r.register(
            "rules_loaded",
            "Rules in the running set",
            self.rules_loaded.clone(),
        );
        r.register(
            "assigned_partitions",
            "Input partitions this instance holds, by stage",
            self.assigned.clone(),
        );
        r.register(
            "evaluation_seconds",
            "Evaluation time per event (a batch's time over its events)",
            self.eval_seconds.clone(),
        );
    }

    fn stage(s: &str) -> StageLabel {
        StageLabel {
            stage: s.to_owned(),
        }
    }
}

/// The running rule set and what it came from.
#[derive(Clone, Debug)]
struct Loaded {
    plan: Arc<StagePlan>,
    horizon: Span,
    rules: usize,
}

fn load_rules(paths: &[PathBuf]) -> Result<Loaded, Vec<String>> {
    let files = rulefiles::load(paths).map_err(|e| vec![format!("{e:#}")])?;
    match compile(&files) {
        Ok(set) => Ok(Loaded {
            horizon: set.program.horizon(),
            rules: set.program.rules().len(),
            plan: Arc::new(set.program.stage_plan()),
        }),
        Err(d) => Err(d.iter().map(Diagnostic::to_string).collect()),
    }
}

/// The newest modification time among the rule files (for hot reload).
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut out = Vec::new();
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>)>) {
        if p.as_os_str() == rulefiles::DEFAULT_PACK {
            return;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if let Ok(rd) = std::fs::read_dir(p) {
                    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    v.sort();
                    for e in v {
                        walk(&e, out);
                    }
                }
            }
            Ok(m) => out.push((p.to_owned(), m.modified().ok())),
            Err(_) => out.push((p.to_owned(), None)),
        }
    }
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Settings both stages share.
#[derive(Clone, Debug)]
struct StageCfg {
    kafka: KafkaConfig,
    events_topic: String,
    group_topic: String,
    alerts_topic: String,
    actions_topic: String,
    dlq_topic: String,
    events_partitions: i32,
    inventory: Arc<Inventory>,
    lateness: Span,
    lookback_cap: Span,
    idle_grace: Span,
    dry_run: bool,
    max_batch: usize,
    max_message_bytes: usize,
}

/// How the rules stage runs: what `pitcrew rules` (and `run`, `demo`)
/// take from their command lines.
#[derive(Clone, Debug)]
pub struct RulesOptions {
    /// Rule files and folders (`@default`: the embedded pack).
    pub rules: Vec<PathBuf>,
    /// The consumer groups are `<group_id>-node` and `<group_id>-group`.
    pub group_id: String,
    /// The re-keyed events topic the group stage reads.
    pub group_topic: String,
    /// This instance's stable name (transactional ids); the hostname when
    /// absent.
    pub instance: Option<String>,
    pub lateness: Span,
    pub lookback_cap: Span,
    pub idle_grace: Span,
    pub dry_run: bool,
    pub max_batch: usize,
}

/// The node and group stages and the rule reloader, running.
#[derive(Debug)]
pub struct RulesService {
    node: tokio::task::JoinHandle<anyhow::Result<()>>,
    group: tokio::task::JoinHandle<anyhow::Result<()>>,
    reloader: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// Set once the node stage has its partitions.
    pub ready: Arc<AtomicBool>,
}

impl RulesService {
    /// Compiles the rules and starts both stages. `create_topics`: create
    /// the re-keyed group topic (a broker without the admin API, like the
    /// demo's in-process one, has its topics made beforehand).
    pub async fn start(
        bus: &BusConfig,
        args: &RulesOptions,
        inventory: Arc<Inventory>,
        metrics: &RulesMetrics,
        bus_metrics: &BusMetrics,
        create_topics: bool,
    ) -> anyhow::Result<RulesService> {
        for n in inventory.nodes() {
            metrics
                .node_info
                .get_or_create(&pitcrew_ingest::telemetry::NodeInfoLabel {
                    node: n.name.clone(),
                    rack: n.rack.clone().unwrap_or_default(),
                    leaf_switch: n.leaf_switch.clone().unwrap_or_default(),
                })
                .set(1);
        }
        let loaded = match load_rules(&args.rules) {
            Ok(l) => l,
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                anyhow::bail!("the rules do not compile ({} diagnostics)", diags.len());
            }
        };
        let (lateness, lookback_cap, idle_grace) =
            (args.lateness, args.lookback_cap, args.idle_grace);
        if create_topics {
            let group_spec = TopicSpec {
                name: args.group_topic.clone(),
                partitions: bus.topics.events.partitions,
                retention_ms: Some(24 * 3600 * 1000),
                compact: false,
            };
            ensure_topic_specs(&bus.kafka, &[&group_spec], bus.topics.replication_factor)
                .await
                .context("create the re-keyed events topic")?;
        }
        metrics.rules_loaded.set(loaded.rules as i64);
        tracing::info!(
            rules = loaded.rules,
            routes = loaded.plan.routes.len(),
            "rules stage starting"
        );

        // Absence rules attribute inventory nodes to partitions: that needs
        // the topic's real partition count, not the configured one.
        let events_partitions = match partition_count(&bus.kafka, &bus.topics.events.name).await? {
            0 => anyhow::bail!(
                "topic {} does not exist (run `pitcrew topics bootstrap`)",
                bus.topics.events.name
            ),
            n => {
                if n != bus.topics.events.partitions {
                    tracing::warn!(topic = %bus.topics.events.name, configured = bus.topics.events.partitions, actual = n, "the events topic's partition count differs from the config; using the topic's");
                }
                n
            }
        };
        let cfg = StageCfg {
            kafka: bus.kafka.clone(),
            events_topic: bus.topics.events.name.clone(),
            group_topic: args.group_topic.clone(),
            alerts_topic: bus.topics.alerts.name.clone(),
            actions_topic: bus.topics.actions.name.clone(),
            dlq_topic: bus.topics.dlq.name.clone(),
            events_partitions,
            inventory,
            lateness,
            lookback_cap,
            idle_grace,
            dry_run: args.dry_run,
            max_batch: args.max_batch.max(1),
            max_message_bytes: bus.kafka.max_message_bytes,
        };
        let (tx, rx) = watch::channel(loaded);
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let instance = args.instance.clone().unwrap_or_else(default_instance);

        let reloader = tokio::spawn(reload_loop(
            args.rules.clone(),
            tx,
            metrics.clone(),
            Arc::clone(&stop),
        ));
        let node = tokio::spawn(stage_loop(
            StageKind::Node,
            cfg.clone(),
            format!("{}-node", args.group_id),
            // The group in the id too: two fleets' stages on one Kafka
            // cluster with the same instance name must not fence each other.
            format!("{}-node@{instance}", args.group_id),
            rx.clone(),
            metrics.clone(),
            bus_metrics.clone(),
            Arc::clone(&stop),
            Arc::clone(&ready),
        ));
        let group = tokio::spawn(stage_loop(
            StageKind::Group,
            cfg,
            format!("{}-group", args.group_id),
            format!("{}-group@{instance}", args.group_id),
            rx,
            metrics.clone(),
            bus_metrics.clone(),
            Arc::clone(&stop),
            Arc::new(AtomicBool::new(false)),
        ));
        Ok(RulesService {
            node,
            group,
            reloader,
            stop,
            ready,
        })
    }

    /// Runs until a stage fails or `shutdown`; then stops after the
    /// current batch.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let RulesService {
            node,
            group,
            reloader,
            stop,
            ready: _,
        } = self;
        let result = tokio::select! {
            r = node => r.map_err(anyhow::Error::from).and_then(|r| r),
            r = group => r.map_err(anyhow::Error::from).and_then(|r| r),
            () = shutdown => {
                tracing::info!("stopping after the current batch");
                stop.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        };
        reloader.abort();
        result
    }
}

/// The hostname, or the process id where it cannot be read.
pub fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("pid{}", std::process::id()))
}

/// Reloads on SIGHUP and when a rule file changes; a set that does not
/// compile is logged with every diagnostic and the running set stays.
async fn reload_loop(
    paths: Vec<PathBuf>,
    tx: watch::Sender<Loaded>,
    metrics: RulesMetrics,
    stop: Arc<AtomicBool>,
) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = fingerprint(&paths);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = fingerprint(&paths);
        if !by_signal && now == seen {
            continue;
        }
        seen = now;
        match load_rules(&paths) {
            Ok(l) => {
                tracing::info!(
                    rules = l.rules,
                    by_signal,
                    "rules reloaded; state rebuilds from the lookback"
                );
                metrics
                    .reloads
                    .get_or_create(&OutcomeLabel {
                        outcome: "ok".into(),
                    })
                    .inc();
                metrics.rules_loaded.set(l.rules as i64);
                let _ = tx.send(l);
            }
            Err(diags) => {
                metrics
                    .reloads
                    .get_or_create(&OutcomeLabel {
                        outcome: "error".into(),
                    })
                    .inc();
                for d in &diags {
                    tracing::error!(diagnostic = %d, "rule reload failed; the running rules stay");
                }
            }
        }
    }
}

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
        RulesMetrics::stage(self.stage.kind().name())
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
                    if let Ok(ev) = decode_with_limit::<Event>(payload, limit) {
                        restored += 1;
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
        self.metrics
            .restored
            .get_or_create(&self.label())
            .inc_by(restored);
        tracing::info!(stage = %self.id, partition, first_offset, read, lookback = %lookback, "partition state rebuilt");
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
async fn stage_loop(
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
            Ok(ev) => {
                evaluated += 1;
                runner.stage.process(p, m.offset(), &ev, wall, &mut emits);
            }
        }
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
