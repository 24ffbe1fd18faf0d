//! `pitcrew collect`: the node agent. Built so far: `--once --stdout`
//! with the NVML source and the heartbeat.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;

use pitcrew_contract::{encode, Event, Timestamp};
use pitcrew_ingest::heartbeat::{heartbeat, HostFacts};
use pitcrew_ingest::nvml::{Gpus, NvmlError, NvmlGpus, NvmlSource};

use crate::cli::CollectArgs;

/// What `collect` cannot do yet (the rest of issue #3).
pub(crate) const NOT_YET: &str =
    "the kafka agent, the kernel-log, sysfs, ipmi, dcgm and kubernetes sources";

/// `Ok(None)`: the requested mode is not built yet.
pub(crate) fn run(args: &CollectArgs) -> anyhow::Result<Option<ExitCode>> {
    if !(args.once && args.stdout) || args.kmsg_file.is_some() {
        return Ok(None);
    }
    let node = match &args.node {
        Some(n) => n.clone(),
        None => std::fs::read_to_string(args.proc_root.join("sys/kernel/hostname"))?
            .trim()
            .to_owned(),
    };
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
    events.push(heartbeat(&node, &facts, driver, gpu_count, now));
    let mut out = std::io::stdout().lock();
    for ev in &events {
        out.write_all(&encode(ev))?;
        out.write_all(b"\n")?;
    }
    Ok(Some(ExitCode::SUCCESS))
}
