//! `pitcrew replay`: run rules over recorded events and print what would
//! have fired. Backtesting a rule before it goes live.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_contract::{decode, Event, Timestamp};
use pitcrew_rules::{compile, EngineConfig, Output, Pipeline, Span};

use crate::cli::ReplayArgs;
use pitcrew::rulefiles;

/// What a replay saw, for its summary.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) events: u64,
    pub(crate) bad_lines: u64,
    pub(crate) skipped: u64,
    pub(crate) outputs: Vec<Output>,
}

pub(crate) fn run(config_path: Option<&Path>, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let files = rulefiles::load(&args.rules)?;
    let set = match compile(&files) {
        Ok(s) => s,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            anyhow::bail!("the rules do not compile ({} diagnostics)", diags.len());
        }
    };
    let inventory = rulefiles::inventory(args.inventory.as_deref())?;
    let lateness = Span::parse(&args.lateness).map_err(|e| anyhow::anyhow!("--lateness: {e}"))?;
    let from = parse_time(args.from.as_deref(), "--from")?;
    let to = parse_time(args.to.as_deref(), "--to")?;
    let cfg = EngineConfig {
        allowed_lateness: lateness,
        ..EngineConfig::default()
    };
    // The streaming service's two stages, in one process.
    let mut pipeline = Pipeline::new(&set.program, Arc::new(inventory), cfg);
    let tally = match (&args.events, &args.topic) {
        (Some(path), None) => replay_file(&mut pipeline, path, from, to)?,
        (None, Some(topic)) => replay_topic(config_path, &mut pipeline, topic, from, to)?,
        _ => anyhow::bail!("give --events FILE (JSON lines) or --topic TOPIC"),
    };
    print_table(&tally, pipeline.totals().0, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_time(s: Option<&str>, flag: &str) -> anyhow::Result<Option<Timestamp>> {
    s.map(|s| Timestamp::parse_rfc3339(s).with_context(|| flag.to_owned()))
        .transpose()
}

/// Feeds `pipeline` from a Kafka topic (every partition, merged in time
/// order), from `--from` (default: the beginning) to `--to` (default: the
/// end the topic had when the replay began), with progress on stderr.
fn replay_topic(
    config: Option<&Path>,
    pipeline: &mut Pipeline,
    topic: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> anyhow::Result<Tally> {
    let bus = pitcrew_bus::BusConfig::load(config)?;
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut last_time: Option<Timestamp> = None;
    let mut bad = 0u64;
    let mut outputs = Vec::new();
    pitcrew_bus::read_topic_merged(
        &bus.kafka,
        topic,
        from.map_or(0, Timestamp::unix_millis),
        to.map(Timestamp::unix_millis),
        Duration::from_secs(60),
        |payload| match decode::<Event>(payload) {
            Ok(event) => {
                if from.is_some_and(|f| event.time < f) || to.is_some_and(|t| event.time > t) {
                    tally.skipped += 1;
                    return;
                }
                last_time = Some(last_time.map_or(event.time, |t| t.max(event.time)));
                pipeline.process(&event, &mut outputs);
                tally.events += 1;
            }
            Err(_) => bad += 1,
        },
        |read, finished, total| {
            eprintln!(
                "replay: {read} messages, {finished}/{total} partitions done, {:.0} messages/s",
                read as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        },
    )?;
    tally.bad_lines = bad;
    if let Some(end) = to.or(last_time) {
        pipeline.advance(end, &mut outputs);
    }
    tally.outputs = outputs;
    Ok(tally)
}

/// Feeds `pipeline` from a JSON-lines file, with progress on stderr.
pub(crate) fn replay_file(
    pipeline: &mut Pipeline,
    path: &Path,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> anyhow::Result<Tally> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut tally = Tally::default();
    let mut read_bytes: u64 = 0;
    let started = Instant::now();
    let mut next_progress = started + Duration::from_secs(1);
    let mut last_time = None;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("read {} line {}", path.display(), n + 1))?;
        read_bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = match decode(line.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                tally.bad_lines += 1;
                if tally.bad_lines <= 10 {
                    eprintln!("{}:{}: skipped: {e}", path.display(), n + 1);
                }
                continue;
            }
        };
        if from.is_some_and(|f| event.time < f) || to.is_some_and(|t| event.time > t) {
            tally.skipped += 1;
            continue;
        }
        last_time = Some(last_time.map_or(event.time, |t: Timestamp| t.max(event.time)));
        pipeline.process(&event, &mut tally.outputs);
        tally.events += 1;
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            let pct = (read_bytes * 100).checked_div(size).unwrap_or(0);
            let rate = tally.events as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "replay: {pct}% ({} events, {:.0} events/s, {} outputs)",
                tally.events,
                rate,
                tally.outputs.len()
            );
        }
    }
    // Let timers due within the range fire (absences, holds, resolves).
    if let Some(end) = to.or(last_time) {
        pipeline.advance(end, &mut tally.outputs);
    }
    Ok(tally)
}

pub(crate) fn print_table(tally: &Tally, late: u64, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for o in &tally.outputs {
            let line = match o {
                Output::Incident(i) => serde_json::to_string(i)?,
                Output::Action(a) => serde_json::to_string(a)?,
            };
            writeln!(out, "{line}")?;
        }
    } else {
        writeln!(
            out,
            "{:<24}  {:<9} {:<34} {:<24} {:<14} summary",
            "time", "what", "rule / plan", "blame / target", "status"
        )?;
        for o in &tally.outputs {
            let (at, what, name, target, status, text) = match o {
                Output::Incident(i) => (
                    i.at,
                    "incident",
                    i.rule.as_str(),
                    i.blame.to_string(),
                    format!("{:?}", i.status).to_lowercase(),
                    i.summary.as_str(),
                ),
                Output::Action(a) => (
                    a.requested_at,
                    "action",
                    a.plan.as_str(),
                    a.target.to_string(),
                    "requested".to_owned(),
                    a.reason.as_str(),
                ),
            };
            writeln!(
                out,
                "{:<24}  {what:<9} {name:<34} {target:<24} {status:<14} {text}",
                at.to_string()
            )?;
        }
    }
    let incidents = tally
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::Incident(_)))
        .count();
    let actions = tally.outputs.len() - incidents;
    eprintln!(
        "replay: {} events, {incidents} incident messages, {actions} actions, {late} late, {} undecodable lines or messages, {} outside the range",
        tally.events, tally.bad_lines, tally.skipped
    );
    Ok(())
}
