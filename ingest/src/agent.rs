//! The collector loop of `pitcrew collect`: owns every source, samples
//! them on their schedule and writes what they produce to the spool. It
//! knows nothing about Kafka: the binary drains the spool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use pitcrew_contract::{encode, Event, Timestamp};

use crate::dcgm::{parse_prometheus, scrape, DcgmAdapter, DcgmScrape};
use crate::heartbeat::{heartbeat, HostFacts};
use crate::kmsg::{KmsgFollower, KmsgSource, SeqFile};
use crate::nvml::{spawn_xid_watcher, Gpus, NvmlError, NvmlGpus, NvmlSource, XidReport};
use crate::spool::{Priority, Pushed, Spool};
use crate::sysfs::SysfsSource;

/// What the agent reads and how often.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    /// `/dev/kmsg`, or None to leave the kernel log alone.
    pub kmsg: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub dcgm_url: Option<String>,
    /// Load NVML (false on machines where it must not be touched).
    pub nvml: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpoolOutcome {
    pub outcome: String,
}

/// The collector's metrics (`pitcrew_collect_*`).
#[derive(Clone, Debug, Default)]
pub struct CollectMetrics {
    pub events: Family<SourceLabel, Counter>,
    pub errors: Family<SourceLabel, Counter>,
    pub last_success: Family<SourceLabel, Gauge>,
    pub spool_pushes: Family<SpoolOutcome, Counter>,
    pub spool_pending_bytes: Gauge,
    pub kmsg_lost: Counter,
}

impl CollectMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pitcrew_collect");
        r.register("events", "Events produced, by source", self.events.clone());
        r.register(
            "source_errors",
            "Source read errors, by source",
            self.errors.clone(),
        );
        r.register(
            "source_last_success_timestamp_seconds",
            "When each source last read successfully (Unix seconds)",
            self.last_success.clone(),
        );
        r.register("spool_pushes", "Events offered to the spool, by outcome (spooled, dropped_periodic, dropped_full, error)", self.spool_pushes.clone());
        r.register(
            "spool_pending_bytes",
            "Bytes in the spool waiting for Kafka",
            self.spool_pending_bytes.clone(),
        );
        r.register(
            "kmsg_lost_records",
            "Kernel log records overwritten before they were read",
            self.kmsg_lost.clone(),
        );
    }

    fn ok(&self, source: &str, events: usize, now: Timestamp) {
        let l = SourceLabel {
            source: source.to_owned(),
        };
        self.events.get_or_create(&l).inc_by(events as u64);
        self.last_success
            .get_or_create(&l)
            .set(now.unix_millis() / 1000);
    }

    fn error(&self, source: &str) {
        self.errors
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }
}

/// Every source of one node.
pub struct Collector {
    cfg: AgentConfig,
    facts: HostFacts,
    spool: Arc<Mutex<Spool>>,
    metrics: CollectMetrics,
    gpus: Option<NvmlGpus>,
    gpu_sampler: NvmlSource,
    xids: Option<Receiver<XidReport>>,
    sysfs: SysfsSource,
    dcgm: DcgmAdapter,
    kmsg: Option<(KmsgFollower, KmsgSource, SeqFile)>,
    kmsg_quiet_since: Option<Instant>,
    next_sample: Instant,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("node", &self.cfg.node)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Opens every source. A source that cannot start is logged and left
    /// out; the agent runs with the others.
    pub fn new(
        cfg: AgentConfig,
        spool: Arc<Mutex<Spool>>,
        metrics: CollectMetrics,
        stop: Arc<AtomicBool>,
    ) -> Result<Collector, crate::heartbeat::HostFactsError> {
        let facts = HostFacts::read(&cfg.proc_root)?;
        let boot_time = Timestamp::now()
            .add_nanos(-(i64::try_from(facts.uptime_s).unwrap_or(0) * 1_000_000_000));
        let mut xids = None;
        let gpus = if cfg.nvml {
            match NvmlGpus::load() {
                Ok(g) => {
                    let (tx, rx) = channel();
                    match spawn_xid_watcher(g.handle(), tx, Arc::clone(&stop)) {
                        Ok((_handle, n)) => {
                            tracing::info!(
                                source = "nvml",
                                gpus_with_xid_events = n,
                                "nvml loaded"
                            );
                            xids = Some(rx);
                        }
                        Err(e) => {
                            tracing::warn!(source = "nvml", error = %e, "xid watcher not started")
                        }
                    }
                    Some(g)
                }
                Err(NvmlError::Absent(why)) => {
                    tracing::warn!(source = "nvml", reason = %why, "nvml is absent: no gpu telemetry from this node");
                    None
                }
                Err(e) => {
                    tracing::warn!(source = "nvml", error = %e, "nvml failed to start");
                    None
                }
            }
        } else {
            None
        };
        let kmsg = cfg.kmsg.as_ref().and_then(|path| {
            let seq_file = SeqFile::new(&cfg.state_dir);
            let resume = seq_file.load(&facts.boot_id);
            match KmsgFollower::open(path, resume) {
                Ok(f) => Some((f, KmsgSource::new(&cfg.node, &facts.boot_id, Some(boot_time)), seq_file)),
                Err(e) => {
                    tracing::warn!(source = "kmsg", path = %path.display(), error = %e, "kernel log not followed");
                    None
                }
            }
        });
        Ok(Collector {
            gpu_sampler: NvmlSource::new(&cfg.node, &facts.boot_id),
            sysfs: SysfsSource::new(&cfg.sys_root, &cfg.node, &facts.boot_id),
            dcgm: DcgmAdapter::new(&cfg.node, &facts.boot_id),
            facts,
            spool,
            metrics,
            gpus,
            xids,
            kmsg,
            kmsg_quiet_since: None,
            next_sample: Instant::now(),
            stop,
            cfg,
        })
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.tick(Timestamp::now());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One round: new kernel-log records and Xids always; the periodic
    /// sources when their interval has passed.
    pub fn tick(&mut self, now: Timestamp) {
        let mut events = Vec::new();
        self.read_kmsg(now, &mut events);
        if let Some(rx) = &self.xids {
            let before = events.len();
            while let Ok(r) = rx.try_recv() {
                events.push(self.gpu_sampler.xid_event(&r));
            }
            if events.len() > before {
                self.metrics.ok("nvml_xid", events.len() - before, now);
            }
        }
        if Instant::now() >= self.next_sample {
            self.next_sample = Instant::now() + self.cfg.interval;
            self.sample(now, &mut events);
        }
        self.spool_all(&events);
    }

    fn read_kmsg(&mut self, now: Timestamp, events: &mut Vec<Event>) {
        let Some((follower, source, seq_file)) = self.kmsg.as_mut() else {
            return;
        };
        let before = events.len();
        let mut read_any = false;
        for _ in 0..10_000 {
            match follower.next_record() {
                Ok(Some(r)) => {
                    read_any = true;
                    source.push(&r, now, events);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(source = "kmsg", error = %e, "read failed");
                    self.metrics.error("kmsg");
                    break;
                }
            }
        }
        // A record still open (AER waiting for more lines) is completed
        // once the log has been quiet for a moment.
        if read_any {
            self.kmsg_quiet_since = Some(Instant::now());
        } else if self
            .kmsg_quiet_since
            .is_some_and(|t| t.elapsed() > Duration::from_millis(200))
        {
            source.flush(now, events);
            self.kmsg_quiet_since = None;
            if let Some(seq) = follower.last_seq() {
                if let Err(e) = seq_file.save(&self.facts.boot_id, seq) {
                    tracing::warn!(source = "kmsg", error = %e, "cannot save the kmsg position");
                }
            }
        }
        let lost = follower.lost();
        if lost > self.metrics.kmsg_lost.get() {
            self.metrics
                .kmsg_lost
                .inc_by(lost - self.metrics.kmsg_lost.get());
        }
        if read_any {
            self.metrics.ok("kmsg", events.len() - before, now);
        }
    }

    fn sample(&mut self, now: Timestamp, events: &mut Vec<Event>) {
        let mut driver = None;
        let mut gpu_count = None;
        if let Some(g) = &self.gpus {
            let (evs, errors) = self.gpu_sampler.sample(g, now);
            for e in &errors {
                tracing::warn!(source = "nvml", error = %e, "sample failed");
                self.metrics.error("nvml");
            }
            if errors.is_empty() {
                self.metrics.ok("nvml", evs.len(), now);
            }
            events.extend(evs);
            driver = g.driver_version().ok();
            gpu_count = g.count().ok();
        }
        let (evs, errors) = self.sysfs.sample(now);
        for e in &errors {
            tracing::warn!(source = "sysfs", error = %e, "sample failed");
            self.metrics.error("sysfs");
        }
        self.metrics.ok("sysfs", evs.len(), now);
        events.extend(evs);
        if let Some(url) = &self.cfg.dcgm_url {
            match scrape(url, Duration::from_secs(5)) {
                Ok(body) => {
                    let (samples, _bad) = parse_prometheus(&body);
                    let evs = self.dcgm.ingest(&DcgmScrape::from_samples(&samples), now);
                    self.metrics.ok("dcgm", evs.len(), now);
                    events.extend(evs);
                }
                Err(e) => {
                    tracing::warn!(source = "dcgm", error = %e, "scrape failed");
                    self.metrics.error("dcgm");
                }
            }
        }
        if let Ok(f) = HostFacts::read(&self.cfg.proc_root) {
            self.facts.uptime_s = f.uptime_s;
        }
        events.push(heartbeat(
            &self.cfg.node,
            &self.facts,
            driver,
            gpu_count,
            now,
        ));
        self.metrics.ok("heartbeat", 1, now);
    }

    fn spool_all(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let Ok(mut spool) = self.spool.lock() else {
            return;
        };
        for ev in events {
            let outcome = match spool.push(&encode(ev), Priority::of(ev.kind())) {
                Ok(Pushed::Spooled) => "spooled",
                Ok(Pushed::DroppedPeriodic) => "dropped_periodic",
                Ok(Pushed::DroppedFull) => "dropped_full",
                Err(e) => {
                    tracing::error!(error = %e, "spool write failed");
                    "error"
                }
            };
            self.metrics
                .spool_pushes
                .get_or_create(&SpoolOutcome {
                    outcome: outcome.to_owned(),
                })
                .inc();
        }
        self.metrics
            .spool_pending_bytes
            .set(i64::try_from(spool.pending_bytes()).unwrap_or(i64::MAX));
    }
}
