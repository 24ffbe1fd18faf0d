//! `pitcrew bench rules`: the pure evaluator with the default pack over a
//! simulated fleet's event mix, on one core. Measures events/s and bytes of
//! state per GPU.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use pitcrew_contract::{examples, Event, EventData, EventKind, IbCounterName, Timestamp};
use pitcrew_rules::{compile, default_pack, EngineConfig, Inventory, NodeInfo, Output, Pipeline};

/// One second of a fleet's telemetry: per GPU a thermal, ECC, PCIe replay,
/// NVLink and (every 10 s) row-remap sample; per node InfiniBand counters
/// for 8 HCAs, a heartbeat, and a training step per GPU rank;
/// and about one fault in 10,000 events.
fn fleet_second(nodes: u32, gpus: u32) -> Vec<Event> {
    let mut out = Vec::new();
    for n in 0..nodes {
        let node = format!("n{n}");
        let push = |kind: EventKind,
                    gpu: Option<u32>,
                    f: &dyn Fn(&mut EventData),
                    out: &mut Vec<Event>| {
            let mut e = examples::event(kind);
            e.node = node.clone();
            e.id = format!("{node}-{}", out.len());
            if let (Some(g), Some(r)) = (gpu, e.gpu.as_mut()) {
                r.index = Some(g);
                r.uuid = None;
                r.pci = None;
            }
            f(&mut e.data);
            out.push(e);
        };
        for g in 0..gpus {
            push(
                EventKind::GpuThermal,
                Some(g),
                &|d| {
                    if let EventData::GpuThermal(t) = d {
                        t.throttle.clear();
                        t.clock_event_reasons = 0;
                    }
                },
                &mut out,
            );
            push(
                EventKind::GpuEcc,
                Some(g),
                &|d| {
                    if let EventData::GpuEcc(x) = d {
                        x.corrected_delta = 0;
                        x.uncorrected_delta = 0;
                    }
                },
                &mut out,
            );
            push(
                EventKind::GpuPcieReplay,
                Some(g),
                &|d| {
                    if let EventData::GpuPcieReplay(x) = d {
                        x.delta = 0;
                    }
                },
                &mut out,
            );
            push(
                EventKind::GpuNvlink,
                Some(g),
                &|d| {
                    if let EventData::GpuNvlink(x) = d {
                        x.delta = 0;
                    }
                },
                &mut out,
            );
            if n % 10 == 0 {
                push(
                    EventKind::GpuRowRemap,
                    Some(g),
                    &|d| {
                        if let EventData::GpuRowRemap(x) = d {
                            x.pending = false;
                            x.failure = false;
                        }
                    },
                    &mut out,
                );
            }
            push(
                EventKind::JobStep,
                None,
                &|d| {
                    if let EventData::JobStep(x) = d {
                        x.traffic_bytes = Some(1 << 30);
                    }
                },
                &mut out,
            );
        }
        for _hca in 0..8 {
            push(
                EventKind::NetIbCounter,
                None,
                &|d| {
                    if let EventData::NetIbCounter(x) = d {
                        x.counter = IbCounterName::SymbolError;
                        x.delta = 0;
                    }
                },
                &mut out,
            );
        }
        push(EventKind::NodeHeartbeat, None, &|_| {}, &mut out);
    }
    // Sprinkle faults: corrected replays, app Xids, symbol errors.
    let len = out.len();
    for i in (0..len).step_by(10_000) {
        let e = &mut out[i];
        match &mut e.data {
            EventData::GpuPcieReplay(x) => x.delta = 3,
            EventData::NetIbCounter(x) => x.delta = 5,
            EventData::GpuThermal(t) => {
                t.throttle = vec![pitcrew_contract::ThrottleReason::SwPowerCap]
            }
            _ => {}
        }
    }
    out
}

pub(crate) fn run(seconds: f64, nodes: u32, gpus: u32) -> anyhow::Result<()> {
    let set = compile(&default_pack()).map_err(|d| anyhow::anyhow!("default pack: {d:?}"))?;
    let inventory = Inventory::new(
        (0..nodes)
            .map(|n| NodeInfo {
                name: format!("n{n}"),
                rack: Some(format!("r{}", n / 32)),
                leaf_switch: Some(format!("leaf-{}", n / 32)),
                gpus: Some(gpus),
                ..NodeInfo::default()
            })
            .collect(),
    );
    let mut template = fleet_second(nodes, gpus);
    let per_second = template.len();
    let rules = set.program.rules().len();
    let mut pipeline = Pipeline::new(&set.program, Arc::new(inventory), EngineConfig::default());
    let base = Timestamp::from_unix_millis(1_800_000_000_000);
    // Events within a fleet-second are spread over the second.
    let spread: Vec<i64> = (0..per_second)
        .map(|i| (i as i64 * 1_000_000_000) / per_second as i64)
        .collect();

    println!(
        "rules bench: {} rules, {nodes} nodes x {gpus} GPUs, {per_second} events per fleet-second",
        rules
    );
    // Warm up over 60 fleet-seconds so windows and absence state fill.
    let mut second: i64 = 0;
    let mut outputs = Vec::new();
    let mut incidents = 0usize;
    let mut play = |pipeline: &mut Pipeline, template: &mut Vec<Event>, second: i64| {
        for (e, off) in template.iter_mut().zip(&spread) {
            e.time = base.add_nanos(second * 1_000_000_000 + off);
            pipeline.process(black_box(e), &mut outputs);
        }
        incidents += outputs
            .iter()
            .filter(|o| matches!(o, Output::Incident(_)))
            .count();
        black_box(outputs.drain(..));
    };
    for _ in 0..60 {
        play(&mut pipeline, &mut template, second);
        second += 1;
    }
    let start = Instant::now();
    let mut processed = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        play(&mut pipeline, &mut template, second);
        second += 1;
        processed += per_second as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let total_gpus = u64::from(nodes) * u64::from(gpus);
    let size = pipeline.state_size();
    let (late, overflow) = pipeline.totals();
    let bytes = size.bytes;
    println!(
        "  {:.2} M events/s on one core ({processed} events in {secs:.2} s, {} fleet-seconds)",
        processed as f64 / secs / 1e6,
        processed / per_second as u64
    );
    println!(
        "  state: {} entries, ~{} bytes, {:.0} bytes per GPU; late {late}, overflow {overflow}, incident messages {incidents}",
        size.entries,
        bytes,
        bytes as f64 / total_gpus as f64,
    );
    Ok(())
}
