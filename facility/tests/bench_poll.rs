//! Poll cost, measured by hand (ignored in the test run):
//!
//! ```sh
//! cargo test --release -p pitcrew-facility --test bench_poll -- --ignored --nocapture
//! ```
//!
//! snmpsim serves 500 metered rack PDUs of 24 outlets each (the AP8932
//! walk with the rPDU2 outlet-metering tables a metered-by-outlet model
//! adds: what an AP8641 or AP8886 answers); the poller polls all of them
//! every 10 s for a minute, in this process. Reported: pitcrew's CPU per
//! device poll (this process's user+system time, snmpsim excluded), its RSS,
//! poll times, and how many devices one core polls at that interval.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use pitcrew_facility::config::{Address, Device};
use pitcrew_facility::metrics::{FacilityMetrics, ProtocolOutcome};
use pitcrew_facility::poller::{Library, Poller};
use pitcrew_facility::DeviceKind;
use pitcrew_harness::snmpsim::Snmpsim;

/// The AP8932 walk plus 24 metered outlets (status and config tables).
pub fn metered_pdu(seed: u32) -> String {
    let bytes = std::fs::read(format!(
        "{}/testdata/apc-8932.snmprec",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let base = String::from_utf8_lossy(&bytes);
    // Only what the profile reads, and sysObjectID: a smaller index for snmpsim.
    let mut lines: Vec<String> = base
        .lines()
        .filter(|l| l.starts_with("1.3.6.1.4.1.318.1.1.26.") || l.starts_with("1.3.6.1.2.1.1."))
        .map(str::to_owned)
        .collect();
    for o in 1..=24u32 {
        let cur = 40 + (o * 7 + seed) % 90; // 4.0 .. 13.0 A
        for (col, ty, v) in [
            (1, "2", o.to_string()),
            (2, "2", "1".to_owned()),
            (3, "4", format!("gpu-node-{o}")),
            (4, "2", o.to_string()),
            (5, "2", "2".to_owned()),
            (6, "2", cur.to_string()),
            (7, "2", (cur * 23).to_string()),
            (11, "2", (10_000 + o * 37 + seed).to_string()),
        ] {
            lines.push(format!("1.3.6.1.4.1.318.1.1.26.9.4.3.1.{col}.{o}|{ty}|{v}"));
        }
        lines.push(format!("1.3.6.1.4.1.318.1.1.26.9.4.1.1.4.{o}|2|{o}"));
        lines.push(format!("1.3.6.1.4.1.318.1.1.26.9.4.1.1.7.{o}|2|16"));
    }
    // snmpsim wants its lines in OID order.
    lines.sort_by(|a, b| {
        let key = |l: &str| -> Vec<u32> {
            l.split('|')
                .next()
                .unwrap_or("")
                .split('.')
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        key(a).cmp(&key(b))
    });
    lines.join("\n") + "\n"
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ")".
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored"]
async fn bench_500_pdus_of_24_outlets_every_10_s() {
    let devices: u32 = std::env::var("BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let interval = Duration::from_secs(10);
    let recordings: Vec<(String, String)> = (0..devices)
        .map(|i| (format!("pdu-{i}"), metered_pdu(i)))
        .collect();
    let refs: Vec<(&str, String)> = recordings
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let started = Instant::now();
    let sim = Snmpsim::start(&refs).unwrap();
    println!(
        "snmpsim serving {devices} PDUs after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = sim.port;
    let list: Vec<Device> = (0..devices)
        .map(|i| Device {
            racks: vec![format!("r{}", i + 1)],
            profile: Some("apc-rpdu2".into()),
            interval,
            timeout: Duration::from_secs(5),
            retries: 1,
            max_backoff: Duration::from_secs(60),
            ..Device::new(
                &format!("pdu-{i}"),
                DeviceKind::Pdu,
                Address::parse(&format!("snmp://pdu-{i}@127.0.0.1:{port}")).unwrap(),
            )
        })
        .collect();
    let metrics = FacilityMetrics::default();
    let poller = Poller::new(Library::load(&[]).unwrap(), metrics.clone(), 256);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let run = tokio::spawn(async move { poller.run(list, tx).await });
    let counted = tokio::spawn(async move {
        let mut events = 0u64;
        while let Some(batch) = rx.recv().await {
            events += batch.len() as u64;
        }
        events
    });
    // One interval to warm up (sessions, first polls), then measure.
    tokio::time::sleep(interval).await;
    let ok = |m: &FacilityMetrics, outcome: &str| {
        m.polls
            .get_or_create(&ProtocolOutcome {
                protocol: "snmp".into(),
                outcome: outcome.into(),
            })
            .get()
    };
    let (cpu0, polls0, t0) = (cpu_seconds(), ok(&metrics, "ok"), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, polls1, wall) = (
        cpu_seconds(),
        ok(&metrics, "ok"),
        t0.elapsed().as_secs_f64(),
    );
    let failed = ok(&metrics, "failed");
    run.abort();
    let _ = counted.await;
    let polls = polls1 - polls0;
    let cpu = cpu1 - cpu0;
    let per_poll_ms = cpu * 1000.0 / polls.max(1) as f64;
    println!(
        "{devices} PDUs x 24 outlets every {} s for {wall:.0} s: {polls} polls ok ({:.1}/s), {failed} failed",
        interval.as_secs(),
        polls as f64 / wall
    );
    println!(
        "pitcrew CPU {cpu:.2} s ({:.1}% of one core): {per_poll_ms:.2} ms per device poll; one core polls {:.0} such devices every {} s",
        cpu / wall * 100.0,
        interval.as_secs_f64() * 1000.0 / per_poll_ms,
        interval.as_secs()
    );
    println!(
        "RSS {} MiB (peak {} MiB)",
        rss_kib("VmRSS:") / 1024,
        rss_kib("VmHWM:") / 1024
    );
    assert!(polls > 0, "no poll completed\n{}", sim.log());
}
