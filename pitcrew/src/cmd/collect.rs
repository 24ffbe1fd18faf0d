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

/// The one-shot modes: `--kmsg-file FILE --stdout` and `--once --stdout`.
pub(crate) fn run(args: &CollectArgs) -> anyhow::Result<ExitCode> {
    if let (Some(file), true) = (&args.kmsg_file, args.stdout) {
        return kmsg_file(args, file);
    }
    if args.kmsg_file.is_some() || args.stdout != args.once {
        // --kmsg-file without --stdout, or only one of --once/--stdout.
        anyhow::bail!("use --kmsg-file FILE --stdout, --once --stdout, or neither (the agent)");
    }
    let node = node_name(args)?;
    let facts = HostFacts::read(&args.proc_root)?;
    let now = Timestamp::now();
    let mut events: Vec<Event> = Vec::new();
    let nvml = if args.no_nvml {
        Err(NvmlError::Absent("--no-nvml".to_owned()))
    } else {
        NvmlGpus::load()
    };
    let (driver, gpu_count) = match nvml {
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
    if let Some(target) = bmc_target(args)? {
        let mut conn = pitcrew_ingest::ipmi::Bmc::open(&target, std::time::Duration::from_secs(5))?;
        // --once has no history: every SEL entry and sensor is reported.
        let mut src = pitcrew_ingest::ipmi::IpmiSource::new(&node, &facts.boot_id, Some(0));
        events.extend(src.sel_events(&conn.sel_entries()?, now));
        events.extend(src.sensor_events(&conn.threshold_sensors()?, now));
    }
    events.push(heartbeat(&node, &facts, driver, gpu_count, now));
    print_events(&events)?;
    Ok(ExitCode::SUCCESS)
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
    // Identical records of the file (same text, stamps aside) are coalesced
    // as the agent would.
    let mut coalescer =
        pitcrew_ingest::coalesce::Coalescer::new(std::time::Duration::from_secs(1), 4096);
    let mut out = Vec::new();
    for ev in events {
        coalescer.push(ev, &mut out);
    }
    coalescer.flush(&mut out);
    print_events(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The agent: every source into the spool, the spool into Kafka.
pub(crate) async fn agent(
    config: Option<&std::path::Path>,
    args: &CollectArgs,
) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use pitcrew::http;
    use pitcrew::service::agent::SpoolDrain;
    use pitcrew_bus::{BatchProducer, BusConfig, BusMetrics};
    use pitcrew_ingest::agent::{AgentConfig, CollectMetrics, Collector};
    use pitcrew_ingest::spool::Spool;

    let bus = BusConfig::load(config)?;
    let node = node_name(args)?;
    let spool = Arc::new(Mutex::new(Spool::open(
        &args.state_dir.join("spool"),
        args.spool_max_bytes,
    )?));
    let mut registry = prometheus_client::registry::Registry::default();
    let bus_metrics = BusMetrics::default();
    bus_metrics.register(&mut registry);
    let metrics = CollectMetrics::default();
    metrics.register(&mut registry);
    let stop = Arc::new(AtomicBool::new(false));
    let spooled = Arc::new(tokio::sync::Notify::new());

    let collector = Collector::new(
        AgentConfig {
            node: node.clone(),
            proc_root: args.proc_root.clone(),
            sys_root: args.sys_root.clone(),
            kmsg: (!args.no_kmsg).then(|| args.kmsg.clone()),
            state_dir: args.state_dir.clone(),
            interval: std::time::Duration::from_millis(args.interval_ms.max(10)),
            dcgm_url: args.dcgm_url.clone(),
            nvml: !args.no_nvml,
            simulated_gpus: args.simulate_gpus,
            bmc: bmc_target(args)?,
            redfish: redfish_target(args)?,
            kubernetes: if args.k8s_node_conditions {
                Some((
                    pitcrew_ingest::k8s::KubeAccess::in_cluster()?,
                    args.k8s_node_name.clone().unwrap_or_else(|| node.clone()),
                ))
            } else {
                None
            },
        },
        Arc::clone(&spool),
        metrics,
        Arc::clone(&stop),
        {
            let spooled = Arc::clone(&spooled);
            Box::new(move || spooled.notify_one())
        },
    )?;
    let collector_thread = std::thread::Builder::new()
        .name("collector".to_owned())
        .spawn(move || collector.run())?;

    let drain = SpoolDrain {
        spool: Arc::clone(&spool),
        producer: Arc::new(BatchProducer::new(&bus.kafka, bus_metrics)?),
        topic: bus.topics.events.name.clone(),
        node: node.clone(),
        delivery_timeout: std::time::Duration::from_millis(
            u64::from(bus.kafka.producer.delivery_timeout_ms) + 1000,
        ),
        spooled: Arc::clone(&spooled),
        stop: Arc::clone(&stop),
        last_delivery: Arc::new(Mutex::new(std::time::Instant::now())),
    };
    let (addr, _server) = http::serve(&args.listen, Arc::new(registry), drain.health()).await?;
    tracing::info!(node = %node, listen = %addr, topic = %bus.topics.events.name, "collect agent running");
    let drain = tokio::spawn(drain.run());

    pitcrew::service::shutdown_signal().await;
    tracing::info!("stopping: draining what kafka will take");
    stop.store(true, Ordering::Relaxed);
    let _ = collector_thread.join();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    Ok(ExitCode::SUCCESS)
}

/// The BMC password, from `--bmc-password-file` or the environment, never
/// argv; `flag` names what needs it.
fn bmc_password(args: &CollectArgs, flag: &str) -> anyhow::Result<pitcrew_ingest::ipmi::Secret> {
    pitcrew_ingest::ipmi::Secret::load(
        "bmc password",
        args.bmc_password_file.as_deref(),
        Some("PITCREW_BMC_PASSWORD"),
    )
    .map_err(|e| anyhow::anyhow!("{flag} needs --bmc-password-file or PITCREW_BMC_PASSWORD ({e})"))
}

/// A Redfish BMC from flags, the password from a file or the environment.
fn redfish_target(
    args: &CollectArgs,
) -> anyhow::Result<Option<pitcrew_ingest::redfish::RedfishTarget>> {
    let Some(base) = &args.bmc_redfish_url else {
        return Ok(None);
    };
    let password = bmc_password(args, "--bmc-redfish-url")?;
    use pitcrew_ingest::redfish::RedfishTls;
    let tls = match (&args.bmc_redfish_ca, args.bmc_redfish_insecure) {
        (Some(ca), _) => RedfishTls::Ca(ca.clone()),
        (None, true) => RedfishTls::Insecure,
        (None, false) => RedfishTls::System,
    };
    Ok(Some(pitcrew_ingest::redfish::RedfishTarget {
        base: base.clone(),
        username: args.bmc_user.clone(),
        password,
        tls,
    }))
}

/// The BMC from flags: a local IPMI device, or lanplus with the password
/// from a file or the environment.
fn bmc_target(args: &CollectArgs) -> anyhow::Result<Option<pitcrew_ingest::ipmi::BmcEndpoint>> {
    if let Some(device) = &args.bmc_device {
        return Ok(Some(pitcrew_ingest::ipmi::BmcEndpoint::Local(
            device.clone(),
        )));
    }
    let Some(address) = &args.bmc_address else {
        return Ok(None);
    };
    let password = bmc_password(args, "--bmc-address")?;
    Ok(Some(pitcrew_ingest::ipmi::BmcEndpoint::Lan(
        pitcrew_ingest::ipmi::BmcTarget {
            address: address.clone(),
            username: args.bmc_user.clone(),
            password,
        },
    )))
}
