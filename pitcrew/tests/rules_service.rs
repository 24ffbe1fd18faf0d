//! `pitcrew rules` against a real Apache Kafka: exactly-once output across
//! a crash, a rebalance between two instances, hot reload with a broken
//! file, and topology-group rules through the re-keyed stage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_bus::rdkafka::consumer::{BaseConsumer, Consumer as _};
use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use pitcrew_bus::{ensure_topics, BusConfig, BusMetrics, Producer};
use pitcrew_contract::{
    decode, examples, ActionRequest, Event, EventData, EventKind, IbCounterName, Incident,
    IncidentStatus, Timestamp,
};
use pitcrew_tests::{config, kafka, unique};

struct Service(Child);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    cfg: BusConfig,
    dir: PathBuf,
    config_file: PathBuf,
    prefix: String,
}

async fn setup(name: &str, partitions: i32) -> Setup {
    let prefix = unique(name);
    let mut cfg = config(&prefix);
    cfg.topics.events.partitions = partitions;
    ensure_topics(&cfg.kafka, &cfg.topics).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pitcrew-rules-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = pitcrew_tests::config_file_text(&cfg);
    let config_file = dir.join("pitcrew.toml");
    std::fs::write(&config_file, text).unwrap();
    Setup {
        cfg,
        dir,
        config_file,
        prefix,
    }
}

fn start(s: &Setup, rules: &Path, instance: &str, extra_env: &[(&str, &str)]) -> (Service, String) {
    start_with(s, rules, instance, extra_env, &[])
}

fn start_with(
    s: &Setup,
    rules: &Path,
    instance: &str,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) -> (Service, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pitcrew"));
    cmd.args([
        "--config",
        s.config_file.to_str().unwrap(),
        "--log-format",
        "json",
        "rules",
        "--rules",
        rules.to_str().unwrap(),
        "--inventory",
        s.dir.join("inventory.toml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--instance",
        // Transactional ids are broker-wide: unique per test, stable per instance.
        &format!("{}{instance}", s.prefix),
        "--group-id",
        &format!("{}rules", s.prefix),
        "--group-topic",
        &format!("{}events.by-group", s.prefix),
    ])
    .args(extra_args)
    .env_remove("PITCREW_CONFIG")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // The log names the metrics address once it listens.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut all = String::new();
        let mut sent = false;
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !sent {
                if let Some(i) = all.find("\"listen\":\"") {
                    let addr: String = all[i + 10..].chars().take_while(|c| *c != '"').collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
            if all.len() > 1 << 20 {
                all.drain(..all.len() / 2);
            }
            eprint!("{}", String::from_utf8_lossy(&buf[..n]));
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the service logs its address");
    (Service(child), addr)
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_metric(addr: &str, name: &str, at_least: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric(&http_get(addr, "/metrics"), name);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn xid(node: &str, code: u32, at_ms: i64) -> Event {
    let mut e = examples::event(EventKind::GpuXid);
    e.node = node.into();
    e.id = format!("xid-{node}-{code}-{at_ms}");
    e.time = Timestamp::from_unix_millis(at_ms);
    if let EventData::GpuXid(x) = &mut e.data {
        x.code = code;
    }
    e
}

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

async fn produce(cfg: &BusConfig, events: &[Event]) {
    let p = Producer::new(&cfg.kafka, BusMetrics::default()).unwrap();
    for e in events {
        p.send_message(&cfg.topics.events.name, e).await.unwrap();
    }
}

/// Every message of every partition of `topic`, read with `isolation`,
/// until `want` arrived (plus a grace period) or `limit` passed.
fn read_topic(topic: &str, isolation: &str, want: usize, limit: Duration) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + limit;
    let mut grace: Option<Instant> = None;
    let mut out = Vec::new();
    while Instant::now() < deadline && grace.is_none_or(|g| Instant::now() < g) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.payload().unwrap_or_default().to_vec());
            if out.len() >= want && grace.is_none() {
                grace = Some(Instant::now() + Duration::from_millis(1500));
            }
        }
    }
    out
}

/// The key and headers of the first committed message of `topic`.
fn first_headers(topic: &str) -> (String, Vec<(String, String)>) {
    use pitcrew_bus::rdkafka::message::Headers as _;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            return (key, headers);
        }
    }
    panic!("no message on {topic}");
}

/// What `read_committed` readers (remediation) see on `topic`, decoded.
fn committed<T: serde::de::DeserializeOwned>(topic: &str, want: usize) -> Vec<T> {
    read_topic(topic, "read_committed", want, Duration::from_secs(60))
        .iter()
        .map(|b| decode(b).unwrap())
        .collect()
}

fn actions(s: &Setup, want: usize) -> Vec<ActionRequest> {
    committed(&s.cfg.topics.actions.name, want)
}

fn incidents(s: &Setup, want: usize) -> Vec<Incident> {
    committed(&s.cfg.topics.alerts.name, want)
}

const REBOOT_ON_79: &str = "[[rule]]\nname = \"x79\"\nseverity = \"critical\"\nplan = \"reboot_node\"\nwhen = { kind = \"gpu.xid\", where = { \"data.code\" = 79 } }\n";

fn write_rules(s: &Setup, text: &str) -> PathBuf {
    let p = s.dir.join("rules.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::write(s.dir.join("inventory.toml"), "").unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_processing_and_commit_loses_nothing_and_duplicates_nothing() {
    let s = setup("eo", 1).await;
    let rules = write_rules(&s, REBOOT_ON_79);
    let t0 = now_ms();
    let events: Vec<Event> = (0..50).map(|i| xid(&format!("n{i}"), 79, t0 + i)).collect();
    produce(&s.cfg, &events).await;

    // First run: processes, produces into the transaction, then dies.
    let (mut crashing, _) = start(
        &s,
        &rules,
        "a",
        &[("PITCREW_FAILPOINT", "rules-crash-before-commit")],
    );
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(st)) = crashing.0.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|st| !st.success()),
        "the failpoint crashed the process"
    );
    // What it wrote is in the log but not committed.
    let uncommitted = read_topic(
        &s.cfg.topics.actions.name,
        "read_uncommitted",
        1,
        Duration::from_secs(20),
    );
    assert!(
        !uncommitted.is_empty(),
        "the crashed run had produced actions"
    );
    let committed = read_topic(
        &s.cfg.topics.actions.name,
        "read_committed",
        0,
        Duration::from_secs(3),
    );
    assert!(
        committed.is_empty(),
        "nothing of the crashed run is visible"
    );

    // Restart: the same transactional id fences the dead one; every event
    // is processed again, and its outputs are written once.
    let (_svc, addr) = start(&s, &rules, "a", &[]);
    let acts = actions(&s, 50);
    let ids: HashSet<&str> = acts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        acts.len(),
        50,
        "one action per event, none lost, none twice"
    );
    assert_eq!(ids.len(), 50);
    assert!(acts.iter().all(|a| a.plan == "reboot_node"));
    let opened = incidents(&s, 50)
        .into_iter()
        .filter(|i| i.status == IncidentStatus::Open)
        .count();
    assert_eq!(opened, 50);
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_events_total",
            50.0,
            Duration::from_secs(10)
        ) >= 50.0
    );
    assert!(
        metric(
            &http_get(&addr, "/metrics"),
            "pitcrew_rules_incidents_total"
        ) >= 50.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_between_two_instances_keeps_state_and_writes_each_output_once() {
    let s = setup("rebal", 4).await;
    // Needs state across the rebalance: 10 replays a node, 5 before and 5
    // after the second instance joins, only together above 8.
    let rules = write_rules(
        &s,
        &format!("{REBOOT_ON_79}[[rule]]\nname = \"replays\"\nkey = \"node,gpu\"\nblame = \"gpu\"\nplan = \"notify\"\nwhen = {{ kind = \"gpu.pcie_replay\", where = {{ \"data.delta\" = {{ gt = 0 }} }} }}\nwindow = {{ over = \"10m\", agg = \"sum\", field = \"data.delta\" }}\nthreshold = {{ op = \">\", fire = 8 }}\n"),
    );
    let replay = |node: &str, i: i64, t: i64| {
        let mut e = examples::event(EventKind::GpuPcieReplay);
        e.node = node.into();
        e.id = format!("r-{node}-{i}");
        e.time = Timestamp::from_unix_millis(t);
        if let EventData::GpuPcieReplay(c) = &mut e.data {
            c.delta = 1;
        }
        e
    };
    let t0 = now_ms();
    let nodes: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    let (_a, addr_a) = start(&s, &rules, "a", &[]);
    let mut first = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        first.push(xid(n, 79, t0 + k as i64));
        for i in 0..5 {
            first.push(replay(n, i, t0 + 100 + i));
        }
    }
    produce(&s.cfg, &first).await;
    wait_metric(
        &addr_a,
        "pitcrew_rules_events_total",
        first.len() as f64,
        Duration::from_secs(60),
    );

    let (_b, addr_b) = start(&s, &rules, "b", &[]);
    // Wait until the group has handed b its share.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let b = metric(
            &http_get(&addr_b, "/metrics"),
            "pitcrew_rules_assigned_partitions{stage=\"node\"}",
        );
        let a = metric(
            &http_get(&addr_a, "/metrics"),
            "pitcrew_rules_assigned_partitions{stage=\"node\"}",
        );
        if b >= 1.0 && a + b == 4.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t1 = now_ms();
    let mut second = Vec::new();
    for n in &nodes {
        for i in 5..10 {
            second.push(replay(n, i, t1 + i));
        }
    }
    produce(&s.cfg, &second).await;

    let acts = actions(&s, 80);
    let mut by_plan: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for a in &acts {
        assert!(
            by_plan
                .entry(a.plan.clone())
                .or_default()
                .insert(a.id.clone()),
            "action {} twice",
            a.id
        );
    }
    let notified: Vec<&str> = acts
        .iter()
        .filter(|a| a.plan == "notify")
        .map(|a| a.target.name.as_str())
        .collect();
    eprintln!("notified: {notified:?}");
    assert_eq!(by_plan.get("reboot_node").map(HashSet::len), Some(40));
    assert_eq!(
        by_plan.get("notify").map(HashSet::len),
        Some(40),
        "windows kept their state across the rebalance"
    );
    assert_eq!(acts.len(), 80);
    let b_events = metric(&http_get(&addr_b, "/metrics"), "pitcrew_rules_events_total");
    assert!(b_events > 0.0, "the second instance took partitions");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_rule_file_keeps_the_running_rules_and_a_good_one_replaces_them() {
    let s = setup("reload", 1).await;
    let rules = write_rules(&s, REBOOT_ON_79);
    let (svc, addr) = start(&s, &rules, "a", &[]);
    let svc_pid = svc.0.id();
    let t0 = now_ms();
    produce(&s.cfg, &[xid("n1", 79, t0)]).await;
    assert_eq!(actions(&s, 1).len(), 1);

    // Broken: a syntax error and an unknown plan.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"x79\"\nplan = \"reboot_nod\"\nwhen = { kind = \"gpu.xid\" \n",
    )
    .unwrap();
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_reloads_total{outcome=\"error\"}",
            1.0,
            Duration::from_secs(20)
        ) >= 1.0
    );
    produce(&s.cfg, &[xid("n2", 79, t0 + 1000)]).await;
    let acts = actions(&s, 2);
    assert_eq!(acts.len(), 2, "the old rules still run");
    assert!(acts.iter().all(|a| a.plan == "reboot_node"));

    // SIGHUP reloads too (the same, good set).
    let ok_before = metric(
        &http_get(&addr, "/metrics"),
        "pitcrew_rules_reloads_total{outcome=\"ok\"}",
    );
    std::fs::write(&rules, REBOOT_ON_79).unwrap();
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_reloads_total{outcome=\"ok\"}",
            ok_before + 1.0,
            Duration::from_secs(20)
        ) >= ok_before + 1.0
    );
    let ok_mid = metric(
        &http_get(&addr, "/metrics"),
        "pitcrew_rules_reloads_total{outcome=\"ok\"}",
    );
    let pid = svc_pid.to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_reloads_total{outcome=\"ok\"}",
            ok_mid + 1.0,
            Duration::from_secs(20)
        ) >= ok_mid + 1.0,
        "SIGHUP reloads"
    );

    // Good: 79 now asks for RMA.
    let ok_now = metric(
        &http_get(&addr, "/metrics"),
        "pitcrew_rules_reloads_total{outcome=\"ok\"}",
    );
    std::fs::write(&rules, REBOOT_ON_79.replace("reboot_node", "rma")).unwrap();
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_reloads_total{outcome=\"ok\"}",
            ok_now + 1.0,
            Duration::from_secs(20)
        ) >= ok_now + 1.0
    );
    produce(&s.cfg, &[xid("n3", 79, t0 + 2000)]).await;
    let acts = actions(&s, 3);
    assert_eq!(acts.len(), 3, "{acts:?}");
    assert_eq!(acts.iter().filter(|a| a.plan == "rma").count(), 1);
    assert_eq!(
        acts.iter()
            .find(|a| a.plan == "rma")
            .map(|a| a.target.name.as_str()),
        Some("n3")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leaf_switch_fan_in_runs_through_the_rekeyed_stage_and_bad_input_is_dead_lettered() {
    let s = setup("fanin", 3).await;
    let rules_dir = s.dir.join("pack");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/pack/network.toml"),
        rules_dir.join("network.toml"),
    )
    .unwrap();
    std::fs::write(s.dir.join("inventory.toml"), "[[node]]\nname = \"n[1-12]\"\nleaf_switch = \"leaf-1a\"\n[[node]]\nname = \"n[13-24]\"\nleaf_switch = \"leaf-2a\"\n").unwrap();
    let (_svc, addr) = start(&s, &rules_dir, "a", &[]);
    let t0 = now_ms();
    let events: Vec<Event> = (1..=8)
        .map(|i| {
            let mut e = examples::event(EventKind::NetIbCounter);
            e.node = format!("n{i}");
            e.id = format!("ib-{i}");
            e.time = Timestamp::from_unix_millis(t0 + i * 100);
            if let EventData::NetIbCounter(c) = &mut e.data {
                c.counter = IbCounterName::LinkDowned;
                c.delta = 1;
            }
            e
        })
        .collect();
    produce(&s.cfg, &events).await;
    // A bad message with a header of its own: its dead letter keeps it.
    let p = Producer::new(&s.cfg.kafka, BusMetrics::default()).unwrap();
    let headers = pitcrew_bus::rdkafka::message::OwnedHeaders::new().insert(
        pitcrew_bus::rdkafka::message::Header {
            key: "traceparent",
            value: Some("00-abc-01"),
        },
    );
    p.send_with_headers(
        &s.cfg.topics.events.name,
        "n99",
        b"{\"v\":1,\"kind\":\"gpu.xid\",oops",
        headers,
    )
    .await
    .unwrap();

    let incs = incidents(&s, 9);
    let parent = incs
        .iter()
        .find(|i| i.rule == "leaf-switch-down" && i.status == IncidentStatus::Open)
        .expect("the switch is blamed");
    assert_eq!(parent.blame.to_string(), "leaf_switch/leaf-1a");
    let suppressed = incs
        .iter()
        .filter(|i| i.rule == "ib-link-down" && i.status == IncidentStatus::Suppressed)
        .count();
    assert_eq!(suppressed, 8, "{incs:#?}");
    let acts = actions(&s, 1);
    assert_eq!(acts.len(), 1, "one page, no node drained: {acts:?}");
    assert_eq!(acts[0].plan, "page");
    let dlq = read_topic(
        &s.cfg.topics.dlq.name,
        "read_committed",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].starts_with(b"{\"v\":1,\"kind\":\"gpu.xid\",oops"));
    let (key, headers) = first_headers(&s.cfg.topics.dlq.name);
    assert_eq!(key, "n99");
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("traceparent"), Some("00-abc-01"), "{headers:?}");
    assert_eq!(
        get(pitcrew_contract::dlq::headers::STAGE),
        Some("rules-node")
    );
    assert_eq!(
        get(pitcrew_contract::dlq::headers::REASON_KIND),
        Some("syntax"),
        "{headers:?}"
    );
    assert_eq!(
        get(pitcrew_contract::dlq::headers::TOPIC),
        Some(s.cfg.topics.events.name.as_str())
    );
    assert!(
        wait_metric(
            &addr,
            "pitcrew_rules_dead_letters_total",
            1.0,
            Duration::from_secs(5)
        ) >= 1.0
    );
    // Lag is measured per partition every few seconds: caught up, it is 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = http_get(&addr, "/metrics");
        if text.contains("pitcrew_bus_consumer_lag_messages{") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        text.contains("pitcrew_bus_consumer_lag_messages{"),
        "lag is exported"
    );
    assert_eq!(metric(&text, "pitcrew_bus_consumer_lag_messages"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_reads_a_topic_range_across_partitions_in_time_order() {
    let s = setup("replay", 3).await;
    let rules = write_rules(&s, REBOOT_ON_79);
    let first: Vec<Event> = (0..10)
        .map(|i| xid(&format!("a{i}"), 79, now_ms() + i))
        .collect();
    produce(&s.cfg, &first).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let middle = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second: Vec<Event> = (0..10)
        .map(|i| xid(&format!("b{i}"), 79, now_ms() + i))
        .collect();
    produce(&s.cfg, &second).await;

    let replay = |range: &[&str]| {
        let mut args = vec![
            "--config",
            s.config_file.to_str().unwrap(),
            "replay",
            rules.to_str().unwrap(),
            "--topic",
            &s.cfg.topics.events.name,
            "--json",
        ];
        args.extend_from_slice(range);
        let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(&args)
            .env_remove("PITCREW_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let targets: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| decode::<ActionRequest>(l.as_bytes()).ok())
            .map(|a| a.target.name)
            .collect();
        targets
    };
    let all = replay(&[]);
    assert_eq!(all.len(), 20, "{all:?}");
    let mid = middle.to_string();
    let late = replay(&["--from", &mid]);
    assert_eq!(late.len(), 10, "{late:?}");
    assert!(late.iter().all(|n| n.starts_with('b')));
    let early = replay(&["--to", &mid]);
    assert_eq!(early.len(), 10, "{early:?}");
    assert!(early.iter().all(|n| n.starts_with('a')));
}

/// The demo's fleet and fault script as the agents would send them: 64
/// nodes' telemetry every 2 s and the six scripted faults, from `start` for
/// `secs` seconds, in time order.
fn demo_events(start: Timestamp, secs: i64) -> Vec<Event> {
    use pitcrew_rules::{Scenario, Span};
    use pitcrew_simulate::{Fleet, FleetSpec, Player, DEMO_SCENARIO};
    let scenario = Scenario::parse("demo.toml", DEMO_SCENARIO).unwrap();
    let mut player = Player::new(&scenario, "same");
    let mut fleet = Fleet::new(FleetSpec::default(), "same");
    let mut events = Vec::new();
    for tick in 0..secs * 10 {
        let elapsed = Span(tick * 100_000_000);
        let mut due = player.due(start, elapsed);
        if tick % 20 == 0 {
            fleet.sample(start.add_nanos(elapsed.0), &|_| true, &mut due);
        }
        due.sort_by_key(|e| e.time);
        events.extend(due);
    }
    events
}

fn inventory_toml() -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for n in pitcrew_simulate::FleetSpec::default().inventory().nodes() {
        let _ = write!(
            text,
            "[[node]]\nname = \"{}\"\nrack = \"{}\"\nleaf_switch = \"{}\"\ngpus = {}\ndriver_version = \"{}\"\n",
            n.name,
            n.rack.as_deref().unwrap_or_default(),
            n.leaf_switch.as_deref().unwrap_or_default(),
            n.gpus.unwrap_or(8),
            n.driver_version.as_deref().unwrap_or_default(),
        );
    }
    text
}

/// An output as both paths write it, re-encoded the same way, and its time.
fn normalised(payload: &[u8]) -> Option<(Timestamp, String)> {
    if let Ok(i) = decode::<Incident>(payload) {
        return Some((i.at, serde_json::to_string(&i).unwrap()));
    }
    let a = decode::<ActionRequest>(payload).ok()?;
    Some((a.requested_at, serde_json::to_string(&a).unwrap()))
}

/// Replays `events` with `pitcrew replay @default` and serves them through
/// `pitcrew rules @default` on the real Kafka (the same inventory, written
/// beforehand), and asserts that both give the same incidents and actions,
/// ids included, up to `cut`: outputs up to there are final on both paths
/// (the stream's watermark passes it before the stream ends). Returns the
/// number of (incident messages, actions) compared.
async fn assert_same_outputs(s: &Setup, events: &[Event], cut: Timestamp) -> (usize, usize) {
    let file = s.dir.join("events.jsonl");
    let lines: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(pitcrew_contract::encode(e)).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "replay",
            "@default",
            "--events",
            file.to_str().unwrap(),
            "--inventory",
            s.dir.join("inventory.toml").to_str().unwrap(),
            "--json",
            // The service's default (replay's own is for merged logs).
            "--lateness",
            "5s",
        ])
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut replayed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| normalised(l.as_bytes()))
        .filter(|(at, _)| *at <= cut)
        .map(|(_, s)| s)
        .collect();
    replayed.sort();
    let actions_replayed = replayed
        .iter()
        .filter(|l| l.contains("\"requested_at\""))
        .count();

    let p = Producer::new(&s.cfg.kafka, BusMetrics::default()).unwrap();
    let mut pending = std::collections::VecDeque::new();
    for e in events {
        let payload = pitcrew_contract::encode(e);
        pending.push_back(
            p.enqueue(&s.cfg.topics.events.name, &e.node, &payload, None)
                .await
                .unwrap(),
        );
        if pending.len() >= 1000 {
            pending.pop_front().unwrap().wait().await.unwrap();
        }
    }
    for d in pending {
        d.wait().await.unwrap();
    }
    let (_svc, _addr) = start_with(s, Path::new("@default"), "a", &[], &["--idle-grace", "2s"]);
    let read = |topic: &str, want: usize| -> Vec<String> {
        read_topic(topic, "read_committed", want, Duration::from_secs(180))
            .iter()
            .filter_map(|b| normalised(b))
            .filter(|(at, _)| *at <= cut)
            .map(|(_, s)| s)
            .collect()
    };
    let mut served = read(&s.cfg.topics.actions.name, actions_replayed);
    served.extend(read(
        &s.cfg.topics.alerts.name,
        replayed.len() - actions_replayed,
    ));
    served.sort();
    if served != replayed {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            let b: HashSet<&String> = b.iter().collect();
            a.iter().filter(|x| !b.contains(x)).cloned().collect()
        };
        panic!(
            "{} served and {} replayed differ:\nonly served: {:#?}\nonly replayed: {:#?}",
            served.len(),
            replayed.len(),
            only(&served, &replayed),
            only(&replayed, &served)
        );
    }
    (replayed.len() - actions_replayed, actions_replayed)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_on_kafka_and_replay_give_the_same_incidents_and_actions_with_the_same_ids() {
    // One events partition, so the backlog reaches the node stage in time
    // order (the split across partitions is proven equal by the rules
    // crate's pipeline tests); the group stage re-keys as in production.
    let s = setup("same", 1).await;
    std::fs::write(s.dir.join("inventory.toml"), inventory_toml()).unwrap();
    let start = Timestamp::from_unix_millis(now_ms());
    let events = demo_events(start, 30);
    // The watermark passes this before the stream's end (lateness 5 s).
    let cut = start.add_nanos(24_000_000_000);
    let (incidents, actions) = assert_same_outputs(&s, &events, cut).await;
    eprintln!(
        "same outputs: {incidents} incident messages and {actions} actions from {} events",
        events.len()
    );
    // The demo's six reference actions, and incidents behind them.
    assert!(actions >= 5, "{actions} actions");
}

/// The default pack's own tests, each in a time slot of its own eight days
/// apart (longer than any rule's window), with its nodes renamed apart and
/// the topologies merged into one inventory: through the service on Kafka
/// and through replay, the same outputs with the same ids. (Each test's
/// expectations are checked by `pitcrew test`, which runs the same
/// `Pipeline` replay runs.)
#[tokio::test(flavor = "multi_thread")]
async fn the_default_packs_tests_give_the_same_outputs_on_kafka_as_in_replay() {
    use std::fmt::Write as _;
    let set = pitcrew_rules::compile(&pitcrew_rules::default_pack()).unwrap();
    assert!(set.tests.len() >= 40, "{} pack tests", set.tests.len());
    let slot = 8 * 86_400 * 1_000_000_000_i64;
    let n = i64::try_from(set.tests.len()).unwrap();
    // Every slot, and the tail after them, in the past: the service takes
    // an event dated past its wall clock at the wall clock's time (replay
    // has no wall clock), so a future tail would differ by design.
    let base = Timestamp::from_unix_millis(now_ms()).add_nanos(-(n * slot) - 2 * slot);
    let mut events = Vec::new();
    let mut inventory = String::new();
    for (k, t) in set.tests.iter().enumerate() {
        let shift = base
            .add_nanos(i64::try_from(k).unwrap() * slot)
            .unix_nanos()
            - pitcrew_rules::TEST_EPOCH.unix_nanos();
        // Shown with a failure: which slot is which test.
        eprintln!("t{k}: {} ({}:{})", t.name, t.file, t.line);
        let rename = |node: &str| format!("t{k}-{node}");
        for n in &t.topology {
            let _ = writeln!(inventory, "[[node]]\nname = \"{}\"", rename(&n.name));
            for (key, v) in [
                ("rack", &n.rack),
                ("leaf_switch", &n.leaf_switch),
                ("pdu", &n.pdu),
                ("driver_version", &n.driver_version),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(inventory, "{key} = \"{v}\"");
                }
            }
            if let Some(g) = n.gpus {
                let _ = writeln!(inventory, "gpus = {g}");
            }
        }
        for e in &t.events {
            let mut e = e.clone();
            e.node = rename(&e.node);
            e.id = format!("t{k}-{}", e.id);
            e.time = e.time.add_nanos(shift);
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.time);
    // A day after the last slot, one event of every kind: each stage's
    // event time (the group stage's moves only with what is forwarded to
    // it) passes every slot, so what the slots' timers give is final on
    // both paths.
    let tail = events.last().unwrap().time.add_nanos(slot / 8);
    for (i, mut e) in examples::all_events().into_iter().enumerate() {
        e.node = "tail-n1".into();
        e.id = format!("tail-{i}");
        e.time = tail;
        events.push(e);
    }
    assert!(
        tail.unix_millis() < now_ms() - 3_600_000,
        "the tail must be in the past: {tail}"
    );
    let s = setup("packsame", 1).await;
    std::fs::write(s.dir.join("inventory.toml"), inventory).unwrap();
    let cut = tail.add_nanos(-5_000_000_000);
    let (incidents, actions) = assert_same_outputs(&s, &events, cut).await;
    eprintln!(
        "same outputs: {incidents} incident messages and {actions} actions from {} events of {} pack tests",
        events.len(),
        set.tests.len()
    );
    assert!(
        actions >= set.tests.len() / 2,
        "the pack tests ask for actions: {actions}"
    );
}

/// One node's clock (or its kernel log's time) half an hour ahead must not
/// move the stage's event time on by half an hour: every inventory node's
/// heartbeat absence would fire at once, a fleet of reboot requests. The
/// event is taken at the wall clock's time, counted and logged; its rule
/// still fires.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_from_a_clock_ahead_does_not_fire_every_absence() {
    let s = setup("future", 1).await;
    let rules_dir = s.dir.join("pack");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("rules.toml"),
        format!(
            "{REBOOT_ON_79}\n[[rule]]\nname = \"silent\"\nseverity = \"critical\"\nplan = \"reboot_node\"\nwhen = {{ kind = \"node.heartbeat\" }}\nabsence = {{ after = \"60s\", inventory = true }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        s.dir.join("inventory.toml"),
        "[[node]]\nname = \"n[1-3]\"\n",
    )
    .unwrap();
    let (_svc, addr) = start(&s, &rules_dir, "a", &[]);
    let t0 = now_ms();
    let mut events: Vec<Event> = (1..=3)
        .map(|i| {
            let mut e = examples::event(EventKind::NodeHeartbeat);
            e.node = format!("n{i}");
            e.id = format!("hb-{i}");
            e.time = Timestamp::from_unix_millis(t0);
            e
        })
        .collect();
    events.push(xid("n1", 79, t0 + 30 * 60 * 1000));
    produce(&s.cfg, &events).await;
    let future = wait_metric(
        &addr,
        "pitcrew_rules_future_events_total",
        1.0,
        Duration::from_secs(60),
    );
    assert_eq!(future, 1.0, "the Xid from half an hour ahead, counted");
    // Had the event time jumped, the three absences would be out within
    // seconds; the real ones are a minute after the heartbeats, so read
    // well before that.
    let within = |topic: &str| -> Vec<Vec<u8>> {
        read_topic(topic, "read_committed", 4, Duration::from_secs(10))
    };
    let incs: Vec<Incident> = within(&s.cfg.topics.alerts.name)
        .iter()
        .map(|b| decode(b).unwrap())
        .collect();
    let rules: Vec<&str> = incs.iter().map(|i| i.rule.as_str()).collect();
    assert_eq!(rules, ["x79"], "{incs:#?}");
    let acts: Vec<ActionRequest> = within(&s.cfg.topics.actions.name)
        .iter()
        .map(|b| decode(b).unwrap())
        .collect();
    assert_eq!(acts.len(), 1, "{acts:#?}");
    assert_eq!(acts[0].target.to_string(), "node/n1");
    assert!(
        now_ms() - t0 < 50_000,
        "read too late to tell a jump from the real absences"
    );
}
