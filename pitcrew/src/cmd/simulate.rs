//! `pitcrew simulate`: a fleet's telemetry into a real Kafka at a chosen
//! rate, with the faults of a scenario file played on the way. Sampling
//! rounds (every node's periodic telemetry, `pitcrew-simulate`) come as
//! often as the rate asks; each round is produced keyed by node, as the
//! agents do, and acknowledged before the next. Prints the achieved rate
//! every 5 s and at the end.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_bus::{ensure_topics, BatchProducer, BusConfig, BusMetrics};
use pitcrew_contract::{encode, Event, Timestamp};
use pitcrew_rules::Span;
use pitcrew_simulate::{Fleet, FleetSpec, Player};

use crate::cli::SimulateArgs;

pub(crate) async fn run(config: Option<&Path>, args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    ensure_topics(&bus.kafka, &bus.topics)
        .await
        .context("create pitcrew's topics")?;
    let scenario = args
        .scenario
        .as_deref()
        .map(pitcrew::rulefiles::scenario)
        .transpose()?;
    let spec = FleetSpec {
        nodes: args.nodes.max(1),
        ..FleetSpec::default()
    };
    let per_round = spec.events_per_round();
    let rate = args.rate.max(1);
    let interval = Duration::from_secs_f64(per_round as f64 / rate as f64);
    let run_id = format!("sim{}", Timestamp::now().unix_millis());
    let mut fleet = Fleet::new(spec.clone(), run_id.clone());
    let mut player = scenario.as_ref().map(|s| Player::new(s, run_id));
    let producer = Arc::new(BatchProducer::new(&bus.kafka, BusMetrics::default())?);
    let topic = bus.topics.events.name.clone();
    let limit = match &args.duration {
        Some(d) => Some(Span::parse(d).map_err(|e| anyhow::anyhow!("--duration: {e}"))?),
        None => None,
    };
    println!(
        "simulate: {} nodes x {} GPUs, {per_round} events per round, a round every {:.1} ms for {rate} events/s into {topic} on {}{}",
        spec.nodes,
        spec.gpus,
        interval.as_secs_f64() * 1e3,
        bus.kafka.brokers,
        scenario.as_ref().map(|s| format!(", scenario \"{}\"", s.name)).unwrap_or_default()
    );
    let start = Timestamp::now();
    let started = Instant::now();
    let mut next = Instant::now();
    let (mut total, mut window, mut window_start) = (0u64, 0u64, Instant::now());
    let shutdown = pitcrew::service::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let elapsed = Span(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
        if limit.is_some_and(|l| elapsed >= l) {
            break;
        }
        let mut events = player
            .as_mut()
            .map(|p| p.due(start, elapsed))
            .unwrap_or_default();
        fleet.sample(Timestamp::now(), &|_| true, &mut events);
        let n = events.len() as u64;
        send_events(&producer, &topic, events).await?;
        total += n;
        window += n;
        if window_start.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:>6.1} s: {:.0} events/s (target {rate})",
                started.elapsed().as_secs_f64(),
                window as f64 / window_start.elapsed().as_secs_f64()
            );
            window = 0;
            window_start = Instant::now();
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::select! {
                () = tokio::time::sleep(next - now) => {}
                () = &mut shutdown => break,
            }
        } else {
            // Behind: the machine or the broker is the limit; do not
            // build up a debt.
            next = now;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulate: {total} events in {secs:.1} s: {:.0} events/s (target {rate}){}",
        total as f64 / secs,
        player
            .map(|p| format!(
                ", {} of {} scenario events played",
                p.total() - p.remaining(),
                p.total()
            ))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Produces `events` keyed by node, as the agents do, and waits for every
/// acknowledgement (off the async threads).
pub(crate) async fn send_events(
    producer: &Arc<BatchProducer>,
    topic: &str,
    events: Vec<Event>,
) -> anyhow::Result<()> {
    let producer = Arc::clone(producer);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let encoded: Vec<(String, Vec<u8>)> =
            events.iter().map(|e| (e.node.clone(), encode(e))).collect();
        let records: Vec<(&str, &[u8])> = encoded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        producer.send_keyed(&topic, &records, Duration::from_secs(30))
    })
    .await??;
    Ok(())
}
