//! `pitcrew bench pipeline`: `pitcrew rules` end to end against a real
//! Kafka. Starts the rules stage as a child process on throwaway topics,
//! then measures
//!
//! 1. throughput: a backlog of fleet telemetry produced before the stage
//!    starts, consumed through the default pack with transactional output:
//!    events per second of wall time and per second of the stage's CPU;
//! 2. latency: under a steady background load, a probe Xid 79 every
//!    `--probe-ms`; the time from handing the probe to Kafka to its action
//!    request being readable (`read_committed`) on `pitcrew.actions`.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_bus::rdkafka::consumer::{BaseConsumer, Consumer as _};
use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use pitcrew_bus::{ensure_topics, BatchProducer, BusConfig, BusMetrics, Producer};
use pitcrew_contract::{decode, encode, examples, ActionRequest, EventData, EventKind, Timestamp};

struct Stage(Child);
impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn http_metric(addr: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0.0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    pitcrew::http::metric_sum(&text, name)
}

/// One fleet event as the agents send it (thermal, ECC, replay, IB
/// samples), `i` choosing node and kind.
fn background(i: u64, nodes: u64) -> (String, Vec<u8>) {
    const KINDS: [EventKind; 5] = [
        EventKind::GpuThermal,
        EventKind::GpuEcc,
        EventKind::GpuPcieReplay,
        EventKind::NetIbCounter,
        EventKind::NodeHeartbeat,
    ];
    let mut e = examples::event(KINDS[(i % 5) as usize]);
    e.node = format!("n{}", (i / 5) % nodes);
    e.id = format!("bg-{i}");
    e.time = Timestamp::now();
    match &mut e.data {
        EventData::GpuThermal(t) => t.throttle.clear(),
        EventData::GpuEcc(x) => {
            x.corrected_delta = 0;
            x.uncorrected_delta = 0;
        }
        EventData::GpuPcieReplay(x) => x.delta = 0,
        EventData::NetIbCounter(x) => x.delta = 0,
        _ => {}
    }
    (e.node.clone(), encode(&e))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    config: Option<&Path>,
    backlog: u64,
    rate: u64,
    seconds: f64,
    probe_ms: u64,
    partitions: i32,
    max_batch: usize,
) -> anyhow::Result<()> {
    let mut cfg = BusConfig::load(config)?;
    let stamp = Timestamp::now().unix_millis();
    let prefix = format!("bench{stamp}-");
    cfg.topics = cfg.topics.with_prefix(&prefix).single_broker();
    cfg.topics.events.partitions = partitions;
    ensure_topics(&cfg.kafka, &cfg.topics).await?;
    let dir = std::env::temp_dir().join(format!("pitcrew-bench-{stamp}"));
    std::fs::create_dir_all(&dir)?;
    let t = &cfg.topics;
    let conf = dir.join("pitcrew.toml");
    std::fs::write(
        &conf,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.producer]\nlinger_ms = 2\n[topics]\nreplication_factor = 1\n[topics.events]\nname = \"{}\"\npartitions = {partitions}\n\
             [topics.alerts]\nname = \"{}\"\n[topics.actions]\nname = \"{}\"\n[topics.audit]\nname = \"{}\"\n[topics.state]\nname = \"{}\"\ncompact = true\n[topics.dlq]\nname = \"{}\"\n",
            cfg.kafka.brokers, t.events.name, t.alerts.name, t.actions.name, t.audit.name, t.state.name, t.dlq.name
        ),
    )?;
    let nodes = 12_500u64;
    println!(
        "pipeline bench: {} on {}, events topic {partitions} partitions",
        prefix, cfg.kafka.brokers
    );

    // 1. The backlog, before the stage starts.
    let producer = Arc::new(BatchProducer::new(&cfg.kafka, BusMetrics::default())?);
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < backlog {
        let n = 2_000.min(backlog - i);
        let batch: Vec<(String, Vec<u8>)> = (i..i + n).map(|k| background(k, nodes)).collect();
        // One key per batch: the batch's first node.
        let key = batch[0].0.clone();
        let p = Arc::clone(&producer);
        let topic = t.events.name.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = batch.iter().map(|(_, p)| p.as_slice()).collect();
            p.send_batch(&topic, &key, &refs, Duration::from_secs(60))
        })
        .await??;
        i += n;
    }
    println!(
        "  backlog: {backlog} events produced in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe()?;
    let log = dir.join("rules.log");
    let mut child = Command::new(exe)
        .args([
            "--config",
            conf.to_str().unwrap_or_default(),
            "--log-format",
            "json",
            "--log",
            "warn,pitcrew=info",
            "rules",
            "--rules",
            "@default",
            "--listen",
            "127.0.0.1:0",
            "--instance",
            &format!("{prefix}bench"),
            "--group-id",
            &format!("{prefix}rules"),
            "--group-topic",
            &format!("{prefix}events.by-group"),
            "--max-batch",
            &max_batch.to_string(),
        ])
        .env_remove("PITCREW_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stderr = child.stderr.take().context("stderr")?;
    let stage = Stage(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut out = std::fs::File::create(log2).ok();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(i) = line.find("\"listen\":\"") {
                    let addr: String = line[i + 10..].chars().take_while(|c| *c != '"').collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
            if let Some(f) = out.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the rules stage did not start; see its log")?;
    let start = Instant::now();
    let cpu0 = cpu_of(pid);
    let done = loop {
        let n = http_metric(&addr, "pitcrew_rules_events_total{stage=\"node\"}");
        if n >= backlog as f64 || start.elapsed() > Duration::from_secs(600) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_of(pid) - cpu0;
    let restored = http_metric(&addr, "pitcrew_rules_restored_events_total");
    println!(
        "  throughput: {done:.0} events in {wall:.2} s = {:.0} events/s wall; stage CPU {cpu:.2} s = {:.0} events/s per core (incl. start-up, rebuild of {restored:.0} events, consume, decode, evaluate, transactions)",
        done / wall,
        done / cpu.max(1e-9)
    );

    // 2. Latency under background load.
    let stop = Arc::new(AtomicBool::new(false));
    let sent_bg = Arc::new(AtomicU64::new(0));
    let bg = {
        let (stop, sent, topic) = (
            Arc::clone(&stop),
            Arc::clone(&sent_bg),
            t.events.name.clone(),
        );
        let producer = Producer::new(&cfg.kafka, BusMetrics::default())?;
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_tick = (rate / 100).max(1);
            let mut k = backlog;
            let mut next = tokio::time::Instant::now();
            let mut pending = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                for x in k..k + per_tick {
                    let (node, payload) = background(x, nodes);
                    match producer.enqueue(&topic, &node, &payload, None).await {
                        Ok(p) => pending.push_back(p),
                        Err(_) => break,
                    }
                    // Deliveries hold the producer's in-flight permits.
                    if pending.len() >= 20_000 {
                        if let Some(p) = pending.pop_front() {
                            let _ = p.wait().await;
                        }
                    }
                }
                sent.fetch_add(per_tick, Ordering::Relaxed);
                k += per_tick;
                next += tick;
                tokio::time::sleep_until(next).await;
            }
            for p in pending {
                let _ = p.wait().await;
            }
        })
    };
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (stop, sent_at, lat) = (
            Arc::clone(&stop),
            Arc::clone(&sent_at),
            Arc::clone(&latencies),
        );
        let brokers = cfg.kafka.brokers.clone();
        let topic = t.actions.name.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "pitcrew-bench-reader")
                .set("isolation.level", "read_committed")
                .set("fetch.wait.max.ms", "5")
                .create()?;
            let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let mut tpl = TopicPartitionList::new();
            for p in md
                .topics()
                .first()
                .map(|t| t.partitions())
                .unwrap_or_default()
            {
                tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
            }
            c.assign(&tpl)?;
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                    let now = Instant::now();
                    if let Ok(a) = decode::<ActionRequest>(m.payload().unwrap_or_default()) {
                        if let Some(at) = sent_at
                            .lock()
                            .ok()
                            .and_then(|mut s| s.remove(&a.target.name))
                        {
                            if let Ok(mut l) = lat.lock() {
                                l.push(now.duration_since(at).as_secs_f64() * 1000.0);
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    };
    let probe_producer = {
        let mut k = cfg.kafka.clone();
        k.producer.linger_ms = 0;
        BatchProducer::new(&k, BusMetrics::default())?
    };
    let bg_start = Instant::now();
    let ev0 = http_metric(&addr, "pitcrew_rules_events_total{stage=\"node\"}");
    let cpu1 = cpu_of(pid);
    let mut probes = 0u64;
    while bg_start.elapsed().as_secs_f64() < seconds {
        let node = format!("probe-{probes}");
        let mut e = examples::event(EventKind::GpuXid);
        e.node = node.clone();
        e.id = format!("probe-{stamp}-{probes}");
        e.time = Timestamp::now();
        let payload = encode(&e);
        if let Ok(mut s) = sent_at.lock() {
            s.insert(node.clone(), Instant::now());
        }
        probe_producer.send_batch(
            &t.events.name,
            &node,
            &[payload.as_slice()],
            Duration::from_secs(10),
        )?;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(probe_ms)).await;
    }
    let bg_secs = bg_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = bg.await;
    let _ = reader.join();
    let ev1 = http_metric(&addr, "pitcrew_rules_events_total{stage=\"node\"}");
    let cpu2 = cpu_of(pid);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| super::bench::quantile(&lat, q);
    println!(
        "  background: {:.0} events/s offered ({} sent), the stage evaluated {:.0} events/s using {:.0}% of a core",
        sent_bg.load(Ordering::Relaxed) as f64 / bg_secs,
        sent_bg.load(Ordering::Relaxed),
        (ev1 - ev0) / bg_secs,
        (cpu2 - cpu1) / bg_secs * 100.0
    );
    println!(
        "  event in Kafka -> action readable: {} of {probes} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    drop(stage);
    println!("  the stage's log: {}", log.display());
    Ok(())
}
