//! `pitcrew remediate` against a real Kafka, a real `ipmi_sim` BMC and a
//! local webhook receiver: a kill -9 between the power-cycle intent and its
//! outcome does not cycle the node again after the restart; a duplicate
//! delivery runs nothing; the audit trail tells the story; the admin API
//! wants its token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_bus::{ensure_topics, BusConfig, BusMetrics, Producer};
use pitcrew_contract::{examples, ActionRequest, EventKind, Target, Timestamp, V1};
use pitcrew_harness::ipmi::{SimulatedBmc, PASSWORD};
use pitcrew_harness::webhook::WebhookReceiver;
use pitcrew_tests::{config, unique};

struct Service(Child);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TOKEN: &str = "admin-test-token";

struct Setup {
    cfg: BusConfig,
    dir: PathBuf,
    config_file: PathBuf,
    prefix: String,
}

async fn setup(bmc: &SimulatedBmc, hook: &WebhookReceiver) -> Setup {
    let prefix = unique("remediate");
    let cfg = config(&prefix);
    ensure_topics(&cfg.kafka, &cfg.topics).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pitcrew-remediate-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = pitcrew_tests::config_file_text(&cfg);
    let config_file = dir.join("pitcrew.toml");
    std::fs::write(&config_file, text).unwrap();
    std::fs::write(
        dir.join("inventory.toml"),
        format!(
            "[[node]]\nname = \"n1\"\nrack = \"r1\"\nbmc = \"{}\"\n",
            bmc.address()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("remediation.toml"),
        format!(
            "[remediate]\nretry_base = \"100ms\"\nverify = {{ timeout = \"30s\", quiet = \"1s\", poll = \"200ms\" }}\n\
             [ipmi]\nusername = \"admin\"\npassword_env = \"PITCREW_TEST_BMC_PASSWORD\"\n\
             [admin]\ntoken_env = \"PITCREW_TEST_ADMIN_TOKEN\"\n\
             [[pager]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             [[plan]]\nname = \"reboot_node\"\nsteps = [\"power_cycle\", \"verify\"]\n",
            hook.url("/hook")
        ),
    )
    .unwrap();
    Setup {
        cfg,
        dir,
        config_file,
        prefix,
    }
}

fn start(
    s: &Setup,
    admin_port: u16,
    failpoint: Option<&str>,
) -> (Service, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pitcrew"));
    cmd.args([
        "--config",
        s.config_file.to_str().unwrap(),
        "remediate",
        "--remediation",
        s.dir.join("remediation.toml").to_str().unwrap(),
        "--inventory",
        s.dir.join("inventory.toml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--group-id",
        &format!("{}remediate", s.prefix),
        "--instance",
        "it",
    ])
    .env_remove("PITCREW_CONFIG")
    .env("PITCREW_TEST_BMC_PASSWORD", PASSWORD)
    .env("PITCREW_TEST_ADMIN_TOKEN", TOKEN)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(f) = failpoint {
        cmd.env("PITCREW_FAILPOINT", f);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            eprint!("{text}");
            let _ = tx.send(text);
        }
    });
    (Service(child), rx)
}

fn wait_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(200)) {
            if t.contains(needle) {
                return true;
            }
        }
    }
    false
}

fn request(node: &str) -> ActionRequest {
    let target = Target::node(node);
    ActionRequest {
        v: V1,
        id: ActionRequest::make_id("inc-it", &target, "reboot_node", 0),
        incident: "inc-it".into(),
        rule: None,
        target,
        plan: "reboot_node".into(),
        params: BTreeMap::new(),
        requested_at: Timestamp::now(),
        reason: "Xid 79 on n1 GPU 3".into(),
        events: vec!["nvml-n1-xid-79".into()],
        dry_run: false,
    }
}

fn audit(s: &Setup) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "--config",
            s.config_file.to_str().unwrap(),
            "--log",
            "error",
            "audit",
            "--target",
            "n1",
        ])
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_audit(s: &Setup, needle: &str, count: usize, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = audit(s);
        if text.matches(needle).count() >= count || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_intent_and_outcome_does_not_cycle_again() {
    let bmc = SimulatedBmc::start().unwrap();
    let hook = WebhookReceiver::start().unwrap();
    let s = setup(&bmc, &hook).await;
    let admin_port = pitcrew_harness::free_port().unwrap();
    let producer = Producer::new(&s.cfg.kafka, BusMetrics::default()).unwrap();

    // 1. The worker dies right after the power-cycle intent is durable.
    let (mut svc, _logs) = start(&s, admin_port, Some("remediate-crash-after-intent"));
    let req = request("n1");
    producer
        .send_message(&s.cfg.topics.actions.name, &req)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = svc.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the failpoint never fired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    assert!(
        bmc.power_events().is_empty(),
        "the crash came before the cycle"
    );
    let before = audit(&s);
    assert!(before.contains("intent"), "{before}");

    // 2. The node is alive: its agent's heartbeat.
    let mut hb = examples::event(EventKind::NodeHeartbeat);
    hb.node = "n1".into();
    hb.id = unique("hb");
    hb.time = Timestamp::now();
    producer
        .send_message(&s.cfg.topics.events.name, &hb)
        .await
        .unwrap();

    // 3. Restarted, it finds the intent, asks the BMC, and does not cycle.
    let (_svc, logs) = start(&s, admin_port, None);
    assert!(wait_log(
        &logs,
        "remediation worker starting",
        Duration::from_secs(60)
    ));
    let text = wait_audit(&s, "returned", 1, Duration::from_secs(60));
    assert!(text.contains("already_done"), "{text}");
    assert!(text.contains("returned"), "{text}");
    assert!(
        bmc.power_events().is_empty(),
        "cycled again: {:?}",
        bmc.power_events()
    );

    // 4. The same action delivered again runs nothing.
    producer
        .send_message(&s.cfg.topics.actions.name, &req)
        .await
        .unwrap();
    let text = wait_audit(&s, "duplicate", 1, Duration::from_secs(30));
    assert!(text.contains("duplicate"), "{text}");
    assert!(bmc.power_events().is_empty());

    // 5. The admin API wants its token.
    let base = format!("http://127.0.0.1:{admin_port}");
    let run = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(["--log", "error", "breaker", "status", "--admin", &base])
            .env("PITCREW_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    let ok = run(TOKEN);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"breaker\":null"));
    let denied = run("wrong");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
    // No secret reached the logs or the audit.
    let all = audit(&s);
    assert!(!all.contains(PASSWORD) && !all.contains(TOKEN));
}

/// The benchmark runs the service's own path and accounts for every
/// request (its numbers are reported in docs/benchmarks.md, not asserted).
#[test]
fn bench_remediate_accounts_for_every_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "--log",
            "error",
            "bench",
            "remediate",
            "--nodes",
            "20",
            "--probes",
            "10",
            "--probe-ms",
            "5",
        ])
        .env("PITCREW__KAFKA__BROKERS", pitcrew_tests::kafka())
        .env("PITCREW__TOPICS__REPLICATION_FACTOR", "1")
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("(n=10)").count(), 3, "{stdout}");
    assert!(stdout.contains("all 20 nodes cordoned after"), "{stdout}");
}
