//! `pitcrew bench decode|kafka`: the numbers behind the contract's and the
//! plumbing's throughput claims, measured on the machine at hand.

#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::{
    broker_count, ensure_topic_specs, BusConfig, BusMetrics, Consumer, Producer, TopicSpec,
};
use pitcrew_contract::{decode, encode, examples, Event, EventKind, Timestamp};

use crate::cli::{BenchArgs, BenchWhat};

pub(crate) async fn run(config: Option<&Path>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Decode { seconds } => decode_bench(seconds),
        BenchWhat::Kmsg { seconds } => kmsg_bench(seconds),
        BenchWhat::Rules {
            seconds,
            nodes,
            gpus,
        } => super::bench_rules::run(seconds, nodes, gpus)?,
        BenchWhat::Pipeline {
            backlog,
            rate,
            seconds,
            probe_ms,
            partitions,
            max_batch,
        } => {
            super::bench_pipeline::run(
                config, backlog, rate, seconds, probe_ms, partitions, max_batch,
            )
            .await?
        }
        BenchWhat::Governor {
            seconds,
            nodes,
            out,
        } => super::bench_governor::run(seconds, nodes, out),
        BenchWhat::Remediate {
            nodes,
            probes,
            probe_ms,
            kubeconfig,
        } => super::bench_remediate::run(config, nodes, probes, probe_ms, kubeconfig).await?,
        BenchWhat::Kafka { events, partitions } => kafka_bench(config, events, partitions).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Distinct events shaped like the example `kind`, so the decoder cannot
/// benefit from decoding the very same bytes every time.
fn corpus(kinds: &[EventKind], n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut ev = examples::event(kinds[i % kinds.len()]);
            ev.node = format!("n{}", i % 4096);
            ev.id = format!("nvml-{}-{i}", ev.node);
            ev.time = ev.time.add_nanos(i64::try_from(i).unwrap_or(0) * 1_000_000);
            encode(&ev)
        })
        .collect()
}

fn measure(corpus: &[Vec<u8>], seconds: f64) -> (f64, f64) {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut decoded = 0u64;
    let mut bytes = 0u64;
    while start.elapsed() < budget {
        for msg in corpus {
            let ev: Event = match decode(black_box(msg)) {
                Ok(ev) => ev,
                Err(e) => panic_free_report(&e),
            };
            black_box(&ev);
            bytes += msg.len() as u64;
        }
        decoded += corpus.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    (decoded as f64 / secs, bytes as f64 / secs / 1e6)
}

fn panic_free_report(e: &pitcrew_contract::DecodeError) -> Event {
    eprintln!("bench corpus failed to decode: {e}");
    std::process::exit(1);
}

fn decode_bench(seconds: f64) {
    // A kernel-log Xid: the GPU is known by its PCI address only (~200 B).
    let kmsg_xid: Vec<Vec<u8>> = corpus(&[EventKind::GpuXid], 4096)
        .into_iter()
        .map(|bytes| {
            let mut ev: Event = decode(&bytes).unwrap_or_else(|e| panic_free_report(&e));
            ev.source = pitcrew_contract::Source::Kmsg;
            if let Some(gpu) = ev.gpu.as_mut() {
                gpu.uuid = None;
            }
            encode(&ev)
        })
        .collect();
    let avg = kmsg_xid.iter().map(Vec::len).sum::<usize>() / kmsg_xid.len();
    measure(&kmsg_xid, 0.3);
    let (rate, mbps) = measure(&kmsg_xid, seconds);
    println!("decode gpu.xid from kmsg (avg {avg} B): {rate:>10.0} events/s  {mbps:>7.1} MB/s  (one core)");
    let xid = corpus(&[EventKind::GpuXid], 4096);
    let avg = xid.iter().map(Vec::len).sum::<usize>() / xid.len();
    // Warm up caches and the allocator.
    measure(&xid, 0.3);
    let (rate, mbps) = measure(&xid, seconds);
    println!("decode gpu.xid from nvml (avg {avg} B): {rate:>10.0} events/s  {mbps:>7.1} MB/s  (one core)");
    let mix = corpus(EventKind::ALL, 4096);
    let avg = mix.iter().map(Vec::len).sum::<usize>() / mix.len();
    let (rate, mbps) = measure(&mix, seconds);
    println!("decode all kinds (avg {avg} B): {rate:>9.0} events/s  {mbps:>7.1} MB/s  (one core)");
}

fn kmsg_bench(seconds: f64) {
    let corpus = pitcrew_ingest::kmsg::benchmark_corpus();
    let bytes: usize = corpus.iter().map(|l| l.len() + 1).sum();
    let budget = Duration::from_secs_f64(seconds);
    let now = Timestamp::now();
    let mut events = Vec::new();
    let mut lines = 0u64;
    let mut produced = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        let mut src = pitcrew_ingest::kmsg::KmsgSource::new("n17", "boot", Some(now));
        for line in &corpus {
            src.push(black_box(line), now, &mut events);
            produced += events.len() as u64;
            events.clear();
        }
        src.flush(now, &mut events);
        produced += events.len() as u64;
        events.clear();
        lines += corpus.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let passes = lines as f64 / corpus.len() as f64;
    println!(
        "kmsg parse: {:.0} lines/s ({:.1} MB/s, one core) over a mix of {} lines, {:.1}% of them fault lines; {:.0} events per pass",
        lines as f64 / secs,
        passes * bytes as f64 / secs / 1e6,
        corpus.len(),
        100.0 * corpus.len().div_ceil(10) as f64 / corpus.len() as f64,
        produced as f64 / passes,
    );
}

/// CPU seconds used by this process so far (all threads, librdkafka's too).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    // Linux reports them in USER_HZ, which is 100 on every mainstream arch.
    (ticks(11) + ticks(12)) / 100.0
}

async fn kafka_bench(config: Option<&Path>, events: u64, partitions: i32) -> anyhow::Result<()> {
    let mut cfg = BusConfig::load(config)?;
    cfg.kafka.consumer.auto_offset_reset = "earliest".to_owned();
    let stamp = Timestamp::now().unix_nanos();
    let spec = TopicSpec {
        name: format!("pitcrew.bench-{stamp}"),
        partitions,
        retention_ms: Some(3_600_000),
        compact: false,
    };
    let replication = cfg
        .topics
        .replication_factor
        .min(broker_count(&cfg.kafka).await?);
    ensure_topic_specs(&cfg.kafka, &[&spec], replication).await?;
    println!(
        "topic {} ({partitions} partitions, replication {replication}) on {}",
        spec.name, cfg.kafka.brokers
    );

    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone())?;
    let template = examples::event(EventKind::GpuXid);
    let mut pending = VecDeque::new();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut bytes = 0u64;
    for i in 0..events {
        let mut ev = template.clone();
        ev.node = format!("n{}", i % 1024);
        ev.id = format!("bench-{i}");
        let payload = encode(&ev);
        bytes += payload.len() as u64;
        pending.push_back(
            producer
                .enqueue(&spec.name, &ev.node, &payload, None)
                .await?,
        );
        if pending.len() >= 50_000 {
            if let Some(p) = pending.pop_front() {
                p.wait().await?;
            }
        }
    }
    for p in pending {
        p.wait().await?;
    }
    let produce_wall = t0.elapsed().as_secs_f64();
    let produce_cpu = cpu_seconds() - cpu0;
    println!(
        "produce: {events} events ({:.0} B avg) in {produce_wall:.2} s = {:.0} events/s; {produce_cpu:.2} CPU s = {:.0} events/s per core (acks=all, idempotent)",
        bytes as f64 / events as f64,
        events as f64 / produce_wall,
        events as f64 / produce_cpu.max(1e-9),
    );
    drop(producer);

    let consumer = Consumer::new(
        &cfg.kafka,
        &format!("pitcrew-bench-{stamp}"),
        &[&spec.name],
        metrics,
    )?;
    let cpu0 = cpu_seconds();
    let mut t0 = None;
    let mut got = 0u64;
    while got < events {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        // Time from the first message: group join is not throughput.
        t0.get_or_insert_with(Instant::now);
        let ev: Event = decode(msg.payload().unwrap_or_default())?;
        black_box(&ev);
        consumer.processed(&msg)?;
        got += 1;
    }
    consumer.commit()?;
    let consume_wall = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let consume_cpu = cpu_seconds() - cpu0;
    println!(
        "consume+decode: {got} events in {consume_wall:.2} s = {:.0} events/s; {consume_cpu:.2} CPU s = {:.0} events/s per core (read_committed, offsets stored per message)",
        got as f64 / consume_wall.max(1e-9),
        got as f64 / consume_cpu.max(1e-9),
    );
    Ok(())
}

/// The `q` quantile of sorted samples (nearest rank); NaN when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    sorted[((last as f64 * q).round() as usize).min(last)]
}
