//! `pitcrew demo`: the whole pipeline on one machine with nothing
//! installed. librdkafka's in-process mock cluster is the broker; a
//! simulated fleet (`pitcrew-simulate`) sends node telemetry and plays a
//! fault script; the rules and remediation stages are the ones `pitcrew
//! run` starts, with simulated executors where none are configured; a live
//! view shows incidents, actions, the governor's budget and throughput;
//! `/metrics` is served. Ends with a summary.
//!
//! The mock cluster has no admin API (topics are made on it directly), no
//! persistence, and waits 3 s before a consumer group's first rebalance.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::rdkafka::mocking::MockCluster;
use pitcrew_bus::{BatchProducer, BusConfig, BusMetrics, Consumer};
use pitcrew_contract::{
    decode, ActionRequest, AuditEntry, AuditRecord, Incident, IncidentStatus, Timestamp,
};
use pitcrew_remediate::config::RemediateConfig;
use pitcrew_remediate::exec::sim::SimFleet;
use pitcrew_remediate::exec::PowerState;
use pitcrew_rules::{Scenario, Span};
use pitcrew_simulate::{Fleet, FleetSpec, Player, DEMO_SCENARIO};
use prometheus_client::registry::Registry;

use crate::cli::{DemoArgs, RulesArgs};
use pitcrew::service::stages::{Stages, StagesSpec};

const GROUP_TOPIC: &str = "pitcrew.events.by-group";

/// Starts the mock cluster on its own thread (its handle cannot move
/// between threads) with every topic made; returns the bootstrap address
/// and what stops it.
fn start_broker(bus: &BusConfig) -> anyhow::Result<(String, std::sync::mpsc::Sender<()>)> {
    let topics: Vec<(String, i32)> = bus
        .topics
        .all()
        .iter()
        .map(|t| (t.name.clone(), t.partitions))
        .chain([(GROUP_TOPIC.to_owned(), bus.topics.events.partitions)])
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("mock-kafka".into())
        .spawn(move || {
            let made = (|| {
                let mock = MockCluster::new(1)?;
                for (name, partitions) in &topics {
                    mock.create_topic(name, *partitions, 1)?;
                }
                Ok::<_, pitcrew_bus::rdkafka::error::KafkaError>(mock)
            })();
            match made {
                Ok(mock) => {
                    let _ = ready_tx.send(Ok(mock.bootstrap_servers()));
                    let _ = stop_rx.recv();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        })?;
    let bootstrap = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the in-process broker did not start")?
        .map_err(|e| anyhow::anyhow!("in-process broker: {e}"))?;
    Ok((bootstrap, stop_tx))
}

/// What the view shows, gathered from the alerts, actions and audit topics.
#[derive(Debug, Default)]
struct Seen {
    incidents: BTreeMap<String, Incident>,
    actions: Vec<ActionRequest>,
    audit: Vec<AuditRecord>,
}

fn watch_topics(
    bus: &BusConfig,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let consumer = Consumer::new(
        &bus.kafka,
        "pitcrew-demo-view",
        &[
            &bus.topics.alerts.name,
            &bus.topics.actions.name,
            &bus.topics.audit.name,
        ],
        BusMetrics::default(),
    )?;
    let (alerts, actions) = (
        bus.topics.alerts.name.clone(),
        bus.topics.actions.name.clone(),
    );
    Ok(tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let payload = msg.payload().unwrap_or_default();
            let Ok(mut s) = seen.lock() else { return };
            if msg.topic() == alerts {
                if let Ok(i) = decode::<Incident>(payload) {
                    let keep = s.incidents.get(&i.id).is_none_or(|old| i.at >= old.at);
                    if keep {
                        s.incidents.insert(i.id.clone(), i);
                    }
                }
            } else if msg.topic() == actions {
                if let Ok(a) = decode::<ActionRequest>(payload) {
                    s.actions.push(a);
                }
            } else if let Ok(r) = decode::<AuditRecord>(payload) {
                s.audit.push(r);
            }
        }
    }))
}

fn step_of(e: &AuditEntry) -> Option<String> {
    match e {
        AuditEntry::StepSucceeded { step, .. } => Some(format!("{step} ok")),
        AuditEntry::StepFailed { step, .. } => Some(format!("{step} FAILED")),
        AuditEntry::Refused { step, .. } => Some(format!("{step} refused")),
        AuditEntry::AlreadyDone { step } => Some(format!("{step} already")),
        AuditEntry::Escalated { to, .. } => Some(format!("escalated to {to}")),
        AuditEntry::Returned => Some("returned to service".to_owned()),
        AuditEntry::BreakerOpened { .. } => Some("BREAKER OPEN".to_owned()),
        _ => None,
    }
}

/// One line per action: its plan and what its steps did so far.
fn action_lines(seen: &Seen) -> Vec<String> {
    seen.actions
        .iter()
        .map(|a| {
            let steps: Vec<String> = seen
                .audit
                .iter()
                .filter(|r| {
                    r.action.as_deref() == Some(a.id.as_str())
                        || (r.action.is_none()
                            && r.target == a.target
                            && matches!(r.entry, AuditEntry::Returned))
                })
                .filter_map(|r| step_of(&r.entry))
                .collect();
            format!(
                "{:<12} {:<22} {}",
                a.plan,
                a.target.to_string(),
                if steps.is_empty() {
                    "queued".to_owned()
                } else {
                    steps.join(", ")
                }
            )
        })
        .collect()
}

fn incident_lines(seen: &Seen) -> Vec<String> {
    // Suppressed ones (claimed by a fan-in or an Xid 154) are counted, not
    // listed.
    let mut v: Vec<&Incident> = seen
        .incidents
        .values()
        .filter(|i| i.status != IncidentStatus::Suppressed)
        .collect();
    v.sort_by_key(|i| i.opened_at);
    v.iter()
        .map(|i| {
            let status = match i.status {
                IncidentStatus::Open | IncidentStatus::Update => "open",
                IncidentStatus::Resolved => "resolved",
                IncidentStatus::Suppressed => "suppressed",
            };
            format!("{:<10} {:<22} {}", status, i.rule, i.summary)
        })
        .collect()
}

struct Counters {
    produced: AtomicU64,
    faults: AtomicU64,
}

/// The demo's settings, from its arguments and the built-in defaults.
struct Setup {
    duration: Duration,
    scenario: Scenario,
    spec: FleetSpec,
    remediation: RemediateConfig,
    rules: RulesArgs,
}

impl Setup {
    fn from_args(args: &DemoArgs) -> anyhow::Result<Setup> {
        let duration = Duration::from_nanos(
            u64::try_from(
                Span::parse(&args.duration)
                    .map_err(|e| anyhow::anyhow!("--duration: {e}"))?
                    .nanos(),
            )
            .unwrap_or(0),
        );
        let scenario = match &args.scenario {
            Some(path) => pitcrew::rulefiles::scenario(path)?,
            None => Scenario::parse("demo.toml", DEMO_SCENARIO)
                .map_err(|d| anyhow::anyhow!("built-in scenario: {d:?}"))?,
        };
        let remediation = match &args.remediation {
            Some(p) => RemediateConfig::load(p).map_err(anyhow::Error::msg)?,
            None => RemediateConfig::parse(
                "demo",
                "[remediate]\nretry_base = \"200ms\"\nverify = { timeout = \"60s\", quiet = \"3s\", poll = \"500ms\" }\n",
            )
            .map_err(anyhow::Error::msg)?,
        };
        Ok(Setup {
            duration,
            scenario,
            spec: FleetSpec {
                nodes: args.nodes.max(1),
                ..FleetSpec::default()
            },
            remediation,
            rules: RulesArgs {
                rules: vec!["@default".into()],
                inventory: None,
                listen: args.listen.clone(),
                lateness: "1s".into(),
                idle_grace: "2s".into(),
                max_future_skew: "30s".into(),
                lookback_cap: "1h".into(),
                group_id: "pitcrew-rules".into(),
                instance: Some("demo".into()),
                group_topic: GROUP_TOPIC.into(),
                dry_run: false,
                max_batch: 10_000,
            },
        })
    }
}

/// The simulated fleet's agents: a sampling round every second (nodes the
/// simulator powered off stay silent), the scenario's faults when due.
fn spawn_fleet(
    setup: &Setup,
    producer: Arc<BatchProducer>,
    topic: String,
    sim: SimFleet,
    // The nodes' `pitcrew_node_*` and the facility's `pitcrew_facility_*`.
    (telemetry, facility): (
        pitcrew_ingest::telemetry::TelemetryMetrics,
        pitcrew_facility::metrics::FacilityTelemetry,
    ),
    counters: Arc<Counters>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let run_id = format!("demo{}", Timestamp::now().unix_millis());
    let start = Timestamp::now();
    let mut fleet = Fleet::new(setup.spec.clone(), run_id.clone());
    let mut player = Player::new(&setup.scenario, run_id);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_round: Option<Instant> = None;
        let mut last_facility_round: Option<Instant> = None;
        loop {
            tick.tick().await;
            let elapsed = Span(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
            let mut events = player.due(start, elapsed);
            counters
                .faults
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if last_round.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_round = Some(Instant::now());
                let alive = |n: &str| sim.node(n).is_none_or(|s| s.power == PowerState::On);
                fleet.sample(Timestamp::now(), &alive, &mut events);
            }
            // The facility poller's rounds: every rack's PDU, UPS, CDU and
            // leak rope, every 5 s.
            if last_facility_round.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                last_facility_round = Some(Instant::now());
                fleet.sample_facility(Timestamp::now(), &mut events);
            }
            if events.is_empty() {
                continue;
            }
            let n = events.len() as u64;
            for e in &events {
                if e.kind().is_facility() {
                    facility.record(e);
                } else {
                    telemetry.record(e);
                }
            }
            match super::simulate::send_events(&producer, &topic, events).await {
                Ok(()) => {
                    counters.produced.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "demo telemetry not sent"),
            }
        }
    })
}

/// What the live view reads.
#[derive(Clone)]
struct View {
    seen: Arc<Mutex<Seen>>,
    worker: pitcrew_remediate::Worker,
    counters: Arc<Counters>,
    registry: Arc<Registry>,
    sim: SimFleet,
    started: Instant,
}

impl View {
    /// Redraws every second on a terminal, a status line every 5 s
    /// otherwise; ends only if the view's state is poisoned.
    async fn run(self) {
        let tty = std::io::stdout().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_events = 0.0;
        loop {
            tick.tick().await;
            let secs = self.started.elapsed().as_secs();
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
            let evaluated = pitcrew::http::metric_sum(&text, "pitcrew_rules_events_total");
            let rate = evaluated - last_events;
            last_events = evaluated;
            let budget = self.worker.budget();
            let (incidents, actions) = match self.seen.lock() {
                Ok(s) => (incident_lines(&s), action_lines(&s)),
                Err(_) => return,
            };
            let produced = self.counters.produced.load(Ordering::Relaxed);
            let head = format!(
                "[{secs:>3}s] events produced {produced} | evaluated {evaluated:.0} ({rate:.0}/s) | incidents {} | actions {} | out of service {}/{} | breaker {} | power cycles {}",
                incidents.len(),
                actions.len(),
                budget.out_of_service,
                budget.max_out_of_service,
                if budget.breaker_open { "OPEN" } else { "closed" },
                self.sim.count("power cycle"),
            );
            if tty {
                let mut out = String::from("\x1b[H\x1b[2J");
                out.push_str(&head);
                out.push_str("\n\nincidents\n");
                for l in incidents.iter().rev().take(12).rev() {
                    out.push_str(&format!("  {l}\n"));
                }
                out.push_str("\nactions\n");
                for l in actions.iter().rev().take(12).rev() {
                    out.push_str(&format!("  {l}\n"));
                }
                print!("{out}");
            } else if secs.is_multiple_of(5) {
                println!("{head}");
            }
            let _ = std::io::stdout().flush();
        }
    }

    fn summary(&self, setup: &Setup) -> anyhow::Result<()> {
        let s = self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("view state poisoned"))?;
        println!(
            "\n== pitcrew demo summary ({} s) ==",
            self.started.elapsed().as_secs()
        );
        println!(
            "telemetry: {} events produced ({} scripted fault events of {})",
            self.counters.produced.load(Ordering::Relaxed),
            self.counters.faults.load(Ordering::Relaxed),
            setup.scenario.events.len()
        );
        let suppressed = s
            .incidents
            .values()
            .filter(|i| i.status == IncidentStatus::Suppressed)
            .count();
        println!(
            "incidents ({} acted on; {suppressed} more suppressed by a fleet-level cause):",
            s.incidents.len() - suppressed
        );
        for l in incident_lines(&s) {
            println!("  {l}");
        }
        println!("actions ({}):", s.actions.len());
        for l in action_lines(&s) {
            println!("  {l}");
        }
        let budget = self.worker.budget();
        let spec = &setup.spec;
        println!(
            "fleet: {} of {} nodes cordoned now, {} power cycles, {} out of service (budget {}), breaker {}",
            spec.node_names().iter().filter(|n| self.sim.node(n).is_some_and(|x| x.unschedulable)).count(),
            spec.nodes,
            self.sim.count("power cycle"),
            budget.out_of_service,
            budget.max_out_of_service,
            if budget.breaker_open { "OPEN" } else { "closed" }
        );
        println!("audit records: {}", s.audit.len());
        Ok(())
    }
}

pub(crate) async fn run(config: Option<&Path>, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let setup = Setup::from_args(args)?;
    let inventory = Arc::new(setup.spec.inventory());

    // A config file may name real executors and pagers; Kafka is always
    // the in-process one.
    let mut bus = match config {
        Some(c) => BusConfig::load(Some(c))?,
        None => BusConfig::default(),
    };
    bus.topics = bus.topics.single_broker();
    bus.topics.events.partitions = 4;
    let (bootstrap, stop_broker) = start_broker(&bus)?;
    bus.kafka.brokers = bootstrap.clone();

    let sim = SimFleet::new(setup.spec.node_names());
    let mut registry = Registry::default();
    let stages = Stages::start(
        StagesSpec {
            bus: &bus,
            rules: &super::rules::options(&setup.rules)?,
            remediation: &setup.remediation,
            inventory: Arc::clone(&inventory),
            remediate_group_id: "pitcrew-remediate",
            create_topics: false,
        },
        &mut registry,
        |exec| {
            // Simulated where nothing real is configured.
            let s = Arc::new(sim.clone());
            exec.cluster.get_or_insert_with(|| s.clone());
            exec.scheduler.get_or_insert_with(|| s.clone());
            exec.power.get_or_insert_with(|| s.clone());
            exec.gpu_reset.get_or_insert_with(|| s.clone());
            exec.heartbeats = Some(s);
        },
    )
    .await?;
    let worker = stages.worker();
    // The simulated nodes' telemetry, as their agents would expose it.
    let telemetry = pitcrew_ingest::telemetry::TelemetryMetrics::default();
    telemetry.register(&mut registry);
    // Its facility, as `pitcrew facility` would expose it.
    let facility = pitcrew_facility::metrics::FacilityTelemetry::default();
    facility.register(&mut registry);
    let registry = Arc::new(registry);
    let (addr, _http) =
        pitcrew::http::serve(&args.listen, Arc::clone(&registry), stages.health()).await?;
    let (stop_stages, stages_stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(stages.run_until(async {
        let _ = stages_stopped.await;
    }));

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = watch_topics(&bus, Arc::clone(&seen))?;
    let counters = Arc::new(Counters {
        produced: AtomicU64::new(0),
        faults: AtomicU64::new(0),
    });
    let producer = Arc::new(BatchProducer::new(&bus.kafka, BusMetrics::default())?);
    let started = Instant::now();
    let feeder = spawn_fleet(
        &setup,
        Arc::clone(&producer),
        bus.topics.events.name.clone(),
        sim.clone(),
        (telemetry, facility),
        Arc::clone(&counters),
        started,
    );

    println!(
        "pitcrew demo: {} nodes x {} GPUs, scenario \"{}\" ({} fault events), {} s; in-process Kafka on {bootstrap}; metrics on http://{addr}/metrics",
        setup.spec.nodes,
        setup.spec.gpus,
        setup.scenario.name,
        setup.scenario.events.len(),
        setup.duration.as_secs()
    );
    let view = View {
        seen,
        worker: worker.clone(),
        counters,
        registry,
        sim,
        started,
    };
    tokio::select! {
        () = tokio::time::sleep(setup.duration) => {}
        () = view.clone().run() => {}
        () = pitcrew::service::shutdown_signal() => {}
    }
    feeder.abort();
    drop(producer);
    // Let the last steps land (a verify in progress finishes or stays
    // out of service, which the summary says).
    let _ = worker.wait_idle(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_stages.send(());
    let stopped = running.await.map_err(anyhow::Error::from).and_then(|r| r);
    watcher.abort();
    view.summary(&setup)?;
    // The broker lives until the process ends: clients still closing
    // would otherwise report it gone.
    std::mem::forget(stop_broker);
    stopped?;
    Ok(ExitCode::SUCCESS)
}
