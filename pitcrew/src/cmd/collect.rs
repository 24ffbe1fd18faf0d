//! `pitcrew collect`: the node agent. Built so far: `--once --stdout`
//! (NVML, sysfs, dcgm-exporter and the heartbeat) and
//! `--kmsg-file FILE --stdout`.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;

use pitcrew_contract::{encode, Event, Timestamp};
use pitcrew_ingest::heartbeat::{heartbeat, HostFacts};
use pitcrew_ingest::nvml::{Gpus, NvmlError, NvmlGpus, NvmlSource};

use crate::cli::CollectArgs;

/// What `collect` cannot do yet (the rest of issue #3).
pub(crate) const NOT_YET: &str =
    "the kafka agent, /dev/kmsg following, the ipmi and kubernetes sources";

/// `Ok(None)`: the requested mode is not built yet.
pub(crate) fn run(args: &CollectArgs) -> anyhow::Result<Option<ExitCode>> {
    if let (Some(file), true) = (&args.kmsg_file, args.stdout) {
        return kmsg_file(args, file).map(Some);
    }
    if !(args.once && args.stdout) {
        return Ok(None);
    }
    let node = node_name(args)?;
    let facts = HostFacts::read(&args.proc_root)?;
    let now = Timestamp::now();
    let mut events: Vec<Event> = Vec::new();
    let (driver, gpu_count) = match NvmlGpus::load() {
        Ok(gpus) => {
            let mut src = NvmlSource::new(&node, &facts.boot_id);
            let (evs, errors) = src.sample(&gpus, now);
            for e in errors {
                tracing::warn!(source = "nvml", error = %e, "sample failed");
            }
            events.extend(evs);
            (gpus.driver_version().ok(), gpus.count().ok())
        }
        Err(NvmlError::Absent(why)) => {
            tracing::warn!(source = "nvml", reason = %why, "nvml is absent: no gpu telemetry from this node");
            eprintln!("pitcrew collect: nvml is absent ({why}); sampling without gpus");
            (None, None)
        }
        Err(e) => return Err(e.into()),
    };
    let mut sysfs = pitcrew_ingest::sysfs::SysfsSource::new(&args.sys_root, &node, &facts.boot_id);
    let (evs, errors) = sysfs.sample(now);
    for e in errors {
        tracing::warn!(source = "sysfs", error = %e, "sample failed");
    }
    events.extend(evs);
    if let Some(url) = &args.dcgm_url {
        let body = pitcrew_ingest::dcgm::scrape(url, std::time::Duration::from_secs(5))?;
        let (samples, bad) = pitcrew_ingest::dcgm::parse_prometheus(&body);
        if bad > 0 {
            tracing::warn!(
                source = "dcgm",
                lines = bad,
                "unparsable metric lines skipped"
            );
        }
        let scrape = pitcrew_ingest::dcgm::DcgmScrape::from_samples(&samples);
        events.extend(
            pitcrew_ingest::dcgm::DcgmAdapter::new(&node, &facts.boot_id).ingest(&scrape, now),
        );
    }
    events.push(heartbeat(&node, &facts, driver, gpu_count, now));
    print_events(&events)?;
    Ok(Some(ExitCode::SUCCESS))
}

fn node_name(args: &CollectArgs) -> anyhow::Result<String> {
    Ok(match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string(args.proc_root.join("sys/kernel/hostname"))?
            .trim()
            .to_owned(),
    })
}

fn print_events(events: &[Event]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for ev in events {
        out.write_all(&encode(ev))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `--kmsg-file FILE --stdout`: the events a saved kernel log produces.
/// Lines are read as bytes (a log may hold invalid UTF-8); monotonic
/// stamps cannot be placed on the wall clock for a file from an unknown
/// boot, so events carry the time they were read.
fn kmsg_file(args: &CollectArgs, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let node = node_name(args)?;
    let boot_id = HostFacts::read(&args.proc_root)
        .map(|f| f.boot_id)
        .unwrap_or_default();
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
    );
    let mut src = pitcrew_ingest::kmsg::KmsgSource::new(&node, &boot_id, None);
    let now = Timestamp::now();
    let mut events = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        src.push(&String::from_utf8_lossy(&line), now, &mut events);
    }
    src.flush(now, &mut events);
    print_events(&events)?;
    Ok(ExitCode::SUCCESS)
}
