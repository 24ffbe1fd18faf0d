//! The node agent against a real Kafka broker that goes away and comes
//! back: every event reaches Kafka, in order per node, and the ids let a
//! consumer drop the duplicates a retry may send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::{ensure_topics, BusConfig, BusMetrics, Consumer, KafkaConfig, TopicsConfig};
use pitcrew_contract::{decode, Event, EventData};
use pitcrew_harness::kafka::KafkaBroker;

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{value}\n")).unwrap();
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spool_carries_every_event_through_a_broker_outage() {
    let mut broker = KafkaBroker::start().unwrap();
    let topics = TopicsConfig::default().single_broker();
    let kafka = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka, &topics).await.unwrap();

    let root: PathBuf = std::env::temp_dir().join(format!("pitcrew-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write(&root, "proc/sys/kernel/random/boot_id", "boot-agent-test");
    write(&root, "proc/uptime", "100.0 100.0");
    write(
        &root,
        "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error",
        "0",
    );
    let port = pitcrew_harness::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "--log",
            "warn",
            "collect",
            "--node",
            "n17",
            "--no-kmsg",
            "--no-nvml",
            "--interval-ms",
            "50",
        ])
        .arg("--proc-root")
        .arg(root.join("proc"))
        .arg("--sys-root")
        .arg(root.join("sys"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .args(["--listen", &listen])
        .env_remove("PITCREW_CONFIG")
        .env("PITCREW__KAFKA__BROKERS", broker.bootstrap())
        .env("PITCREW__KAFKA__PRODUCER__DELIVERY_TIMEOUT_MS", "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "agent did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }

    let counter = "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error";
    let bump = |from: u64, to: u64| {
        for i in from..=to {
            write(&root, counter, &i.to_string());
            std::thread::sleep(Duration::from_millis(150));
        }
    };
    bump(1, 5);
    broker.pause();
    bump(6, 15);
    let (_, metrics) = http_get(&listen, "/metrics");
    assert!(
        metric(&metrics, "pitcrew_collect_spool_pending_bytes") > 0.0,
        "events wait in the spool:\n{metrics}"
    );
    let (status, _) = http_get(&listen, "/healthz");
    assert_eq!(status, 200, "a short outage is not unhealthy");
    broker.resume().unwrap();
    bump(16, 20);

    // Everything arrives: the counter's totals 1..=20, each as an event.
    let cfg = BusConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
    };
    let consumer = Consumer::new(
        &cfg.kafka,
        "agent-test-reader",
        &[&cfg.topics.events.name],
        BusMetrics::default(),
    )
    .unwrap();
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    let mut totals = BTreeSet::new();
    let mut heartbeats = 0;
    let mut last_time = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while totals.len() < 20 && Instant::now() < deadline {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        assert_eq!(msg.key(), Some(&b"n17"[..]));
        let ev: Event = decode(msg.payload().unwrap()).unwrap();
        if !ids.insert(ev.id.clone()) {
            duplicates += 1;
            continue;
        }
        // One node, one partition: event time never goes backwards.
        if let Some(t) = last_time {
            assert!(ev.time >= t, "order kept");
        }
        last_time = Some(ev.time);
        match &ev.data {
            EventData::NetIbCounter(c) => {
                totals.insert(c.total);
            }
            EventData::NodeHeartbeat(_) => heartbeats += 1,
            _ => {}
        }
    }
    assert_eq!(
        totals,
        (1..=20).collect::<BTreeSet<u64>>(),
        "every counter change arrived"
    );
    assert!(heartbeats > 10);
    eprintln!(
        "distinct events {}, duplicates dropped by id {duplicates}",
        ids.len()
    );

    let (_, metrics) = http_get(&listen, "/metrics");
    assert!(
        metric(&metrics, "pitcrew_collect_events_total{source=\"sysfs\"}") >= 20.0,
        "{metrics}"
    );
    assert!(metrics
        .contains("pitcrew_collect_source_last_success_timestamp_seconds{source=\"heartbeat\"}"));
    assert!(
        metric(&metrics, "pitcrew_collect_state_entries{source=\"sysfs\"}") >= 1.0,
        "state size is exposed: {metrics}"
    );
    stop_with_sigterm(&mut agent);
    let _ = std::fs::remove_dir_all(&root);
}

/// Stops the agent with SIGTERM through kill(1) and expects a clean exit.
fn stop_with_sigterm(agent: &mut Agent) {
    let pid = agent.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
