//! The one evaluation path: the stages as the streaming service runs them
//! (partitioned, re-keyed, rebuilt, advanced when idle) give what the
//! in-process `Pipeline` gives, which is what `pitcrew test` and `replay`
//! run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{examples, Event, EventData, EventKind, Timestamp};
use pitcrew_rules::{
    compile, default_pack, Emit, EngineConfig, Inventory, NodeInfo, Output, Pipeline, Program,
    Span, Stage, StageConfig, StageKind, TestCase, ROUTE_LABEL, TEST_EPOCH,
};

/// A partitioner unlike the pipeline's single partition (any stable one
/// will do: the point is that the split does not change the outputs).
fn by_bytes(key: &str, partitions: i32) -> i32 {
    let sum: u32 = key.bytes().map(u32::from).sum();
    i32::try_from(sum % u32::try_from(partitions.max(1)).unwrap()).unwrap()
}

fn describe(o: &Output) -> String {
    match o {
        Output::Incident(i) => serde_json::to_string(i).unwrap(),
        Output::Action(a) => serde_json::to_string(a).unwrap(),
    }
}

fn sorted(outputs: &[Output]) -> Vec<String> {
    let mut v: Vec<String> = outputs.iter().map(describe).collect();
    v.sort();
    v
}

fn engine_config(t: &TestCase) -> EngineConfig {
    EngineConfig {
        expect_inventory: t.inventory_absence,
        ..EngineConfig::default()
    }
}

fn program_for(set_program: &Program, t: &TestCase) -> Program {
    match &t.rules {
        Some(names) => set_program.subset(names, true),
        None => set_program.clone(),
    }
}

/// The service's way: `node_parts` node-stage partitions, `group_parts`
/// group-stage partitions, forwards delivered by key, every partition held
/// from the start.
fn partitioned(
    program: &Program,
    inventory: Arc<Inventory>,
    engine: EngineConfig,
    events: &[Event],
    until: Timestamp,
    node_parts: i32,
    group_parts: i32,
) -> Vec<Output> {
    let plan = Arc::new(program.stage_plan());
    let cfg = StageConfig {
        engine,
        lookback_cap: Span::from_secs(3600),
        idle_grace: Span::from_secs(10),
        node_partitions: node_parts,
        partitioner: by_bytes,
    };
    let horizon = program.horizon();
    let mut node = Stage::new(
        StageKind::Node,
        Arc::clone(&plan),
        horizon,
        Arc::clone(&inventory),
        cfg.clone(),
    );
    let mut group = Stage::new(StageKind::Group, plan, horizon, inventory, cfg);
    for p in 0..node_parts {
        node.begin_rebuild(p, 0);
    }
    for p in 0..group_parts {
        group.begin_rebuild(p, 0);
    }
    let mut offsets: BTreeMap<(StageKind, i32), i64> = BTreeMap::new();
    let mut next = |k: StageKind, p: i32| {
        let o = offsets.entry((k, p)).or_insert(0);
        *o += 1;
        *o - 1
    };
    let mut out = Vec::new();
    let deliver = |emits: Vec<Emit>,
                   group: &mut Stage,
                   out: &mut Vec<Output>,
                   next: &mut dyn FnMut(StageKind, i32) -> i64| {
        let mut queue = emits;
        while !queue.is_empty() {
            let mut more = Vec::new();
            for e in queue {
                match e {
                    Emit::Output(o) => out.push(o),
                    Emit::Forward { key, event } => {
                        assert!(event.labels.contains_key(ROUTE_LABEL));
                        let p = by_bytes(&key, group_parts);
                        let off = next(StageKind::Group, p);
                        group.process(p, off, &event, Duration::ZERO, &mut more);
                    }
                }
            }
            queue = more;
        }
    };
    for ev in events {
        let p = by_bytes(&ev.node, node_parts);
        let off = next(StageKind::Node, p);
        let mut emits = Vec::new();
        node.process(p, off, ev, Duration::ZERO, &mut emits);
        deliver(emits, &mut group, &mut out, &mut next);
    }
    let mut emits = Vec::new();
    node.advance_to(until, &mut emits);
    group.advance_to(until, &mut emits);
    deliver(emits, &mut group, &mut out, &mut next);
    out
}

#[test]
fn partitioned_stages_give_the_pipelines_outputs_for_every_pack_test() {
    let set = compile(&default_pack()).unwrap();
    let mut compared = 0;
    for t in &set.tests {
        let program = program_for(&set.program, t);
        let inventory = Arc::new(Inventory::new(t.topology.clone()));
        let mut events = t.events.clone();
        events.sort_by_key(|e| e.time);
        let until = TEST_EPOCH.add_nanos(t.until.0);

        let mut expected = Vec::new();
        let mut pipeline = Pipeline::new(&program, Arc::clone(&inventory), engine_config(t));
        for e in &events {
            pipeline.process(e, &mut expected);
        }
        pipeline.advance(until, &mut expected);

        for (node_parts, group_parts) in [(1, 1), (4, 3), (7, 5)] {
            let got = partitioned(
                &program,
                Arc::clone(&inventory),
                engine_config(t),
                &events,
                until,
                node_parts,
                group_parts,
            );
            assert_eq!(
                sorted(&got),
                sorted(&expected),
                "{}:{} {} with {node_parts} node and {group_parts} group partitions",
                t.file,
                t.line,
                t.name
            );
        }
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} pack tests");
}

fn heartbeat(node: &str, secs: i64, driver: Option<&str>) -> Event {
    let mut e = examples::event(EventKind::NodeHeartbeat);
    e.node = node.into();
    e.time = TEST_EPOCH.add_nanos(secs * 1_000_000_000);
    e.id = format!("hb-{node}-{secs}");
    if let EventData::NodeHeartbeat(h) = &mut e.data {
        h.driver_version = driver.map(str::to_owned);
    }
    e
}

fn xid(node: &str, secs: i64, code: u32) -> Event {
    let mut e = examples::event(EventKind::GpuXid);
    e.node = node.into();
    e.time = TEST_EPOCH.add_nanos(secs * 1_000_000_000);
    e.id = format!("x-{node}-{secs}-{code}");
    if let EventData::GpuXid(x) = &mut e.data {
        x.code = code;
    }
    e
}

fn pack_stage(kind: StageKind, nodes: &[&str], grace_secs: i64) -> Stage {
    let set = compile(&default_pack()).unwrap();
    let inventory = Inventory::new(
        nodes
            .iter()
            .map(|n| NodeInfo {
                name: (*n).to_owned(),
                ..NodeInfo::default()
            })
            .collect(),
    );
    Stage::new(
        kind,
        Arc::new(set.program.stage_plan()),
        set.program.horizon(),
        Arc::new(inventory),
        StageConfig {
            idle_grace: Span::from_secs(grace_secs),
            ..StageConfig::single_partition(EngineConfig::default())
        },
    )
}

#[test]
fn the_node_stage_forwards_what_group_rules_read_keyed_by_group() {
    let mut node = pack_stage(StageKind::Node, &["n1"], 10);
    node.begin_rebuild(0, 0);
    let mut emits = Vec::new();
    node.process(
        0,
        0,
        &heartbeat("n1", 0, Some("570.86.15")),
        Duration::ZERO,
        &mut emits,
    );
    // The first driver version a node reports reaches the driver route.
    assert!(emits.iter().any(|e| matches!(e,
        Emit::Forward { key, event } if key == "driver_version/570.86.15"
            && event.labels.get(ROUTE_LABEL).map(String::as_str) == Some("driver_version"))));
    emits.clear();
    node.process(
        0,
        1,
        &heartbeat("n1", 1, Some("570.86.15")),
        Duration::ZERO,
        &mut emits,
    );
    assert!(emits.is_empty(), "{emits:?}");
    node.process(0, 2, &xid("n1", 2, 119), Duration::ZERO, &mut emits);
    assert!(emits.iter().any(|e| matches!(e,
        Emit::Forward { key, .. } if key == "driver_version/570.86.15")));
    // A node with no known driver still reaches the route's member rules.
    emits.clear();
    node.process(0, 3, &xid("n2", 3, 119), Duration::ZERO, &mut emits);
    assert!(emits.iter().any(|e| matches!(e,
        Emit::Forward { key, .. } if key == "driver_version/")));
}

#[test]
fn a_rewind_asks_for_a_rebuild_and_the_past_produces_nothing() {
    let mut node = pack_stage(StageKind::Node, &["n1"], 10);
    assert!(node.needs_rebuild(0, 5));
    node.begin_rebuild(0, 5);
    assert!(!node.needs_rebuild(0, 5));
    assert!(node.needs_rebuild(0, 4), "going back is a rewind");
    let opens = |emits: &[Emit]| {
        emits
            .iter()
            .filter(|e| {
                matches!(e, Emit::Output(Output::Incident(i)) if i.rule == "gpu-fallen-off-bus"
                && i.status == pitcrew_contract::IncidentStatus::Open)
            })
            .count()
    };
    // Live, the fault opens its incident...
    let mut fresh = pack_stage(StageKind::Node, &["n1"], 10);
    fresh.begin_rebuild(0, 0);
    let mut emits = Vec::new();
    fresh.process(0, 0, &xid("n1", 0, 79), Duration::ZERO, &mut emits);
    fresh.process(0, 1, &xid("n1", 1, 79), Duration::ZERO, &mut emits);
    fresh.advance_to(TEST_EPOCH.add_nanos(120_000_000_000), &mut emits);
    assert_eq!(opens(&emits), 1, "{emits:?}");
    // ...restored, the same fault rebuilds the state without writing it
    // again: the repeat a second later opens nothing.
    node.restore(0, &xid("n1", 0, 79));
    let mut emits = Vec::new();
    node.process(0, 5, &xid("n1", 1, 79), Duration::ZERO, &mut emits);
    node.advance_to(TEST_EPOCH.add_nanos(120_000_000_000), &mut emits);
    assert_eq!(
        opens(&emits),
        0,
        "the restored fault's incident was already written: {emits:?}"
    );
    assert!(!node.needs_rebuild(0, 6));
    node.skip(0, 6);
    assert!(node.needs_rebuild(0, 6));
    assert!(!node.needs_rebuild(0, 7));
    node.forget(0);
    assert!(node.needs_rebuild(0, 7));
}

#[test]
fn a_quiet_partition_moves_on_after_the_grace_and_fires_its_absences() {
    let mut node = pack_stage(StageKind::Node, &["n1", "n2"], 10);
    node.begin_rebuild(0, 0);
    let mut emits = Vec::new();
    let read_at = Duration::from_secs(100);
    node.process(0, 0, &heartbeat("n1", 0, None), read_at, &mut emits);
    node.process(0, 1, &heartbeat("n2", 0, None), read_at, &mut emits);
    emits.clear();
    // 65 s of wall time but 10 s of grace: event time is only 55 s on.
    node.advance_idle(read_at + Duration::from_secs(65), &mut emits);
    assert!(emits.is_empty(), "{emits:?}");
    // 75 s: 65 s on, past the heartbeat rule's 60 s.
    node.advance_idle(read_at + Duration::from_secs(75), &mut emits);
    let missing: Vec<String> = emits
        .iter()
        .filter_map(|e| match e {
            Emit::Output(Output::Incident(i)) if i.rule == "node-heartbeat-missing" => {
                Some(i.blame.name.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(missing, ["n1", "n2"]);
}

fn facility_event(kind: EventKind, device: &str, racks: &[&str], secs: i64) -> Event {
    let mut e = examples::event(kind);
    e.node = device.into();
    e.time = TEST_EPOCH.add_nanos(secs * 1_000_000_000);
    e.id = format!("f-{device}-{secs}");
    e.data
        .set_facility_racks(racks.iter().map(|r| (*r).to_owned()).collect());
    e
}

/// Facility events are keyed by their device on `pitcrew.events`; the node
/// stage sends a copy to the group stage for each rack they serve, where a
/// rack-keyed rule sees them beside the rack's nodes.
#[test]
fn facility_events_reach_each_rack_they_serve_beside_its_nodes() {
    let rules = r#"
[[rule]]
name = "rack-trouble"
severity = "critical"
summary = "rack {rack}: {members} members in trouble"
when = { kinds = ["facility.ups", "facility.device", "gpu.xid"] }
fan_in = { group = "rack", member = "node", min = 2, within = "30s" }
"#;
    let set = compile(&[pitcrew_rules::SourceFile {
        name: "t.toml".into(),
        text: rules.into(),
    }])
    .unwrap();
    let mut inventory = Inventory::new(
        ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                name: (*n).to_owned(),
                rack: Some(if i < 2 { "r1" } else { "r2" }.to_owned()),
                ..NodeInfo::default()
            })
            .collect(),
    );
    // The PDU's racks come from the inventory: its events name none.
    inventory.insert_facility(pitcrew_rules::FacilityInfo {
        name: "pdu-r2".into(),
        kind: "pdu".into(),
        racks: vec!["r2".into()],
        ..Default::default()
    });
    let inventory = Arc::new(inventory);
    let mut node = Stage::new(
        StageKind::Node,
        Arc::new(set.program.stage_plan()),
        set.program.horizon(),
        Arc::clone(&inventory),
        StageConfig::single_partition(EngineConfig::default()),
    );
    node.begin_rebuild(0, 0);
    let mut emits = Vec::new();
    let ups = facility_event(EventKind::FacilityUps, "ups-1", &["r1", "r2"], 1);
    node.process(0, 0, &ups, Duration::ZERO, &mut emits);
    let keys: Vec<&str> = emits
        .iter()
        .filter_map(|e| match e {
            Emit::Forward { key, event } => {
                assert_eq!(event.data.facility_racks().len(), 1, "{event:?}");
                Some(key.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["rack/r1", "rack/r2"]);
    emits.clear();
    let pdu_down = facility_event(EventKind::FacilityDevice, "pdu-r2", &[], 2);
    node.process(0, 1, &pdu_down, Duration::ZERO, &mut emits);
    assert!(
        emits
            .iter()
            .any(|e| matches!(e, Emit::Forward { key, .. } if key == "rack/r2")),
        "{emits:?}"
    );

    // End to end through both stages: r2 has the UPS, the PDU and n3's
    // Xid (3 members); r1 the UPS and n1 (2).
    let mut pipeline = Pipeline::new(&set.program, inventory, EngineConfig::default());
    let mut out = Vec::new();
    for e in [ups, pdu_down, xid("n1", 3, 79), xid("n3", 4, 79)] {
        pipeline.process(&e, &mut out);
    }
    pipeline.advance(TEST_EPOCH.add_nanos(60_000_000_000), &mut out);
    // Every member's event lands in its rack's incident.
    let events_of = |rack: &str| -> Vec<String> {
        let mut ids: Vec<String> = out
            .iter()
            .filter_map(|o| match o {
                Output::Incident(i)
                    if i.rule == "rack-trouble"
                        && i.blame.to_string() == format!("rack/{rack}") =>
                {
                    Some(i.events.clone())
                }
                _ => None,
            })
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    assert_eq!(events_of("r1"), ["f-ups-1-1", "x-n1-3-79"]);
    assert_eq!(events_of("r2"), ["f-pdu-r2-2", "f-ups-1-1", "x-n3-4-79"]);
}

/// The keying choice's cost, measured by hand (ignored in the test run):
/// `cargo test --release -p pitcrew-rules --test pipeline -- --ignored --nocapture`.
/// A rack-keyed rule over facility and node events: each facility event is
/// sent to the group stage once per rack it serves.
#[test]
#[ignore = "a benchmark: run it with --ignored"]
#[allow(clippy::print_stdout)]
fn bench_facility_events_fanned_out_to_their_racks() {
    let rules = r#"
[[rule]]
name = "rack-power"
severity = "critical"
summary = "rack {rack}: {members} members without power"
when = { kinds = ["facility.ups", "facility.pdu", "node.heartbeat"] }
fan_in = { group = "rack", member = "node", min = 1000, within = "30s" }
"#;
    let set = compile(&[pitcrew_rules::SourceFile {
        name: "t.toml".into(),
        text: rules.into(),
    }])
    .unwrap();
    let nodes: Vec<NodeInfo> = (0..512)
        .map(|i| NodeInfo {
            name: format!("n{i}"),
            rack: Some(format!("r{}", i / 8)),
            ..NodeInfo::default()
        })
        .collect();
    let inventory = Arc::new(Inventory::new(nodes));
    let n = 200_000i64;
    let run = |make: &dyn Fn(i64) -> Event| {
        let mut pipeline = Pipeline::new(
            &set.program,
            Arc::clone(&inventory),
            EngineConfig::default(),
        );
        let events: Vec<Event> = (0..n).map(make).collect();
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        for e in &events {
            pipeline.process(e, &mut out);
            out.clear();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let node_ns = run(&|i| heartbeat(&format!("n{}", i % 512), i / 512, None));
    let pdu_ns = run(&|i| {
        let mut e = facility_event(
            EventKind::FacilityPdu,
            &format!("pdu-r{}", i % 64),
            &[],
            i / 64,
        );
        e.data.set_facility_racks(vec![format!("r{}", i % 64)]);
        e
    });
    let ups_ns = run(&|i| {
        let r = (i % 16) * 4;
        let racks: Vec<String> = (r..r + 4).map(|x| format!("r{x}")).collect();
        let refs: Vec<&str> = racks.iter().map(String::as_str).collect();
        facility_event(
            EventKind::FacilityUps,
            &format!("ups-{}", i % 16),
            &refs,
            i / 16,
        )
    });
    println!(
        "per event through both stages: node heartbeat {node_ns:.0} ns, PDU reading (1 rack) {pdu_ns:.0} ns, UPS reading (4 racks) {ups_ns:.0} ns"
    );
}
