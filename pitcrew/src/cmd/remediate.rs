//! `pitcrew remediate`: the remediation worker service.
//!
//! Consumes `pitcrew.actions` (requests) and `pitcrew.alerts` (incidents:
//! opened ones interrupt verification, resolved ones resolve pages) in one
//! consumer group, feeds them to the worker, and gives it a journal that
//! writes `pitcrew.audit` and the compacted `pitcrew.state`. On start the
//! whole state topic is read back and running plans resume.
//!
//! An offset is stored only after the worker made the request durable, so
//! a crash before re-delivers it (and the worker's duplicate check makes
//! the second delivery a no-op if the first got further than that).
//!
//! One instance per fleet: the governor's budgets are fleet-wide. A second
//! instance in the same consumer group would split the partitions and the
//! budgets with them (see ARCHITECTURE.md, "left for later").

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pitcrew_bus::{
    ensure_topics, partition_count, read_partition_range, read_topic_merged, BusConfig, BusMetrics,
    Consumer, DeadLetterWriter, Delivery, Handler, KafkaConfig, ProcessError, Producer,
};
use pitcrew_contract::{
    decode, encode, ActionRequest, AuditRecord, Event, EventData, Incident, RemediationState,
    Timestamp,
};
use pitcrew_remediate::config::RemediateConfig;
use pitcrew_remediate::exec::{BoxFuture, ExecError, Executors, Heartbeats};
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::{Governor, Journal, JournalError, Worker};
use pitcrew_rules::Inventory;
use prometheus_client::registry::Registry;

use super::rulefiles;
use crate::cli::RemediateArgs;

/// Writes audit and state records to Kafka.
struct KafkaJournal {
    producer: Producer,
    audit_topic: String,
    state_topic: String,
}

impl Journal for KafkaJournal {
    fn audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let key = record.target.key();
            let pending = self
                .producer
                .enqueue(&self.audit_topic, &key, &encode(&record), None)
                .await
                .map_err(|e| JournalError::Retryable(e.to_string()))?;
            // Enqueued in order; the delivery is checked off the hot path.
            tokio::spawn(async move {
                if let Err(e) = pending.wait().await {
                    tracing::error!(error = %e, "audit record not delivered");
                }
            });
            Ok(())
        })
    }

    fn state(&self, state: RemediationState) -> BoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let key = state.target.key();
            let bytes = encode(&state);
            let mut wait = Duration::from_millis(100);
            for attempt in 1..=5 {
                let r = match self
                    .producer
                    .enqueue(&self.state_topic, &key, &bytes, None)
                    .await
                {
                    Ok(p) => p.wait().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {
                        // Test hook: die like kill -9 between an intent and its outcome.
                        if state.intent.is_some()
                            && std::env::var("PITCREW_FAILPOINT").as_deref()
                                == Ok("remediate-crash-after-intent")
                        {
                            tracing::warn!("failpoint: aborting after the intent");
                            std::process::abort();
                        }
                        return Ok(());
                    }
                    Err(e) if attempt < 5 && e.is_retryable() => {
                        tracing::warn!(error = %e, attempt, "state write failed, retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => return Err(JournalError::Retryable(e.to_string())),
                }
            }
            Err(JournalError::Retryable(
                "state write: attempts exhausted".into(),
            ))
        })
    }
}

/// Verification's heartbeat check: reads the node's partition of the
/// events topic from `since` and looks for its `node.heartbeat`.
struct KafkaHeartbeats {
    kafka: KafkaConfig,
    topic: String,
    partitions: i32,
}

impl Heartbeats for KafkaHeartbeats {
    fn seen_since<'a>(
        &'a self,
        node: &'a str,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<bool, ExecError>> {
        let kafka = self.kafka.clone();
        let topic = self.topic.clone();
        let partition = pitcrew_bus::partition_of(node, self.partitions);
        let node = node.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut seen = false;
                read_partition_range(
                    &kafka,
                    &topic,
                    partition,
                    since.unix_millis(),
                    i64::MAX,
                    Duration::from_secs(30),
                    |bytes| {
                        if seen {
                            return;
                        }
                        if let Ok(ev) = decode::<Event>(bytes) {
                            seen = ev.node == node
                                && ev.time >= since
                                && matches!(ev.data, EventData::NodeHeartbeat(_));
                        }
                    },
                )
                .map_err(|e| ExecError::retryable("kafka", e.to_string()))?;
                Ok(seen)
            })
            .await
            .map_err(|e| ExecError::permanent("kafka", e.to_string()))?
        })
    }
}

/// Every state record, latest per target (the compacted topic's view).
fn read_states(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<RemediationState>> {
    let mut latest = std::collections::BTreeMap::new();
    let mut bad = 0u64;
    read_topic_merged(
        kafka,
        topic,
        0,
        None,
        Duration::from_secs(60),
        |bytes| match decode::<RemediationState>(bytes) {
            Ok(st) => {
                latest.insert(st.target.key(), st);
            }
            Err(_) => bad += 1,
        },
        |_, _, _| {},
    )?;
    if bad > 0 {
        tracing::warn!(
            records = bad,
            "state records that do not decode were skipped"
        );
    }
    Ok(latest.into_values().collect())
}

/// What the service is built from.
pub(crate) struct ServiceSpec<'a> {
    pub(crate) bus: &'a BusConfig,
    pub(crate) remediation: &'a RemediateConfig,
    pub(crate) inventory: Arc<Inventory>,
    /// Who the audit trail names (`remediate@INSTANCE`).
    pub(crate) actor: String,
    pub(crate) group_id: &'a str,
    pub(crate) dry_run: bool,
    /// Create pitcrew's topics first (a broker without the admin API, like
    /// the demo's in-process one, has them made beforehand).
    pub(crate) create_topics: bool,
}

/// The worker and its Kafka plumbing: built the same way for `pitcrew
/// remediate` and for its benchmark, which wraps an executor to time it.
pub(crate) struct Service {
    pub(crate) worker: Worker,
    consumer: Consumer,
    producer: Producer,
    dlq: DeadLetterWriter,
    actions_topic: String,
}

impl Service {
    /// Connects the executors (then `adjust` may wrap them), restores
    /// every target's state from the state topic and subscribes.
    pub(crate) async fn start(
        spec: ServiceSpec<'_>,
        metrics: &RemediateMetrics,
        bus_metrics: &BusMetrics,
        adjust: impl FnOnce(&mut Executors),
    ) -> anyhow::Result<Service> {
        let ServiceSpec {
            bus,
            remediation: rcfg,
            inventory,
            actor,
            group_id,
            dry_run,
            create_topics,
        } = spec;
        if create_topics {
            ensure_topics(&bus.kafka, &bus.topics)
                .await
                .context("create pitcrew's topics")?;
        }
        let mut exec = rcfg
            .executors(&inventory, &actor)
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(pager) = Arc::get_mut(&mut exec.pager) {
            let paging = std::mem::take(pager);
            *pager = paging.with_metrics(metrics.pages.clone());
        }
        let events_partitions = partition_count(&bus.kafka, &bus.topics.events.name).await?;
        exec.heartbeats = Some(Arc::new(KafkaHeartbeats {
            kafka: bus.kafka.clone(),
            topic: bus.topics.events.name.clone(),
            partitions: events_partitions.max(1),
        }));
        adjust(&mut exec);

        // Few messages, each on someone's critical path: no lingering.
        let mut producer_cfg = bus.kafka.clone();
        producer_cfg.producer.linger_ms = 0;
        let producer = Producer::new(&producer_cfg, bus_metrics.clone())?;
        let journal = Arc::new(KafkaJournal {
            producer: producer.clone(),
            audit_topic: bus.topics.audit.name.clone(),
            state_topic: bus.topics.state.name.clone(),
        });
        let mut wcfg = rcfg.worker_config(&actor).map_err(anyhow::Error::msg)?;
        wcfg.dry_run |= dry_run;
        let governor = Governor::new(
            rcfg.governor_config().map_err(anyhow::Error::msg)?,
            Arc::clone(&inventory),
        );
        let worker = Worker::new(
            wcfg,
            rcfg.plans().map_err(anyhow::Error::msg)?,
            exec,
            journal,
            governor,
            inventory,
            metrics.clone(),
        );

        let states = {
            let kafka = bus.kafka.clone();
            let topic = bus.topics.state.name.clone();
            tokio::task::spawn_blocking(move || read_states(&kafka, &topic)).await??
        };
        tracing::info!(targets = states.len(), "state restored");
        worker.restore(states);

        let consumer = Consumer::new(
            &bus.kafka,
            group_id,
            &[&bus.topics.actions.name, &bus.topics.alerts.name],
            bus_metrics.clone(),
        )?;
        let dlq = DeadLetterWriter::new(
            producer.clone(),
            &bus.topics.dlq.name,
            "remediate",
            bus_metrics.clone(),
        );
        Ok(Service {
            worker,
            consumer,
            producer,
            dlq,
            actions_topic: bus.topics.actions.name.clone(),
        })
    }

    /// Feeds requests and incidents to the worker until `shutdown`, then
    /// waits for running steps (up to 30 s) and commits.
    pub(crate) async fn consume(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Service {
            worker,
            consumer,
            producer,
            dlq,
            actions_topic,
        } = self;
        // The bus's one at-least-once loop: the size limit, dead letters
        // (retried, original headers kept) and offsets are its business.
        let consumed = pitcrew_bus::run_consumer(
            &consumer,
            &dlq,
            Intake {
                worker: &worker,
                actions_topic: &actions_topic,
            },
            shutdown,
        )
        .await;
        tracing::info!("shutting down: waiting for running steps (up to 30 s)");
        let _ = worker.wait_idle(Duration::from_secs(30)).await;
        let _ = producer.flush(Duration::from_secs(10)).await;
        consumed.map_err(anyhow::Error::from)
    }
}

/// Hands action requests and incidents to the worker.
struct Intake<'a> {
    worker: &'a Worker,
    actions_topic: &'a str,
}

impl Handler for Intake<'_> {
    async fn handle(&mut self, d: &Delivery<'_>) -> Result<(), ProcessError> {
        if d.origin.topic == self.actions_topic {
            let req: ActionRequest = d.decode()?;
            let mut wait = Duration::from_millis(100);
            // A request is acknowledged only once durable.
            while let Err(e) = self.worker.submit(req.clone()).await {
                tracing::error!(error = %e, action = %req.id, "request not durable, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        } else {
            let inc: Incident = d.decode()?;
            self.worker.incident(&inc).await;
        }
        Ok(())
    }
}

pub(crate) async fn run(config: Option<&Path>, args: &RemediateArgs) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let rcfg = match &args.remediation {
        Some(p) => RemediateConfig::load(p).map_err(anyhow::Error::msg)?,
        None => RemediateConfig::default(),
    };
    let inventory = Arc::new(rulefiles::inventory(args.inventory.as_deref())?);
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(super::rules::default_instance);
    let actor = format!("remediate@{instance}");

    let mut registry = Registry::default();
    let bus_metrics = BusMetrics::default();
    bus_metrics.register(&mut registry);
    let metrics = RemediateMetrics::default();
    metrics.register(&mut registry);

    let service = Service::start(
        ServiceSpec {
            bus: &bus,
            remediation: &rcfg,
            inventory,
            actor: actor.clone(),
            group_id: &args.group_id,
            dry_run: args.dry_run,
            create_topics: true,
        },
        &metrics,
        &bus_metrics,
        |_| {},
    )
    .await?;

    let health: crate::http::Health = Arc::new(|| Ok(()));
    let (addr, _http) = crate::http::serve(&args.listen, Arc::new(registry), health).await?;
    let admin_addr = match rcfg.admin_token().map_err(anyhow::Error::msg)? {
        Some(token) => {
            let (a, _) =
                crate::admin::serve(&args.admin_listen, token, service.worker.clone()).await?;
            Some(a.to_string())
        }
        None => {
            tracing::warn!(
                "no admin token configured ([admin] token_file or token_env): the admin API is off"
            );
            None
        }
    };
    tracing::info!(listen = %addr, admin = admin_addr.as_deref().unwrap_or("off"), actor = %actor, "remediation worker starting");
    service.consume(super::collect::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `pitcrew audit --target node/n17`: the target's timeline from
/// `pitcrew.audit`.
pub(crate) fn audit(
    config: Option<&Path>,
    args: &crate::cli::AuditArgs,
) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let want = if args.target.contains('/') {
        args.target.clone()
    } else {
        format!("node/{}", args.target)
    };
    let mut rows: Vec<AuditRecord> = Vec::new();
    read_topic_merged(
        &bus.kafka,
        &bus.topics.audit.name,
        0,
        None,
        Duration::from_secs(60),
        |bytes| {
            if let Ok(r) = decode::<AuditRecord>(bytes) {
                if r.target.key() == want {
                    rows.push(r);
                }
            }
        },
        |_, _, _| {},
    )?;
    rows.sort_by_key(|r| r.at);
    let mut out = String::new();
    for r in &rows {
        if args.json {
            out.push_str(&String::from_utf8_lossy(&encode(r)));
            out.push('\n');
            continue;
        }
        let entry = serde_json::to_value(&r.entry).unwrap_or_default();
        let decision = entry
            .get("decision")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let mut detail: Vec<String> = Vec::new();
        if let Some(obj) = entry.as_object() {
            for (k, v) in obj {
                if k != "decision" {
                    detail.push(format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    ));
                }
            }
        }
        out.push_str(&format!(
            "{}  {:<18} {:<32} {}  [{} {} {}]\n",
            r.at,
            decision,
            detail.join(" "),
            r.actor,
            r.plan.as_deref().unwrap_or("-"),
            r.action.as_deref().unwrap_or("-"),
            r.incident.as_deref().unwrap_or("-"),
        ));
    }
    if rows.is_empty() {
        eprintln!("no audit records for {want}");
        return Ok(ExitCode::from(1));
    }
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
