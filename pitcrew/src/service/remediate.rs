//! The remediation stage as a service: the worker on Kafka.
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
//! budgets with them; nothing fences it yet (the reliability issue will).

use std::future::Future;
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
use pitcrew_remediate::exec::{Beat, BoxFuture, ExecError, Executors, Heartbeats};
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::{Governor, Journal, JournalError, Worker};
use pitcrew_rules::Inventory;

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
    ) -> BoxFuture<'a, Result<Option<Beat>, ExecError>> {
        let kafka = self.kafka.clone();
        let topic = self.topic.clone();
        let partition = pitcrew_bus::partition_of(node, self.partitions);
        let node = node.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // The latest one: its GPU count is the node's now.
                let mut latest: Option<(Timestamp, Beat)> = None;
                read_partition_range(
                    &kafka,
                    &topic,
                    partition,
                    since.unix_millis(),
                    i64::MAX,
                    Duration::from_secs(30),
                    |bytes| {
                        let Ok(ev) = decode::<Event>(bytes) else {
                            return;
                        };
                        let EventData::NodeHeartbeat(hb) = &ev.data else {
                            return;
                        };
                        if ev.node == node
                            && ev.time >= since
                            && latest.is_none_or(|(t, _)| ev.time >= t)
                        {
                            latest = Some((
                                ev.time,
                                Beat {
                                    gpu_count: hb.gpu_count,
                                },
                            ));
                        }
                    },
                )
                .map_err(|e| ExecError::retryable("kafka", e.to_string()))?;
                Ok(latest.map(|(_, b)| b))
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
#[derive(Debug)]
pub struct ServiceSpec<'a> {
    pub bus: &'a BusConfig,
    pub remediation: &'a RemediateConfig,
    pub inventory: Arc<Inventory>,
    /// Who the audit trail names (`remediate@INSTANCE`).
    pub actor: String,
    pub group_id: &'a str,
    pub dry_run: bool,
    /// Create pitcrew's topics first (a broker without the admin API, like
    /// the demo's in-process one, has them made beforehand).
    pub create_topics: bool,
}

/// The worker and its Kafka plumbing: built the same way for `pitcrew
/// remediate` and for its benchmark, which wraps an executor to time it.
pub struct Service {
    pub worker: Worker,
    consumer: Consumer,
    producer: Producer,
    dlq: DeadLetterWriter,
    actions_topic: String,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("actions_topic", &self.actions_topic)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Connects the executors (then `adjust` may wrap them), restores
    /// every target's state from the state topic and subscribes.
    pub async fn start(
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
    pub async fn consume(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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
