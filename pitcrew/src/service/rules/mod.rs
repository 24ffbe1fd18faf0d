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
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use pitcrew_bus::{
    ensure_topic_specs, partition_count, BusConfig, BusMetrics, KafkaConfig, TopicSpec,
};
use pitcrew_rules::{compile, Diagnostic, Inventory, Span, StageKind, StagePlan};
use tokio::sync::watch;

use crate::rulefiles;

mod metrics;
mod runner;

pub use metrics::{NodeInfoMetrics, RulesMetrics};
use metrics::{RulesReloadRejected, RulesReloaded};
use runner::stage_loop;

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
    max_future_skew: Span,
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
    /// Events dated further than this past the wall clock are taken at the
    /// wall clock's time (counted, logged).
    pub max_future_skew: Span,
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
                .node
                .info
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
            max_future_skew: args.max_future_skew,
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
                metrics.emit(RulesReloaded {
                    rules: l.rules,
                    by_signal,
                });
                let _ = tx.send(l);
            }
            Err(diags) => metrics.emit(RulesReloadRejected {
                diagnostics: &diags,
            }),
        }
    }
}
