//! The scenario suite: every scenario of reference/faults.md ("Scenarios
//! every release must get right") end to end through the real components.
//!
//! Each scenario runs its own `pitcrew run` (the rules and remediation
//! stages, default rule pack) on its own topics of the real local Kafka,
//! with real executors: a shared Slurm cluster (slurmctld and a slurmd per
//! node that can be touched), a shared kube-apiserver with those Nodes,
//! `ipmi_sim` BMCs for the nodes a scenario may power-cycle, a GPU reset
//! hook that records its calls, and webhook receivers for the pages (one
//! per team). The test plays the scenario's events (rule-test event
//! format) as a node agent would, keeps every node's heartbeat going, and
//! then asserts, from the actions, alerts and audit topics, the BMCs,
//! Slurm, Kubernetes and the webhooks:
//!
//! - the exact set of actions the rules asked for (and so, every one they
//!   did not),
//! - each action's audit chain: every record names the action, its
//!   incident and the fault's events, and the steps ran in order,
//! - the pages each team got,
//! - and it records the time from the fault's send to Kafka to the first
//!   step of the action (printed; `--nocapture` shows them).
//!
//! The fleet: 96 nodes n1-n96, 8 to a rack, 4 racks to a leaf switch;
//! n1-n48 on driver 570.86.15, n49-n96 on 580.95.05.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pitcrew_bus::{read_topic_merged, BatchProducer, BusConfig, BusMetrics};
use pitcrew_contract::{
    decode, encode, examples, ActionRequest, AuditEntry, AuditRecord, Event, EventData, EventKind,
    Incident, Timestamp,
};
use pitcrew_harness::ipmi::{PowerView, SimulatedBmc, PASSWORD};
use pitcrew_harness::kube::KubeApiserver;
use pitcrew_harness::slurm::SlurmCluster;
use pitcrew_harness::webhook::WebhookReceiver;
use pitcrew_remediate::worker::describe;
use pitcrew_simulate::Player;
use pitcrew_tests::{config, config_file_text, unique};

const FLEET: u32 = 96;
/// Nodes some scenario may cordon, drain or requeue: they are in Slurm and
/// Kubernetes. Every other node of the fleet exists only in the inventory,
/// so a step on one of them fails, and the test sees it.
const TOUCHABLE: &[&str] = &[
    "n11", "n13", "n17", "n18", "n20", "n42", "n43", "n50", "n60", "n70", "n88", "n90",
];
const TEAMS: &[&str] = &["hardware", "network", "gpu-platform"];

// ---- shared infrastructure -------------------------------------------

struct Infra {
    slurm: SlurmCluster,
    kube: KubeApiserver,
    kubeconfig: PathBuf,
}

fn infra() -> &'static Mutex<Infra> {
    static INFRA: OnceLock<Mutex<Infra>> = OnceLock::new();
    INFRA.get_or_init(|| {
        let slurm = SlurmCluster::start(TOUCHABLE).unwrap();
        let kube = KubeApiserver::start().unwrap();
        for n in TOUCHABLE {
            kube.request(
                "POST",
                "/api/v1/nodes",
                Some(&format!(
                    r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{n}"}},"spec":{{}}}}"#
                )),
            )
            .unwrap();
        }
        let kubeconfig = kube.dir().join("scenarios.kubeconfig");
        kube.write_kubeconfig(&kubeconfig).unwrap();
        Mutex::new(Infra {
            slurm,
            kube,
            kubeconfig,
        })
    })
}

fn with_infra<T>(f: impl FnOnce(&Infra) -> T) -> T {
    let g = infra()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&g)
}

/// Submits a requeueable job pinned to `node`; its Slurm id.
fn job_on(node: &str) -> String {
    with_infra(|i| i.slurm.submit_on(node).unwrap())
}

fn job_field(job: &str, field: &str) -> String {
    let line = with_infra(|i| i.slurm.job_line(job).unwrap());
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .unwrap_or_default()
        .to_owned()
}

fn wait_job_running(job: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while job_field(job, "JobState") != "RUNNING" {
        assert!(Instant::now() < deadline, "job {job} never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn slurm_node(node: &str) -> String {
    with_infra(|i| i.slurm.node_line(node).unwrap())
}

fn kube_unschedulable(node: &str) -> bool {
    let body = with_infra(|i| {
        i.kube
            .request("GET", &format!("/api/v1/nodes/{node}"), None)
            .unwrap()
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["spec"]["unschedulable"].as_bool().unwrap_or(false)
}

// ---- one scenario's run ----------------------------------------------

struct Pager {
    team: &'static str,
    hook: WebhookReceiver,
}

/// A page as a webhook received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Paged {
    team: String,
    status: String,
    target: String,
}

struct Run {
    name: &'static str,
    cfg: BusConfig,
    dir: PathBuf,
    child: Child,
    pagers: Vec<Pager>,
    producer: Arc<BatchProducer>,
    pump: Arc<AtomicBool>,
    pumping: bool,
    /// Off when `pitcrew simulate` sends the fleet's heartbeats.
    heartbeats: bool,
    resets: PathBuf,
    /// The BMCs of the nodes that have one: a node is silent while its
    /// power is off and comes back with a new boot id after each cycle.
    power: Arc<BTreeMap<String, PowerView>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.pump.store(false, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_name(i: u32) -> String {
    format!("n{i}")
}

fn inventory(bmcs: &[(&str, &SimulatedBmc)]) -> String {
    let mut text = String::new();
    for i in 1..=FLEET {
        let name = node_name(i);
        let rack = (i - 1) / 8 + 1;
        let leaf = (i - 1) / 32 + 1;
        let driver = if i <= 48 { "570.86.15" } else { "580.95.05" };
        text.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nrack = \"r{rack}\"\nleaf_switch = \"leaf-{leaf}\"\ndriver_version = \"{driver}\"\ngpus = 8\n"
        ));
        if let Some((_, bmc)) = bmcs.iter().find(|(n, _)| *n == name) {
            text.push_str(&format!("bmc = \"{}\"\n", bmc.address()));
        }
    }
    text
}

impl Run {
    /// Starts `pitcrew run` on fresh topics; returns once it is ready.
    fn start(name: &'static str, bmcs: &[(&str, &SimulatedBmc)]) -> Run {
        let prefix = unique(&format!("scn-{}", name.replace(' ', "")));
        let cfg = config(&prefix);
        let dir = std::env::temp_dir().join(format!("pitcrew-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pitcrew.toml"), config_file_text(&cfg)).unwrap();
        std::fs::write(dir.join("inventory.toml"), inventory(bmcs)).unwrap();
        let pagers: Vec<Pager> = TEAMS
            .iter()
            .map(|t| Pager {
                team: t,
                hook: WebhookReceiver::start().unwrap(),
            })
            .collect();
        let resets = dir.join("gpu-resets.log");
        let kubeconfig = with_infra(|i| i.kubeconfig.clone());
        let slurm_conf = with_infra(|i| i.slurm.conf().to_owned());
        let mut rem = format!(
            "[remediate]\nretry_base = \"100ms\"\nescalation_team = \"hardware\"\nboundary_deadline = \"10m\"\n\
             verify = {{ timeout = \"60s\", quiet = \"2s\", poll = \"200ms\" }}\n\
             [kubernetes]\nkubeconfig = \"{}\"\n[slurm]\nconf = \"{}\"\n\
             [ipmi]\nusername = \"admin\"\npassword_env = \"PITCREW_TEST_BMC_PASSWORD\"\n\
             [gpu_reset]\ncommand = [\"sh\", \"-c\", \"echo {{node}} {{gpu}} >> {}\"]\n",
            kubeconfig.display(),
            slurm_conf.display(),
            resets.display()
        );
        for p in &pagers {
            // The hardware team also takes RMAs and escalations.
            rem.push_str(&format!(
                "[[pager]]\nname = \"{t}\"\nkind = \"webhook\"\nurl = \"{}\"\nteams = [\"{t}\"]\nrma = {}\n",
                p.hook.url("/hook"),
                p.team == "hardware",
                t = p.team,
            ));
        }
        std::fs::write(dir.join("remediation.toml"), rem).unwrap();
        let port = pitcrew_harness::free_port().unwrap();
        let admin = pitcrew_harness::free_port().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(["--config", dir.join("pitcrew.toml").to_str().unwrap()])
            .args(["--log", "warn", "run"])
            .args(["--inventory", dir.join("inventory.toml").to_str().unwrap()])
            .args([
                "--remediation",
                dir.join("remediation.toml").to_str().unwrap(),
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--group-topic", &format!("{prefix}events.by-group")])
            .args(["--group-id", &format!("{prefix}rules")])
            .args(["--remediate-group-id", &format!("{prefix}remediate")])
            .args([
                "--lateness",
                "1s",
                "--idle-grace",
                "1s",
                "--instance",
                "scn",
            ])
            .env_remove("PITCREW_CONFIG")
            .env("PITCREW_TEST_BMC_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Its warnings go to this test's output; a secret never may.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            assert!(
                !text.contains(PASSWORD),
                "the BMC password reached the logs"
            );
            if !text.is_empty() {
                eprintln!("[{name}] pitcrew run stderr:\n{text}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("[{name}] pitcrew run exited: {st}");
            }
            if pitcrew_harness::http_ok(port, "/readyz") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{name}] pitcrew run never ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let producer = Arc::new(BatchProducer::new(&cfg.kafka, BusMetrics::default()).unwrap());
        Run {
            name,
            cfg,
            dir,
            child,
            pagers,
            producer,
            pump: Arc::new(AtomicBool::new(true)),
            pumping: false,
            heartbeats: true,
            resets,
            power: Arc::new(
                bmcs.iter()
                    .map(|(n, b)| ((*n).to_owned(), b.view()))
                    .collect(),
            ),
        }
    }

    /// Plays `script` (rule-test event format, `[[event]]` tables) as if
    /// it began `lead` ago, with every node's heartbeat every 10 s over
    /// that past; then keeps the heartbeats going in real time. Returns
    /// the scripted events and when they were handed to Kafka, as a node
    /// agent sends them: where the fault-to-action clock starts (the send
    /// and Kafka's acknowledgement count against pitcrew).
    fn play(&mut self, script: &str, lead: Duration) -> (Vec<Event>, Timestamp) {
        assert!(
            !self.pumping || lead.is_zero(),
            "a backdated play must come first: later ones would be late"
        );
        let script =
            pitcrew_rules::Scenario::parse(self.name, script).unwrap_or_else(|d| panic!("{d:?}"));
        let base = Timestamp::now().add_nanos(-(lead.as_nanos() as i64));
        let mut player = Player::new(&script, unique("ev"));
        let scripted = player.due(base, pitcrew_rules::Span(i64::MAX));
        let mut all = scripted.clone();
        if !self.pumping && self.heartbeats {
            let mut t = base;
            while t.unix_nanos() < Timestamp::now().unix_nanos() {
                all.extend((1..=FLEET).map(|i| heartbeat(&node_name(i), t, 0)));
                t = t.add_nanos(10_000_000_000);
            }
        }
        all.sort_by_key(|e| e.time.unix_nanos());
        let arrived = Timestamp::now();
        self.send(&all);
        if !self.pumping && self.heartbeats {
            self.pumping = true;
            let producer = Arc::clone(&self.producer);
            let topic = self.cfg.topics.events.name.clone();
            let on = Arc::clone(&self.pump);
            let power = Arc::clone(&self.power);
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    let now = Timestamp::now();
                    let beats: Vec<Event> = (1..=FLEET)
                        .map(node_name)
                        .filter_map(|n| match power.get(&n) {
                            Some(p) if !p.powered_on() => None,
                            Some(p) => Some(heartbeat(&n, now, p.power_offs())),
                            None => Some(heartbeat(&n, now, 0)),
                        })
                        .collect();
                    let _ = send_to(&producer, &topic, &beats);
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
        }
        (scripted, arrived)
    }

    fn send(&self, events: &[Event]) {
        send_to(&self.producer, &self.cfg.topics.events.name, events).unwrap();
    }

    fn read<T: serde::de::DeserializeOwned>(&self, topic: &str) -> Vec<T> {
        let mut out = Vec::new();
        read_topic_merged(
            &self.cfg.kafka,
            topic,
            0,
            None,
            Duration::from_secs(30),
            |p| {
                if let Ok(v) = decode::<T>(p) {
                    out.push(v);
                }
            },
            |_, _, _| {},
        )
        .unwrap();
        out
    }

    fn actions(&self) -> Vec<ActionRequest> {
        self.read(&self.cfg.topics.actions.name)
    }

    fn incidents(&self) -> Vec<Incident> {
        self.read(&self.cfg.topics.alerts.name)
    }

    fn audits(&self) -> Vec<AuditRecord> {
        self.read(&self.cfg.topics.audit.name)
    }

    /// The (plan, target) of every action the rules asked for, sorted.
    fn asked(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .actions()
            .iter()
            .map(|a| (a.plan.clone(), a.target.to_string()))
            .collect();
        v.sort();
        v
    }

    /// Waits until `done` holds for the audit trail; returns it.
    fn wait_audit(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[AuditRecord]) -> bool,
    ) -> Vec<AuditRecord> {
        let deadline = Instant::now() + limit;
        loop {
            let a = self.audits();
            if done(&a) {
                return a;
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] timed out waiting for {what}; audit so far:\n{}",
                    self.name,
                    a.iter()
                        .map(|r| format!(
                            "{} {} {} {:?}",
                            r.target,
                            r.plan.as_deref().unwrap_or("-"),
                            describe(&r.entry),
                            r.entry
                        ))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The pages that fired (a fan-in incident that resolves resolves its
    /// page too; only the firing ones are compared).
    fn firing(&self) -> Vec<Paged> {
        self.pages()
            .into_iter()
            .filter(|p| p.status == "firing")
            .collect()
    }

    fn pages(&self) -> Vec<Paged> {
        let mut v = Vec::new();
        for p in &self.pagers {
            for r in p.hook.requests() {
                let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                v.push(Paged {
                    team: p.team.to_owned(),
                    status: body["status"].as_str().unwrap_or_default().to_owned(),
                    target: body["alerts"][0]["labels"]["target"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
        }
        v.sort();
        v
    }

    fn resets(&self) -> Vec<String> {
        std::fs::read_to_string(&self.resets)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The decisions on `action`, in order (`received`, `allowed:cordon`...).
    /// A page to several receivers shows as one `paged`.
    fn chain(audits: &[AuditRecord], plan: &str, target: &str) -> Vec<String> {
        let mut v: Vec<String> = audits
            .iter()
            .filter(|r| r.plan.as_deref() == Some(plan) && r.target.to_string() == target)
            .map(|r| describe(&r.entry))
            .collect();
        v.dedup_by(|a, b| a == "paged" && b == "paged");
        v
    }

    /// Checks the causal chain of the action for (`plan`, `target`): one
    /// request; its incident opened by `rule` on the fault's events; every
    /// audit record naming the action, the incident and those events.
    /// Returns the action.
    fn check_chain(
        &self,
        audits: &[AuditRecord],
        plan: &str,
        target: &str,
        rule: &str,
        fault: &[&Event],
    ) -> ActionRequest {
        let actions: Vec<ActionRequest> = self
            .actions()
            .into_iter()
            .filter(|a| a.plan == plan && a.target.to_string() == target)
            .collect();
        assert_eq!(
            actions.len(),
            1,
            "[{}] {plan} {target}: {actions:?}",
            self.name
        );
        let action = actions.into_iter().next().unwrap();
        let incident = self
            .incidents()
            .into_iter()
            .find(|i| i.id == action.incident)
            .unwrap_or_else(|| panic!("[{}] no incident {}", self.name, action.incident));
        assert_eq!(incident.rule, rule, "[{}]", self.name);
        for e in fault {
            assert!(
                incident.events.contains(&e.id),
                "[{}] incident {} lacks fault event {}: {:?}",
                self.name,
                incident.id,
                e.id,
                incident.events
            );
        }
        let records: Vec<&AuditRecord> = audits
            .iter()
            .filter(|r| r.action.as_deref() == Some(action.id.as_str()))
            .collect();
        assert!(
            !records.is_empty(),
            "[{}] no audit for {}",
            self.name,
            action.id
        );
        for r in &records {
            assert_eq!(r.incident.as_deref(), Some(incident.id.as_str()));
            assert_eq!(r.plan.as_deref(), Some(plan));
            assert_eq!(r.events, action.events, "[{}] {:?}", self.name, r.entry);
        }
        action
    }

    /// Fault-to-step time: from the fault's arrival in Kafka to the
    /// audit's `started:<step>` of the (plan, target) action.
    fn time_to(
        &self,
        audits: &[AuditRecord],
        arrived: Timestamp,
        plan: &str,
        target: &str,
        step: &str,
    ) -> Duration {
        let want = format!("started:{step}");
        let at = audits
            .iter()
            .find(|r| {
                r.plan.as_deref() == Some(plan)
                    && r.target.to_string() == target
                    && describe(&r.entry) == want
            })
            .unwrap_or_else(|| panic!("[{}] no {want} for {plan} {target}", self.name))
            .at;
        let d = between(arrived, at);
        eprintln!(
            "scenario timing: {}: fault sent -> {step} of {plan} {target}: {} ms",
            self.name,
            d.as_millis()
        );
        d
    }

    fn no_secrets(&self) {
        for a in self.audits() {
            let text = String::from_utf8(encode(&a)).unwrap();
            assert!(
                !text.contains(PASSWORD),
                "[{}] password in audit",
                self.name
            );
        }
    }
}

/// From `from` to `to`, zero if `to` came first.
fn between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_nanos(u64::try_from(to.unix_nanos() - from.unix_nanos()).unwrap_or(0))
}

fn heartbeat(node: &str, at: Timestamp, boot: usize) -> Event {
    let mut e = examples::event(EventKind::NodeHeartbeat);
    e.node = node.to_owned();
    e.time = at;
    e.id = format!("hb-{node}-{}", at.unix_nanos());
    if let EventData::NodeHeartbeat(h) = &mut e.data {
        h.driver_version = None;
        h.boot_id = format!("boot-{node}-{boot}");
    }
    e
}

fn send_to(producer: &BatchProducer, topic: &str, events: &[Event]) -> Result<(), String> {
    let encoded: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e.node.clone(), encode(e))).collect();
    let records: Vec<(&str, &[u8])> = encoded
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    producer
        .send_keyed(topic, &records, Duration::from_secs(30))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn asked(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    v.sort();
    v
}

fn paged(list: &[(&str, &str, &str)]) -> Vec<Paged> {
    let mut v: Vec<Paged> = list
        .iter()
        .map(|(team, status, target)| Paged {
            team: (*team).to_owned(),
            status: (*status).to_owned(),
            target: (*target).to_owned(),
        })
        .collect();
    v.sort();
    v
}

const REBOOT_CHAIN: &[&str] = &[
    "received",
    "allowed:cordon",
    "started:cordon",
    "succeeded:cordon",
    "allowed:drain",
    "started:drain",
    "succeeded:drain",
    "allowed:power_cycle",
    "intent:power_cycle",
    "started:power_cycle",
    "succeeded:power_cycle",
    "started:verify",
    "succeeded:verify",
    "started:uncordon",
    "succeeded:uncordon",
    "returned",
];

fn returned(audits: &[AuditRecord], plan: &str, target: &str) -> bool {
    audits.iter().any(|r| {
        r.plan.as_deref() == Some(plan)
            && r.target.to_string() == target
            && matches!(r.entry, AuditEntry::Returned)
    })
}

/// Power cycles the simulated BMC went through (off, then on).
fn cycles(bmc: &SimulatedBmc) -> usize {
    bmc.view().power_offs()
}

const LONG: Duration = Duration::from_secs(120);

// ---- the scenarios ------------------------------------------------------

/// Scenario 1: Xid 79 on GPU 3 of n17, the root port's fatal AER within
/// 2 s, the SEL's Bus Fatal Error, Xid 45: one incident; requeue the job,
/// cordon, drain, power cycle, verify, return. A second fall within 7
/// days: RMA, no second power cycle. The AER alone (n18): the same reboot.
#[test]
fn scenario_01_gpu_off_the_bus() {
    let bmc17 = SimulatedBmc::start().unwrap();
    let bmc18 = SimulatedBmc::start().unwrap();
    let mut run = Run::start("scenario 1", &[("n17", &bmc17), ("n18", &bmc18)]);
    let job = job_on("n17");
    wait_job_running(&job);
    let (events, t0) = run.play(
        &format!(
            r#"
[[event]]
node = "n17"
kind = "gpu.xid"
gpu = 3
data = {{ code = 79 }}
labels = {{ job = "{job}" }}
[[event]]
at = "1500ms"
node = "n17"
kind = "pcie.aer"
data = {{ severity = "uncorrected_fatal", layer = "transaction", errors = ["SDES"], first = "SDES" }}
[[event]]
at = "2s"
node = "n17"
kind = "bmc.sel"
data = {{ sensor_type = "Critical Interrupt", description = "Bus Fatal Error", asserted = true }}
[[event]]
at = "3s"
node = "n17"
kind = "gpu.xid"
gpu = 3
data = {{ code = 45 }}
[[event]]
at = "3s"
node = "n18"
kind = "pcie.aer"
data = {{ severity = "uncorrected_fatal", layer = "transaction", errors = ["SDES"], first = "SDES" }}
"#
        ),
        Duration::from_secs(4),
    );
    let audits = run.wait_audit("both reboots to return", LONG, |a| {
        returned(a, "reboot_node", "node/n17") && returned(a, "reboot_node", "node/n18")
    });
    assert_eq!(
        run.asked(),
        asked(&[("reboot_node", "node/n17"), ("reboot_node", "node/n18")]),
        "one incident per node, one action each"
    );
    let fault: Vec<&Event> = events.iter().filter(|e| e.node == "n17").collect();
    run.check_chain(
        &audits,
        "reboot_node",
        "node/n17",
        "gpu-fallen-off-bus",
        &fault[..1],
    );
    assert_eq!(Run::chain(&audits, "reboot_node", "node/n17"), REBOOT_CHAIN);
    assert_eq!(Run::chain(&audits, "reboot_node", "node/n18"), REBOOT_CHAIN);
    run.time_to(&audits, t0, "reboot_node", "node/n17", "cordon");
    run.time_to(&audits, t0, "reboot_node", "node/n17", "power_cycle");
    assert_eq!(cycles(&bmc17), 1, "{:?}", bmc17.power_events());
    assert_eq!(cycles(&bmc18), 1, "{:?}", bmc18.power_events());
    // The job was requeued off the node; the node is back in service.
    assert!(
        job_field(&job, "Restarts").parse::<u32>().unwrap_or(0) >= 1,
        "{}",
        with_infra(|i| i.slurm.job_line(&job).unwrap())
    );
    assert!(
        !slurm_node("n17").contains("DRAIN"),
        "{}",
        slurm_node("n17")
    );
    assert!(!kube_unschedulable("n17"));
    let _ = with_infra(|i| i.slurm.run("scancel", &[&job]));

    // The second fall within 7 days: RMA, never another power cycle.
    let (_, t1) = run.play(
        r#"
[[event]]
node = "n17"
kind = "gpu.xid"
gpu = 3
data = { code = 79 }
"#,
        Duration::ZERO,
    );
    let audits = run.wait_audit("the RMA", LONG, |a| {
        Run::chain(a, "rma", "node/n17").contains(&"paged".to_owned())
    });
    assert_eq!(
        run.asked(),
        asked(&[
            ("reboot_node", "node/n17"),
            ("reboot_node", "node/n18"),
            ("rma", "node/n17")
        ])
    );
    assert_eq!(cycles(&bmc17), 1, "no second power cycle");
    assert_eq!(
        Run::chain(&audits, "rma", "node/n17"),
        [
            "received",
            "allowed:cordon",
            "started:cordon",
            "succeeded:cordon",
            "allowed:drain",
            "started:drain",
            "succeeded:drain",
            "started:rma",
            "succeeded:rma",
            "paged"
        ]
    );
    // Out of service for the hardware team, not returned.
    assert!(slurm_node("n17").contains("DRAIN"), "{}", slurm_node("n17"));
    assert!(kube_unschedulable("n17"));
    run.time_to(&audits, t1, "rma", "node/n17", "cordon");
    let pages = run.pages();
    assert!(
        pages
            .iter()
            .any(|p| p.team == "hardware" && p.target == "node/n17" && p.status == "firing"),
        "{pages:?}"
    );
    run.no_secrets();
}

/// Waits until the chain of (`plan`, audit `target`) holds `step`.
fn wait_step(run: &Run, plan: &str, target: &str, step: &str) -> Vec<AuditRecord> {
    run.wait_audit(&format!("{step} of {plan} on {target}"), LONG, |a| {
        Run::chain(a, plan, target).iter().any(|d| d == step)
    })
}

const RESET_CHAIN: &[&str] = &[
    "received",
    "allowed:cordon",
    "started:cordon",
    "succeeded:cordon",
    "allowed:drain",
    "started:drain",
    "succeeded:drain",
    "allowed:reset_gpu",
    "intent:reset_gpu",
    "started:reset_gpu",
    "succeeded:reset_gpu",
    "started:verify",
    "succeeded:verify",
    "started:uncordon",
    "succeeded:uncordon",
    "returned",
];

const DRAIN_CHAIN: &[&str] = &[
    "received",
    "allowed:cordon",
    "started:cordon",
    "succeeded:cordon",
    "allowed:drain",
    "started:drain",
    "succeeded:drain",
    "started:page",
    "succeeded:page",
    "paged",
];

/// Scenario 2, the memory ladder: Xid 63 flags a GPU reset for the job
/// boundary (the node takes no new work; its job runs on); the Xid 94 that
/// follows restarts the app only, and that restart is the boundary where
/// the reset happens. Xid 64 (n20) drains for diagnostics. Xid 95 drains and
/// resets the GPU.
#[test]
fn scenario_02_memory_ladder() {
    let bmc11 = SimulatedBmc::start().unwrap();
    let bmc13 = SimulatedBmc::start().unwrap();
    let mut run = Run::start("scenario 2", &[("n11", &bmc11), ("n13", &bmc13)]);
    let job = job_on("n11");
    wait_job_running(&job);
    let (ev63, t0) = run.play(
        &format!(
            "[[event]]\nnode = \"n11\"\nkind = \"gpu.xid\"\ngpu = 2\ndata = {{ code = 63 }}\nlabels = {{ job = \"{job}\" }}\n"
        ),
        Duration::ZERO,
    );
    wait_step(&run, "reset_gpu", "node/n11", "started:drain");
    run.time_to(&run.audits(), t0, "reset_gpu", "node/n11", "cordon");
    // Flagged: no new work on the node, the running job untouched.
    std::thread::sleep(Duration::from_secs(3));
    assert!(slurm_node("n11").contains("DRAIN"), "{}", slurm_node("n11"));
    assert_eq!(job_field(&job, "JobState"), "RUNNING");
    assert_eq!(job_field(&job, "Restarts"), "0");
    assert!(run.resets().is_empty());

    // Hours later in the real world: Xid 94, a contained error.
    let (_, t1) = run.play(
        &format!(
            "[[event]]\nnode = \"n11\"\nkind = \"gpu.xid\"\ngpu = 2\ndata = {{ code = 94 }}\nlabels = {{ job = \"{job}\" }}\n\
             [[event]]\nat = \"1s\"\nnode = \"n20\"\nkind = \"gpu.xid\"\ngpu = 5\ndata = {{ code = 64 }}\n\
             [[event]]\nat = \"1s\"\nnode = \"n13\"\nkind = \"gpu.xid\"\ngpu = 0\ndata = {{ code = 95 }}\n"
        ),
        Duration::ZERO,
    );
    let audits = run.wait_audit("the reset, the drain and the second reset", LONG, |a| {
        returned(a, "reset_gpu", "node/n11")
            && returned(a, "reset_gpu", "node/n13")
            && Run::chain(a, "drain_node", "node/n20").contains(&"paged".to_owned())
    });
    assert_eq!(
        run.asked(),
        asked(&[
            ("drain_node", "node/n20"),
            ("reset_gpu", "gpu/n11/2"),
            ("reset_gpu", "gpu/n13/0"),
            ("restart_app", "node/n11"),
        ])
    );
    run.check_chain(
        &audits,
        "reset_gpu",
        "gpu/n11/2",
        "xid-row-remap-pending",
        &[&ev63[0]],
    );
    assert_eq!(Run::chain(&audits, "reset_gpu", "node/n11"), RESET_CHAIN);
    // The restart was the boundary: done by the reset's drain, once.
    assert_eq!(
        Run::chain(&audits, "restart_app", "node/n11"),
        ["received", "already_done:requeue_jobs"]
    );
    assert_eq!(job_field(&job, "Restarts"), "1");
    assert_eq!(Run::chain(&audits, "drain_node", "node/n20"), DRAIN_CHAIN);
    assert_eq!(Run::chain(&audits, "reset_gpu", "node/n13"), RESET_CHAIN);
    let mut resets = run.resets();
    resets.sort();
    assert_eq!(resets, ["n11 2", "n13 0"]);
    assert_eq!(cycles(&bmc11) + cycles(&bmc13), 0, "no reboot");
    assert!(
        slurm_node("n20").contains("DRAIN"),
        "n20 stays out for diagnostics"
    );
    run.time_to(&audits, t1, "drain_node", "node/n20", "cordon");
    let _ = with_infra(|i| i.slurm.run("scancel", &[&job]));
    run.no_secrets();
}

/// Scenario 3: Xid 62 then Xid 154 naming the recovery: "-> 0x1" (GPU
/// reset) resets the GPU; "-> 0x2" (node reboot) reboots. The 154 decides,
/// not the 62's default.
#[test]
fn scenario_03_act_on_the_recovery_action() {
    let bmc42 = SimulatedBmc::start().unwrap();
    let bmc43 = SimulatedBmc::start().unwrap();
    let mut run = Run::start("scenario 3", &[("n42", &bmc42), ("n43", &bmc43)]);
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n42"
kind = "gpu.xid"
gpu = 6
data = { code = 62 }
[[event]]
at = "1s"
node = "n42"
kind = "gpu.xid"
gpu = 6
data = { code = 154, recovery_action = { action = 2, previous = 0 } }
[[event]]
node = "n43"
kind = "gpu.xid"
gpu = 1
data = { code = 62 }
[[event]]
at = "1s"
node = "n43"
kind = "gpu.xid"
gpu = 1
data = { code = 154, recovery_action = { action = 1, previous = 0 } }
"#,
        Duration::ZERO,
    );
    let audits = run.wait_audit("the reboot and the reset", LONG, |a| {
        returned(a, "reboot_node", "node/n42") && returned(a, "reset_gpu", "node/n43")
    });
    // Past the Xid 62 rules' 10 s hold: they were claimed, never acted.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        run.asked(),
        asked(&[("reboot_node", "node/n42"), ("reset_gpu", "gpu/n43/1")])
    );
    assert_eq!(Run::chain(&audits, "reboot_node", "node/n42"), REBOOT_CHAIN);
    assert_eq!(Run::chain(&audits, "reset_gpu", "node/n43"), RESET_CHAIN);
    assert_eq!(cycles(&bmc42), 1);
    assert_eq!(cycles(&bmc43), 0);
    assert_eq!(run.resets(), ["n43 1"]);
    run.time_to(&audits, t0, "reboot_node", "node/n42", "power_cycle");
    run.time_to(&audits, t0, "reset_gpu", "node/n43", "reset_gpu");
}

/// Scenario 4: leaf-3 (n65-n96) dies; its 32 nodes report link_downed
/// within 5 s. The switch is blamed, the network team paged, no node is
/// cordoned (so no budget is used).
#[test]
fn scenario_04_leaf_switch_down() {
    let mut run = Run::start("scenario 4", &[]);
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n[65-96]"
every = "150ms"
kind = "net.ib_counter"
data = { counter = "link_downed", delta = 1, device = "mlx5_0", port = 1 }
"#,
        Duration::ZERO,
    );
    let audits = run.wait_audit("the switch page", LONG, |a| {
        Run::chain(a, "page", "leaf_switch/leaf-3").contains(&"paged".to_owned())
    });
    run.time_to(&audits, t0, "page", "leaf_switch/leaf-3", "page");
    // Past the per-node rule's 15 s hold: every node incident was claimed.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(run.asked(), asked(&[("page", "leaf_switch/leaf-3")]));
    let audits = run.audits();
    assert!(
        !audits
            .iter()
            .any(|r| matches!(&r.entry, AuditEntry::Allowed { .. })),
        "no destructive step was even asked for"
    );
    assert_eq!(
        run.firing(),
        paged(&[("network", "firing", "leaf_switch/leaf-3")])
    );
    let suppressed = run
        .incidents()
        .iter()
        .filter(|i| i.rule == "ib-link-down" && i.parent.is_some())
        .map(|i| i.blame.to_string())
        .collect::<BTreeSet<_>>();
    assert_eq!(suppressed.len(), 32, "{suppressed:?}");
}

/// Scenario 5: Xid 119 on 40 nodes of the same driver within minutes: the
/// driver is blamed, the GPU platform team paged, no GPU reset anywhere.
#[test]
fn scenario_05_driver_regression() {
    let mut run = Run::start("scenario 5", &[]);
    // Played as if it began 3 minutes ago, so the per-GPU rule's 2 minute
    // hold is over when the test looks.
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n[49-88]"
every = "2s"
kind = "gpu.xid"
gpu = 0
data = { code = 119 }
"#,
        Duration::from_secs(180),
    );
    let audits = run.wait_audit("the driver page", LONG, |a| {
        Run::chain(a, "page", "driver_version/580.95.05").contains(&"paged".to_owned())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(run.asked(), asked(&[("page", "driver_version/580.95.05")]));
    assert_eq!(
        run.firing(),
        paged(&[("gpu-platform", "firing", "driver_version/580.95.05")])
    );
    assert_eq!(
        run.incidents()
            .iter()
            .filter(|i| i.rule == "xid-gsp-error" && i.parent.is_some())
            .count(),
        40
    );
    run.time_to(&audits, t0, "page", "driver_version/580.95.05", "page");
}

/// Scenario 6: a job's ranks time out in NCCL; the rank on n60 reports no
/// traffic: n60 alone is drained (its job requeued), the job's owner told.
#[test]
fn scenario_06_hung_rank() {
    let mut run = Run::start("scenario 6", &[]);
    let job = job_on("n60");
    wait_job_running(&job);
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n[53-59]"
kind = "job.nccl_timeout"
data = { job = "llm-1", rank = 0 }
at = "80s"
[[event]]
node = "n[61-68]"
kind = "job.nccl_timeout"
data = { job = "llm-1", rank = 0 }
at = "80s"
[[event]]
node = "n60"
kind = "job.step"
data = { job = "llm-1", rank = 60, step = 100, step_time_s = 0.0, traffic_bytes = 0 }
every = "10s"
repeat = 9
[[event]]
node = "n59"
kind = "job.step"
data = { job = "llm-1", rank = 59, step = 100, step_time_s = 1.0, traffic_bytes = 1000000 }
every = "10s"
repeat = 9
"#,
        Duration::from_secs(90),
    );
    let audits = run.wait_audit("n60's drain", LONG, |a| {
        Run::chain(a, "drain_node", "node/n60").contains(&"paged".to_owned())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        run.asked(),
        asked(&[("drain_node", "node/n60"), ("notify", "job/llm-1")])
    );
    assert_eq!(Run::chain(&audits, "drain_node", "node/n60"), DRAIN_CHAIN);
    assert_eq!(job_field(&job, "Restarts"), "1", "its job requeued");
    let _ = with_infra(|i| i.slurm.run("scancel", &[&job]));
    run.time_to(&audits, t0, "drain_node", "node/n60", "cordon");
}

/// Scenario 7: every rank of one job logs Xid 13 within a second: the job
/// is blamed and its owner told, no node touched. The same Xid 31 on n70
/// across three jobs: the node is suspected and drained.
#[test]
fn scenario_07_app_bug_or_bad_node() {
    let mut run = Run::start("scenario 7", &[]);
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n[73-80]"
every = "100ms"
kind = "gpu.xid"
gpu = 0
labels = { job = "job-7" }
data = { code = 13 }
[[event]]
node = "n70"
kind = "gpu.xid"
gpu = 1
labels = { job = "j-a" }
data = { code = 31 }
[[event]]
at = "1s"
node = "n70"
kind = "gpu.xid"
gpu = 1
labels = { job = "j-b" }
data = { code = 31 }
[[event]]
at = "2s"
node = "n70"
kind = "gpu.xid"
gpu = 1
labels = { job = "j-c" }
data = { code = 31 }
"#,
        Duration::ZERO,
    );
    let audits = run.wait_audit("n70's drain and the job notice", LONG, |a| {
        Run::chain(a, "drain_node", "node/n70").contains(&"paged".to_owned())
            && Run::chain(a, "notify", "job/job-7").contains(&"paged".to_owned())
    });
    // Past the app rule's 5 s hold: the job-7 faults were claimed.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        run.asked(),
        asked(&[
            ("drain_node", "node/n70"),
            ("notify", "job/job-7"),
            ("restart_app", "node/n70"),
            ("restart_app", "node/n70"),
            ("restart_app", "node/n70"),
        ])
    );
    assert_eq!(Run::chain(&audits, "drain_node", "node/n70"), DRAIN_CHAIN);
    for n in 73..=80 {
        assert!(
            !audits
                .iter()
                .any(|r| r.target.to_string() == format!("node/n{n}")),
            "n{n} was touched"
        );
    }
    run.time_to(&audits, t0, "notify", "job/job-7", "notify");
    run.time_to(&audits, t0, "drain_node", "node/n70", "cordon");
}

/// Scenario 8: n50 runs 10% slow with the hardware thermal slowdown bit:
/// it is drained at the job boundary (the checkpoint), not mid-step. A
/// site-wide 1-2% slowdown (power capping) does nothing.
#[test]
fn scenario_08_straggler() {
    let mut run = Run::start("scenario 8", &[]);
    let job = job_on("n50");
    wait_job_running(&job);
    run.play(
        r#"
[[event]]
node = "n50"
kind = "gpu.thermal"
gpu = 2
data = { gpu_temp_c = 91.0, clock_event_reasons = 64, throttle = ["hw_thermal"] }
every = "10s"
repeat = 16
[[event]]
node = "n[51-58]"
kind = "gpu.thermal"
gpu = 0
data = { gpu_temp_c = 70.0, clock_event_reasons = 4, throttle = ["sw_power_cap"] }
[[event]]
node = "n[51-58]"
kind = "job.step"
data = { job = "llm-2", rank = 1, step = 10, step_time_s = 1.02, traffic_bytes = 5000000 }
"#,
        Duration::from_secs(160),
    );
    wait_step(&run, "drain_node", "node/n50", "started:drain");
    std::thread::sleep(Duration::from_secs(3));
    // Cordoned, waiting: the job runs on to its checkpoint.
    assert!(slurm_node("n50").contains("DRAIN"), "{}", slurm_node("n50"));
    assert_eq!(job_field(&job, "JobState"), "RUNNING");
    assert_eq!(job_field(&job, "Restarts"), "0");
    // The job ends at its checkpoint: the drain completes.
    with_infra(|i| i.slurm.run("scancel", &[&job]).unwrap());
    let audits = run.wait_audit("n50's drain", LONG, |a| {
        Run::chain(a, "drain_node", "node/n50").contains(&"paged".to_owned())
    });
    assert_eq!(Run::chain(&audits, "drain_node", "node/n50"), DRAIN_CHAIN);
    let detail = audits
        .iter()
        .find_map(|r| match &r.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail.clone(),
            _ => None,
        })
        .unwrap();
    assert!(detail.contains("job boundary after"), "{detail}");
    assert!(detail.contains("requeued []"), "{detail}");
    assert_eq!(run.asked(), asked(&[("drain_node", "node/n50")]));
}

/// Scenario 9: noise and idempotency. Replays at 5 a minute, a corrected
/// RxErr burst and counters reset by a reboot are metrics only; the same
/// Xid 79 delivered twice, and its action delivered twice, power-cycle
/// once; a node in planned maintenance is left alone.
#[test]
fn scenario_09_noise_and_idempotency() {
    let bmc90 = SimulatedBmc::start().unwrap();
    let bmc92 = SimulatedBmc::start().unwrap();
    let mut run = Run::start("scenario 9", &[("n90", &bmc90), ("n92", &bmc92)]);
    let (_, t0) = run.play(
        r#"
[[event]]
node = "n91"
kind = "gpu.pcie_replay"
gpu = 0
data = { delta = 1, total = 10 }
every = "12s"
repeat = 15
[[event]]
at = "100s"
node = "n93"
kind = "pcie.aer"
data = { severity = "corrected", layer = "physical", errors = ["RxErr"] }
every = "100ms"
repeat = 30
[[event]]
at = "110s"
node = "n94"
kind = "gpu.pcie_replay"
gpu = 0
data = { delta = 0, total = 0, reset = true }
[[event]]
at = "110s"
node = "n94"
kind = "net.ib_counter"
data = { counter = "link_downed", delta = 0, total = 0, reset = true }
[[event]]
at = "170s"
node = "n92"
kind = "node.maintenance"
data = { state = "start", reason = "firmware" }
[[event]]
at = "175s"
node = "n92"
kind = "gpu.xid"
gpu = 3
data = { code = 79 }
[[event]]
at = "178s"
node = "n90"
kind = "gpu.xid"
gpu = 3
data = { code = 79 }
id = "kmsg-n90-1042"
[[event]]
at = "179s"
node = "n90"
kind = "gpu.xid"
gpu = 3
data = { code = 79 }
id = "kmsg-n90-1042"
"#,
        Duration::from_secs(180),
    );
    let audits = run.wait_audit("n90's reboot", LONG, |a| {
        returned(a, "reboot_node", "node/n90")
    });
    // The same action delivered again (a Kafka redelivery): audited, not run.
    let action = run
        .actions()
        .into_iter()
        .find(|a| a.target.to_string() == "node/n90")
        .unwrap();
    let producer = pitcrew_bus::Producer::new(&run.cfg.kafka, BusMetrics::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(producer.send_message(&run.cfg.topics.actions.name, &action))
        .unwrap();
    let audits2 = run.wait_audit("the redelivery", LONG, |a| {
        Run::chain(a, "reboot_node", "node/n90").contains(&"duplicate".to_owned())
    });
    assert_eq!(
        run.asked().len(),
        2,
        "the one request, and its redelivery: {:?}",
        run.actions()
    );
    assert_eq!(
        run.asked()
            .iter()
            .filter(|a| *a == &("reboot_node".to_owned(), "node/n90".to_owned()))
            .count(),
        2
    );
    let mut chain = REBOOT_CHAIN.to_vec();
    chain.push("duplicate");
    assert_eq!(Run::chain(&audits2, "reboot_node", "node/n90"), chain);
    assert_eq!(cycles(&bmc90), 1, "power-cycled once");
    assert_eq!(cycles(&bmc92), 0, "maintenance: left alone");
    let incidents = run.incidents();
    assert!(
        incidents.iter().any(|i| i.blame.to_string() == "node/n92"
            && i.labels.get("suppressed_by").map(String::as_str) == Some("maintenance")),
        "the maintenance suppression is on record"
    );
    for noisy in ["n91", "n93", "n94"] {
        assert!(
            !incidents
                .iter()
                .any(|i| i.events.iter().any(|e| e.contains(noisy))
                    || i.blame.to_string().contains(&format!("{noisy}/"))
                    || i.blame.to_string() == format!("node/{noisy}")),
            "{noisy} raised an incident"
        );
    }
    run.time_to(&audits, t0, "reboot_node", "node/n90", "cordon");
}

/// Scenario 10: n88 is in three failed jobs within 7 days while every
/// check passes: drain it for deep diagnostics.
#[test]
fn scenario_10_lemon_node() {
    let mut run = Run::start("scenario 10", &[]);
    let job = job_on("n88");
    wait_job_running(&job);
    let (events, t0) = run.play(
        r#"
[[event]]
node = "n88"
kind = "job.finished"
data = { job = "1001", outcome = "failed", exit_code = 1 }
[[event]]
at = "1s"
node = "n88"
kind = "job.finished"
data = { job = "1002", outcome = "node_fail" }
[[event]]
at = "2s"
node = "n87"
kind = "job.finished"
data = { job = "1003", outcome = "completed", exit_code = 0 }
[[event]]
at = "3s"
node = "n88"
kind = "job.finished"
data = { job = "1004", outcome = "failed", exit_code = 137 }
"#,
        Duration::ZERO,
    );
    let audits = run.wait_audit("n88's drain", LONG, |a| {
        Run::chain(a, "drain_node", "node/n88").contains(&"paged".to_owned())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(run.asked(), asked(&[("drain_node", "node/n88")]));
    let lemon: Vec<&Event> = events.iter().filter(|e| e.node == "n88").collect();
    let action = run.check_chain(&audits, "drain_node", "node/n88", "lemon-node", &lemon);
    assert_eq!(
        action.params.get("diagnostics").and_then(|v| v.as_str()),
        Some("deep")
    );
    assert_eq!(Run::chain(&audits, "drain_node", "node/n88"), DRAIN_CHAIN);
    assert_eq!(job_field(&job, "Restarts"), "1");
    assert!(slurm_node("n88").contains("DRAIN"));
    assert!(kube_unschedulable("n88"));
    run.time_to(&audits, t0, "drain_node", "node/n88", "cordon");
    let _ = with_infra(|i| i.slurm.run("scancel", &[&job]));
}

// ---- the end-to-end benchmark ---------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    eprintln!(
        "bench: {what}: n={} p50 {} ms, p99 {} ms, max {} ms",
        v.len(),
        percentile(&v, 0.5).as_millis(),
        percentile(&v, 0.99).as_millis(),
        v.last().unwrap().as_millis()
    );
}

/// The end-to-end benchmark (docs/benchmarks.md): fault-to-cordon and
/// fault-to-requeue through `pitcrew run` with `pitcrew simulate` putting
/// the fleet's telemetry (96 nodes) on the same topic at `BENCH_RATE`
/// events/s (default 5,000). Faults: an Xid 79 on each of the 12 nodes
/// with a BMC and a running Slurm job, 4 at a time (the fleet budget):
/// the time to the cordon call, and to the drain's Slurm requeue done; and
/// an Xid 94 on 4 GPUs of each node with a job: the time to the app
/// restart's requeue done. Times run from the fault event handed to the
/// producer (Kafka's acknowledgement included) to the audit record of the
/// step. Numbers are printed, not
/// asserted: `cargo test -p pitcrew --release --test scenarios --
/// --ignored --nocapture bench`.
#[test]
#[ignore = "a benchmark: run it with --ignored"]
fn bench_fault_to_cordon_and_requeue_under_load() {
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let bmcs: Vec<SimulatedBmc> = TOUCHABLE
        .iter()
        .map(|_| SimulatedBmc::start().unwrap())
        .collect();
    let pairs: Vec<(&str, &SimulatedBmc)> = TOUCHABLE.iter().copied().zip(bmcs.iter()).collect();
    let mut run = Run::start("bench", &pairs);
    run.heartbeats = false;
    let mut sim = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["--config", run.dir.join("pitcrew.toml").to_str().unwrap()])
        .args(["--log", "warn", "simulate", "--nodes", "96", "--rate"])
        .arg(rate.to_string())
        .env_remove("PITCREW_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let mut to_cordon = Vec::new();
    let mut to_drain_requeue = Vec::new();
    for batch in [
        ["n11", "n17", "n42", "n50"],
        ["n13", "n18", "n60", "n88"],
        ["n20", "n43", "n70", "n90"],
    ] {
        let jobs: Vec<String> = batch.iter().map(|n| job_on(n)).collect();
        jobs.iter().for_each(|j| wait_job_running(j));
        let mut arrivals = Vec::new();
        for n in batch {
            let (_, t) = run.play(
                &format!("[[event]]\nnode = \"{n}\"\nkind = \"gpu.xid\"\ngpu = 3\ndata = {{ code = 79 }}\n"),
                Duration::ZERO,
            );
            arrivals.push((n, t));
            std::thread::sleep(Duration::from_millis(200));
        }
        let audits = run.wait_audit("the batch to return", LONG, |a| {
            batch
                .iter()
                .all(|n| returned(a, "reboot_node", &format!("node/{n}")))
        });
        for (n, t) in arrivals {
            let target = format!("node/{n}");
            to_cordon.push(run.time_to(&audits, t, "reboot_node", &target, "cordon"));
            let drained = audits
                .iter()
                .find(|r| r.target.to_string() == target && describe(&r.entry) == "succeeded:drain")
                .unwrap()
                .at;
            to_drain_requeue.push(between(t, drained));
        }
        for j in &jobs {
            let _ = with_infra(|i| i.slurm.run("scancel", &[j]));
        }
    }
    let mut to_restart = Vec::new();
    for gpu in 0..4 {
        let jobs: Vec<(&str, String)> = TOUCHABLE.iter().map(|n| (*n, job_on(n))).collect();
        jobs.iter().for_each(|(_, j)| wait_job_running(j));
        let mut arrivals = Vec::new();
        for (n, j) in &jobs {
            let (_, t) = run.play(
                &format!("[[event]]\nnode = \"{n}\"\nkind = \"gpu.xid\"\ngpu = {gpu}\ndata = {{ code = 94 }}\nlabels = {{ job = \"{j}\" }}\n"),
                Duration::ZERO,
            );
            arrivals.push((*n, j.clone(), t));
            std::thread::sleep(Duration::from_millis(100));
        }
        let audits = run.wait_audit("the app restarts", LONG, |a| {
            a.iter()
                .filter(|r| {
                    matches!(&r.entry, AuditEntry::StepSucceeded { step, detail }
                        if step == "requeue_jobs" && detail.as_deref().is_some_and(|d| d.contains('[') && !d.contains("[]")))
                })
                .count()
                >= TOUCHABLE.len() * (gpu + 1)
        });
        for (n, j, t) in arrivals {
            let done = audits
                .iter()
                .find(|r| {
                    r.target.to_string() == format!("node/{n}")
                        && matches!(&r.entry, AuditEntry::StepSucceeded { step, detail }
                            if step == "requeue_jobs" && detail.as_deref().is_some_and(|d| d.contains(&format!("[{j}]"))))
                })
                .unwrap()
                .at;
            to_restart.push(between(t, done));
            let _ = with_infra(|i| i.slurm.run("scancel", &[&j]));
        }
    }
    let _ = sim.kill();
    let _ = sim.wait();
    eprintln!("bench: background {rate} events/s from pitcrew simulate (96 nodes)");
    report("fault -> cordon call (Xid 79, reboot_node)", to_cordon);
    report(
        "fault -> drain's Slurm requeue done (Xid 79, reboot_node)",
        to_drain_requeue,
    );
    report(
        "fault -> app restart's Slurm requeue done (Xid 94, restart_app)",
        to_restart,
    );
}
