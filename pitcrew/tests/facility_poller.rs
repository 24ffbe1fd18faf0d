//! `pitcrew facility run` end to end: the binary polls snmpsim (serving
//! walks recorded from a real APC PDU and a real Eaton UPS) and writes to a
//! real Kafka broker, keyed by device; a fault changed on the device reaches
//! Kafka at the next poll. The benchmark (ignored) times fault -> event in
//! Kafka over 20 faults at a 5 s poll.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::{ensure_topics, BusMetrics, Consumer, KafkaConfig, TopicsConfig};
use pitcrew_contract::{decode, Event, EventData, UpsSource};
use pitcrew_harness::kafka::KafkaBroker;
use pitcrew_harness::snmpsim::Snmpsim;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn recording(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../facility/testdata/{name}.snmprec"));
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

const NORMAL: &str = "1.3.6.1.2.1.33.1.4.1.0|2|3";
const BATTERY: &str = "1.3.6.1.2.1.33.1.4.1.0|2|5";

/// Flips the served UPS's output source in place (same length, so
/// snmpsim's index of the file stays right and it answers the new value at
/// once).
fn set_source(file: &Path, battery: bool) {
    let text = std::fs::read_to_string(file).unwrap();
    let text = if battery {
        text.replace(NORMAL, BATTERY)
    } else {
        text.replace(BATTERY, NORMAL)
    };
    std::fs::write(file, text).unwrap();
}

struct Setup {
    _broker: KafkaBroker,
    sim: Snmpsim,
    _poller: Proc,
    listen: String,
    consumer: Consumer,
}

async fn setup(interval: &str) -> Setup {
    let broker = KafkaBroker::start().unwrap();
    let topics = TopicsConfig::default().single_broker();
    let kafka = KafkaConfig {
        brokers: broker.bootstrap().to_owned(),
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka, &topics).await.unwrap();
    let sim = Snmpsim::start(&[
        ("pdu-r3", recording("apc-8932")),
        ("ups-1", recording("eaton-93e-80")),
    ])
    .unwrap();
    let dir = pitcrew_harness::run_dir("facility-run").unwrap();
    let creds = dir.join("ups.toml");
    std::fs::write(&creds, "community = \"ups-1\"\n").unwrap();
    let devices = dir.join("facility.toml");
    std::fs::write(
        &devices,
        format!(
            "[poller]\ninterval = \"{interval}\"\ntimeout = \"1s\"\n\
             [[facility]]\nname = \"pdu-r3\"\nkind = \"pdu\"\nracks = [\"r3\"]\naddress = \"snmp://pdu-r3@127.0.0.1:{port}\"\n\
             [[facility]]\nname = \"ups-1\"\nkind = \"ups\"\nracks = [\"r1\", \"r2\", \"r3\", \"r4\"]\naddress = \"snmp://127.0.0.1:{port}\"\ncredentials = \"{creds}\"\n",
            port = sim.port,
            creds = creds.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", pitcrew_harness::free_port().unwrap());
    let poller = Proc(
        Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(["--log", "warn", "facility", "run", "--devices"])
            .arg(&devices)
            .args(["--listen", &listen])
            .env_remove("PITCREW_CONFIG")
            .env("PITCREW__KAFKA__BROKERS", broker.bootstrap())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let consumer = Consumer::new(
        &kafka,
        "facility-test-reader",
        &[&topics.events.name],
        BusMetrics::default(),
    )
    .unwrap();
    Setup {
        _broker: broker,
        sim,
        _poller: poller,
        listen,
        consumer,
    }
}

/// The next UPS event whose source is `want`, and when it was read.
async fn next_ups(
    consumer: &Consumer,
    want: UpsSource,
    limit: Duration,
) -> Option<(Event, Instant)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
        else {
            continue;
        };
        let at = Instant::now();
        let ev: Event = decode(msg.payload().unwrap()).unwrap();
        assert_eq!(msg.key(), Some(ev.node.as_bytes()), "keyed by device");
        if let EventData::FacilityUps(u) = &ev.data {
            if u.source == want {
                return Some((ev, at));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_poller_writes_readings_keyed_by_device_and_a_fault_arrives_at_the_next_poll() {
    let s = setup("1s").await;
    let ups_file = s.sim.data.join("ups-1.snmprec");
    // Readings of both devices arrive, keyed by device.
    let mut seen_pdu_outlets = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ups_seen = false;
    while (seen_pdu_outlets.len() < 24 || !ups_seen) && Instant::now() < deadline {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(2), s.consumer.recv()).await
        else {
            continue;
        };
        let ev: Event = decode(msg.payload().unwrap()).unwrap();
        assert_eq!(msg.key(), Some(ev.node.as_bytes()));
        match &ev.data {
            EventData::FacilityPdu(p) if p.scope == pitcrew_contract::PduScope::Outlet => {
                assert_eq!(ev.node, "pdu-r3");
                assert_eq!(p.racks, ["r3"]);
                seen_pdu_outlets.insert(p.index.unwrap());
            }
            EventData::FacilityUps(u) => {
                assert_eq!(u.racks.len(), 4);
                assert_eq!(u.source, UpsSource::Normal);
                ups_seen = true;
            }
            _ => {}
        }
    }
    assert_eq!(seen_pdu_outlets.len(), 24);
    assert!(ups_seen);
    // The UPS goes to battery: the next poll says so.
    set_source(&ups_file, true);
    let got = next_ups(&s.consumer, UpsSource::Battery, Duration::from_secs(20)).await;
    assert!(got.is_some(), "the battery reading never reached kafka");
    // Its metrics and health.
    let (status, body) = pitcrew_harness::http_get(
        s.listen.rsplit(':').next().unwrap().parse().unwrap(),
        "/metrics",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("pitcrew_facility_polls_total{protocol=\"snmp\",outcome=\"ok\"}"),
        "{body}"
    );
    assert!(
        body.contains("pitcrew_facility_ups_source{device=\"ups-1\""),
        "{body}"
    );
    assert!(pitcrew_harness::http_ok(
        s.listen.rsplit(':').next().unwrap().parse().unwrap(),
        "/healthz"
    ));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run it with --ignored"]
async fn bench_fault_on_the_device_to_event_in_kafka_at_a_5s_poll() {
    let s = setup("5s").await;
    let ups_file = s.sim.data.join("ups-1.snmprec");
    // Wait for the poller to be running.
    assert!(
        next_ups(&s.consumer, UpsSource::Normal, Duration::from_secs(60))
            .await
            .is_some()
    );
    let mut latencies = Vec::new();
    for i in 0..20u64 {
        // Faults at arbitrary points of the poll cycle.
        tokio::time::sleep(Duration::from_millis(700 + (i * 1_313) % 4_000)).await;
        let battery = i % 2 == 0;
        let t0 = Instant::now();
        set_source(&ups_file, battery);
        let want = if battery {
            UpsSource::Battery
        } else {
            UpsSource::Normal
        };
        let (_, at) = next_ups(&s.consumer, want, Duration::from_secs(30))
            .await
            .expect("fault reached kafka");
        latencies.push(at.duration_since(t0));
    }
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "fault on the device -> event in kafka, 5 s poll, {} faults: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        latencies.len(),
        q(0.5).as_secs_f64(),
        q(0.99).as_secs_f64(),
        latencies.last().unwrap().as_secs_f64()
    );
}
