//! The collector loop of `pitcrew collect`: owns every source, samples
//! them on their schedule and writes what they produce to the spool. It
//! knows nothing about Kafka: the binary drains the spool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use pitcrew_contract::{encode, Event, Timestamp};

use crate::coalesce::Coalescer;
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
    /// Sample this many simulated GPUs instead of NVML.
    pub simulated_gpus: Option<u32>,
    /// The node's BMC, polled for SEL entries and sensors.
    pub bmc: Option<crate::ipmi::BmcEndpoint>,
    /// The node's BMC over Redfish, for BMCs without IPMI over LAN.
    pub redfish: Option<crate::redfish::RedfishTarget>,
    /// Read this node's conditions from the Kubernetes API: the access and
    /// the node's Kubernetes name.
    pub kubernetes: Option<(crate::k8s::KubeAccess, String)>,
}

/// Why a collector could not start (permanent: its configuration or host).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    HostFacts(#[from] crate::heartbeat::HostFactsError),
    #[error(transparent)]
    Kubernetes(#[from] crate::k8s::K8sError),
    #[error(transparent)]
    Redfish(#[from] crate::redfish::RedfishError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpoolOutcome {
    pub outcome: String,
}

pitcrew_observe::metrics! {
    /// The collector's metrics (`pitcrew_collect_*`).
    pub struct CollectMetrics in "pitcrew_collect" {
        events: Family<SourceLabel, Counter> => "events", "Events produced, by source";
        errors: Family<SourceLabel, Counter> => "source_errors", "Source read errors, by source";
        last_success: Family<SourceLabel, Gauge>
            => "source_last_success_timestamp_seconds", "When each source last read successfully (Unix seconds)";
        spool_pushes: Family<SpoolOutcome, Counter>
            => "spool_pushes", "Events offered to the spool, by outcome (spooled, dropped_periodic, dropped_full, error)";
        spool_pending_bytes: Gauge => "spool_pending_bytes", "Bytes in the spool waiting for Kafka";
        kmsg_lost: Counter => "kmsg_lost_records", "Kernel log records overwritten before they were read";
        link_duplicates: Counter
            => "link_duplicates", "Link changes dropped as already reported by another source (the kernel log and sysfs see the same one)";
        state_entries: Family<SourceLabel, Gauge>
            => "state_entries", "Values a source keeps between samples (counter baselines, open windows)";
        + /// This node's telemetry as `pitcrew_node_*`, for the fleet dashboard.
        telemetry: crate::telemetry::TelemetryMetrics;
    }
}

/// A source failed to read: logged with the error and counted by source.
struct SourceFailed<'a> {
    source: &'static str,
    /// What failed, in words (`sample failed`, `bmc poll failed`).
    what: &'static str,
    error: &'a dyn std::fmt::Display,
}

impl pitcrew_observe::InternalEvent<CollectMetrics> for SourceFailed<'_> {
    fn emit(self, m: &CollectMetrics) {
        tracing::warn!(source = self.source, error = %self.error, "{}", self.what);
        m.errors
            .get_or_create(&SourceLabel {
                source: self.source.to_owned(),
            })
            .inc();
    }
}

impl CollectMetrics {
    fn ok(&self, source: &str, events: usize, now: Timestamp) {
        let l = SourceLabel {
            source: source.to_owned(),
        };
        self.events.get_or_create(&l).inc_by(events as u64);
        self.last_success
            .get_or_create(&l)
            .set(now.unix_millis() / 1000);
    }
}

/// What the reader threads hand the collector.
#[derive(Debug)]
enum Input {
    /// A kernel-log record and its sequence number.
    Kmsg(String, Option<u64>),
    /// Records were overwritten before they were read.
    KmsgLost(u64),
    Xid(XidReport),
}

/// Every source of one node. Blocking readers (the kernel log, NVML's Xid
/// events) run on their own threads and wake the collector through one
/// channel; the periodic sources run on the collector's schedule. An idle
/// node costs one wake-up per sampling interval.
pub struct Collector {
    cfg: AgentConfig,
    facts: HostFacts,
    spool: Arc<Mutex<Spool>>,
    metrics: CollectMetrics,
    gpus: Option<Box<dyn Gpus + Send>>,
    gpu_sampler: NvmlSource,
    sysfs: SysfsSource,
    dcgm: DcgmAdapter,
    inputs: Receiver<Input>,
    kmsg: Option<(KmsgSource, SeqFile)>,
    /// Last kmsg sequence read, and whether a record may still be open.
    kmsg_seq: Option<u64>,
    kmsg_open: bool,
    coalescer: Coalescer,
    links: crate::links::LinkStates,
    bmc: Option<BmcPoller>,
    redfish: Option<RedfishPoller>,
    kubernetes: Option<(
        crate::k8s::NodeReader,
        String,
        crate::k8s::NodeConditions,
        Instant,
    )>,
    next_sample: Instant,
    stop: Arc<AtomicBool>,
    on_spooled: Box<dyn Fn() + Send>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("node", &self.cfg.node)
            .finish_non_exhaustive()
    }
}

/// Identical kernel-log events within this window become one event with a
/// count (the first is sent at once).
const COALESCE_WINDOW: Duration = Duration::from_secs(1);
/// How long a link change reported by one source makes the same state from
/// another a duplicate (sysfs is read every interval; the driver logs at once).
const LINK_DEDUP_WINDOW: Duration = Duration::from_secs(30);

/// How long the kernel log must be quiet before an open multi-line record
/// (an AER record waiting for more lines) is completed.
const KMSG_QUIET: Duration = Duration::from_millis(200);

impl Collector {
    /// Opens every source. A source that cannot start is logged and left
    /// out; the agent runs with the others. `on_spooled` is called after
    /// events were written to the spool (the binary wakes its drainer).
    pub fn new(
        cfg: AgentConfig,
        spool: Arc<Mutex<Spool>>,
        metrics: CollectMetrics,
        stop: Arc<AtomicBool>,
        on_spooled: Box<dyn Fn() + Send>,
    ) -> Result<Collector, CollectorError> {
        let facts = HostFacts::read(&cfg.proc_root)?;
        let boot_time = Timestamp::now()
            .add_nanos(-(i64::try_from(facts.uptime_s).unwrap_or(0) * 1_000_000_000));
        let (tx, inputs) = channel::<Input>();
        let gpus: Option<Box<dyn Gpus + Send>> = if let Some(n) = cfg.simulated_gpus {
            Some(Box::new(crate::nvml::SimulatedGpus::new(n)))
        } else if cfg.nvml {
            match NvmlGpus::load() {
                Ok(g) => {
                    let (xid_tx, xid_rx) = channel::<XidReport>();
                    match spawn_xid_watcher(g.handle(), xid_tx, Arc::clone(&stop)) {
                        Ok((_handle, n)) => {
                            tracing::info!(
                                source = "nvml",
                                gpus_with_xid_events = n,
                                "nvml loaded"
                            );
                            let tx = tx.clone();
                            let _ = std::thread::Builder::new()
                                .name("xid-forward".to_owned())
                                .spawn(move || {
                                    while let Ok(r) = xid_rx.recv() {
                                        if tx.send(Input::Xid(r)).is_err() {
                                            return;
                                        }
                                    }
                                });
                        }
                        Err(e) => {
                            tracing::warn!(source = "nvml", error = %e, "xid watcher not started")
                        }
                    }
                    Some(Box::new(g))
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
            match KmsgFollower::open_blocking(path, resume) {
                Ok(mut follower) => {
                    let tx = tx.clone();
                    // Blocking reads: no wake-ups while the log is quiet. The
                    // thread is not joined at shutdown; it ends with the process.
                    let spawned = std::thread::Builder::new().name("kmsg".to_owned()).spawn(move || {
                        let mut lost = 0;
                        loop {
                            match follower.next_record() {
                                Ok(Some(r)) => {
                                    if follower.lost() > lost {
                                        lost = follower.lost();
                                        let _ = tx.send(Input::KmsgLost(lost));
                                    }
                                    if tx.send(Input::Kmsg(r, follower.last_seq())).is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                                Err(e) => {
                                    tracing::warn!(source = "kmsg", error = %e, "read failed");
                                    std::thread::sleep(Duration::from_secs(1));
                                }
                            }
                        }
                    });
                    if let Err(e) = spawned {
                        tracing::warn!(source = "kmsg", error = %e, "kernel-log thread not started");
                    }
                    Some((KmsgSource::new(&cfg.node, &facts.boot_id, Some(boot_time)), seq_file))
                }
                Err(e) => {
                    tracing::warn!(source = "kmsg", path = %path.display(), error = %e, "kernel log not followed");
                    None
                }
            }
        });
        let bmc = cfg
            .bmc
            .clone()
            .map(|target| BmcPoller::new(target, &cfg, &facts));
        let redfish = match cfg.redfish.clone() {
            Some(target) => Some(RedfishPoller::new(target, &cfg, &facts)?),
            None => None,
        };
        let kubernetes = match cfg.kubernetes.clone() {
            Some((access, name)) => Some((
                crate::k8s::NodeReader::new(access)?,
                name,
                crate::k8s::NodeConditions::new(&cfg.node),
                Instant::now(),
            )),
            None => None,
        };
        Ok(Collector {
            gpu_sampler: NvmlSource::new(&cfg.node, &facts.boot_id),
            sysfs: SysfsSource::new(&cfg.sys_root, &cfg.node, &facts.boot_id),
            dcgm: DcgmAdapter::new(&cfg.node, &facts.boot_id),
            facts,
            spool,
            metrics,
            gpus,
            inputs,
            kmsg,
            kmsg_seq: None,
            kmsg_open: false,
            coalescer: Coalescer::new(COALESCE_WINDOW, 4096),
            links: crate::links::LinkStates::new(LINK_DEDUP_WINDOW),
            bmc,
            redfish,
            kubernetes,
            next_sample: Instant::now(),
            stop,
            on_spooled,
            cfg,
        })
    }

    /// Runs until the stop flag is set (checked at least every second).
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wait = self
                .next_sample
                .saturating_duration_since(now)
                .min(Duration::from_secs(1));
            if self.kmsg_open {
                wait = wait.min(KMSG_QUIET);
            }
            let mut events = Vec::new();
            match self.inputs.recv_timeout(wait) {
                Ok(input) => {
                    self.handle(input, &mut events);
                    // Take whatever else is queued, then write once.
                    while let Ok(more) = self.inputs.try_recv() {
                        self.handle(more, &mut events);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.kmsg_quiet(&mut events),
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            self.coalescer.expire(Timestamp::now(), &mut events);
            if Instant::now() >= self.next_sample {
                self.next_sample = Instant::now() + self.cfg.interval;
                self.sample(Timestamp::now(), &mut events);
            }
            let before = self.links.dropped();
            events.retain(|e| self.links.keep(e));
            self.metrics
                .link_duplicates
                .inc_by(self.links.dropped() - before);
            self.spool_all(&events);
        }
    }

    fn handle(&mut self, input: Input, events: &mut Vec<Event>) {
        let now = Timestamp::now();
        match input {
            Input::Kmsg(record, seq) => {
                if let Some((source, _)) = self.kmsg.as_mut() {
                    let mut parsed = Vec::new();
                    source.push(&record, now, &mut parsed);
                    let before = events.len();
                    for mut ev in parsed {
                        if let Some(gpu) = ev.gpu.as_mut() {
                            self.gpu_sampler.enrich(gpu);
                        }
                        self.coalescer.push(ev, events);
                    }
                    self.metrics.ok("kmsg", events.len() - before, now);
                    self.kmsg_seq = seq.or(self.kmsg_seq);
                    self.kmsg_open = true;
                }
            }
            Input::KmsgLost(total) => {
                let seen = self.metrics.kmsg_lost.get();
                if total > seen {
                    self.metrics.kmsg_lost.inc_by(total - seen);
                }
            }
            Input::Xid(r) => {
                events.push(self.gpu_sampler.xid_event(&r));
                self.metrics.ok("nvml_xid", 1, now);
            }
        }
    }

    /// The kernel log went quiet: complete open records and remember how
    /// far we read.
    fn kmsg_quiet(&mut self, events: &mut Vec<Event>) {
        if !self.kmsg_open {
            return;
        }
        self.kmsg_open = false;
        let Some((source, seq_file)) = self.kmsg.as_mut() else {
            return;
        };
        let mut parsed = Vec::new();
        source.flush(Timestamp::now(), &mut parsed);
        for mut ev in parsed {
            if let Some(gpu) = ev.gpu.as_mut() {
                self.gpu_sampler.enrich(gpu);
            }
            self.coalescer.push(ev, events);
        }
        if let Some(seq) = self.kmsg_seq {
            if let Err(e) = seq_file.save(&self.facts.boot_id, seq) {
                tracing::warn!(source = "kmsg", error = %e, "cannot save the kmsg position");
            }
        }
    }

    fn sample(&mut self, now: Timestamp, events: &mut Vec<Event>) {
        let mut driver = None;
        let mut gpu_count = None;
        if let Some(g) = &self.gpus {
            let (evs, errors) = self.gpu_sampler.sample(g.as_ref(), now);
            for e in &errors {
                self.metrics.emit(SourceFailed {
                    source: "nvml",
                    what: "sample failed",
                    error: e,
                });
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
            self.metrics.emit(SourceFailed {
                source: "sysfs",
                what: "sample failed",
                error: e,
            });
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
                    self.metrics.emit(SourceFailed {
                        source: "dcgm",
                        what: "scrape failed",
                        error: &e,
                    });
                }
            }
        }
        if let Some(bmc) = self.bmc.as_mut() {
            match bmc.poll(now) {
                Ok(Some(evs)) => {
                    self.metrics.ok("ipmi", evs.len(), now);
                    events.extend(evs);
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.emit(SourceFailed {
                        source: "ipmi",
                        what: "bmc poll failed",
                        error: &e,
                    });
                }
            }
        }
        if let Some(redfish) = self.redfish.as_mut() {
            match redfish.poll(now) {
                Ok(Some(evs)) => {
                    self.metrics.ok("redfish", evs.len(), now);
                    events.extend(evs);
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.emit(SourceFailed {
                        source: "redfish",
                        what: "bmc poll failed",
                        error: &e,
                    });
                }
            }
        }
        if let Some((access, name, conditions, next)) = self.kubernetes.as_mut() {
            if Instant::now() >= *next {
                *next = Instant::now() + K8S_INTERVAL;
                let read = access
                    .node(name, Duration::from_secs(10))
                    .map(|node| conditions.events(&node, now));
                match read {
                    Ok(evs) => {
                        self.metrics.ok("k8s", evs.len(), now);
                        events.extend(evs);
                    }
                    Err(e) => {
                        self.metrics.emit(SourceFailed {
                            source: "k8s",
                            what: "node conditions not read",
                            error: &e,
                        });
                    }
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
        for (source, entries) in [
            ("nvml", self.gpu_sampler.tracked_counters()),
            ("sysfs", self.sysfs.tracked()),
            ("kmsg_coalesce", self.coalescer.open_windows()),
            ("link_states", self.links.len()),
        ] {
            self.metrics
                .state_entries
                .get_or_create(&SourceLabel {
                    source: source.to_owned(),
                })
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
    }

    fn spool_all(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let Ok(mut spool) = self.spool.lock() else {
            return;
        };
        for ev in events {
            self.metrics.telemetry.record(ev);
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
        drop(spool);
        (self.on_spooled)();
    }
}

/// How often the node's conditions are read from the API server.
const K8S_INTERVAL: Duration = Duration::from_secs(10);

/// How often the BMC is asked, at most: BMCs are slow and share a
/// management network.
const BMC_INTERVAL: Duration = Duration::from_secs(10);

/// The BMC side of the agent: one session, reopened after a failure, and
/// the SEL position saved across restarts (`<state dir>/ipmi-sel-last`).
struct BmcPoller {
    endpoint: crate::ipmi::BmcEndpoint,
    connection: Option<crate::ipmi::Bmc>,
    source: crate::ipmi::IpmiSource,
    position_file: PathBuf,
    next: Instant,
}

impl BmcPoller {
    fn new(endpoint: crate::ipmi::BmcEndpoint, cfg: &AgentConfig, facts: &HostFacts) -> BmcPoller {
        let position_file = cfg.state_dir.join("ipmi-sel-last");
        let saved = std::fs::read_to_string(&position_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        BmcPoller {
            source: crate::ipmi::IpmiSource::new(&cfg.node, &facts.boot_id, saved),
            endpoint,
            connection: None,
            position_file,
            next: Instant::now(),
        }
    }

    /// Events of one poll, or None when it is not time yet.
    fn poll(&mut self, now: Timestamp) -> Result<Option<Vec<Event>>, crate::ipmi::IpmiSourceError> {
        if Instant::now() < self.next {
            return Ok(None);
        }
        self.next = Instant::now() + BMC_INTERVAL;
        let result = self.read(now);
        if result.is_err() {
            // Reconnect next time: the session may be what broke.
            self.connection = None;
        }
        result.map(Some)
    }

    fn read(&mut self, now: Timestamp) -> Result<Vec<Event>, crate::ipmi::IpmiSourceError> {
        if self.connection.is_none() {
            self.connection = Some(crate::ipmi::Bmc::open(
                &self.endpoint,
                Duration::from_secs(5),
            )?);
        }
        let Some(conn) = self.connection.as_mut() else {
            return Ok(Vec::new());
        };
        let sel = conn.sel_entries()?;
        let sensors = conn.threshold_sensors()?;
        let mut events = self.source.sel_events(&sel, now);
        events.extend(self.source.sensor_events(&sensors, now));
        if let Some(last) = self.source.last_sel() {
            if let Err(e) = std::fs::write(&self.position_file, format!("{last}\n")) {
                tracing::warn!(source = "ipmi", error = %e, "cannot save the sel position");
            }
        }
        Ok(events)
    }
}

/// The Redfish BMC side of the agent: log positions saved across restarts
/// (`<state dir>/redfish-log-positions`, one `<log path> <last id>` per
/// line).
struct RedfishPoller {
    bmc: crate::redfish::RedfishBmc,
    source: crate::redfish::RedfishSource,
    position_file: PathBuf,
    next: Instant,
}

impl RedfishPoller {
    fn new(
        target: crate::redfish::RedfishTarget,
        cfg: &AgentConfig,
        facts: &HostFacts,
    ) -> Result<RedfishPoller, crate::redfish::RedfishError> {
        let position_file = cfg.state_dir.join("redfish-log-positions");
        let saved = std::fs::read_to_string(&position_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (log, id) = l.rsplit_once(' ')?;
                Some((log.to_owned(), id.parse().ok()?))
            })
            .collect();
        Ok(RedfishPoller {
            bmc: crate::redfish::RedfishBmc::new(target, Duration::from_secs(10))?,
            source: crate::redfish::RedfishSource::new(&cfg.node, &facts.boot_id, saved),
            position_file,
            next: Instant::now(),
        })
    }

    fn poll(&mut self, now: Timestamp) -> Result<Option<Vec<Event>>, crate::redfish::RedfishError> {
        if Instant::now() < self.next {
            return Ok(None);
        }
        self.next = Instant::now() + BMC_INTERVAL;
        let entries = self.bmc.log_entries()?;
        let sensors = self.bmc.sensors()?;
        let mut events = self.source.log_events(&entries, now);
        events.extend(self.source.sensor_events(&sensors, now));
        let saved: String = self
            .source
            .positions()
            .iter()
            .map(|(log, id)| format!("{log} {id}\n"))
            .collect();
        if let Err(e) = std::fs::write(&self.position_file, saved) {
            tracing::warn!(source = "redfish", error = %e, "cannot save the log positions");
        }
        Ok(Some(events))
    }
}
