//! The evaluator on hand-made programs: sequences, lateness, determinism,
//! bounds; property tests for windows and the incident state machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use pitcrew_contract::{examples, Event, EventData, EventKind, IncidentStatus, Timestamp};
use pitcrew_rules::{compile, Engine, EngineConfig, Inventory, Output, SourceFile, TEST_EPOCH};
use proptest::prelude::*;

fn program(text: &str) -> Arc<pitcrew_rules::Program> {
    match compile(&[SourceFile {
        name: "t.toml".into(),
        text: text.into(),
    }]) {
        Ok(s) => Arc::new(s.program),
        Err(d) => panic!("{d:?}"),
    }
}

fn ev(kind: EventKind, node: &str, at_ms: i64, id: &str, f: impl FnOnce(&mut EventData)) -> Event {
    let mut e = examples::event(kind);
    e.node = node.into();
    e.time = TEST_EPOCH.add_nanos(at_ms * 1_000_000);
    e.id = id.into();
    f(&mut e.data);
    e
}

fn xid(node: &str, at_ms: i64, code: u32) -> Event {
    ev(
        EventKind::GpuXid,
        node,
        at_ms,
        &format!("x-{node}-{at_ms}-{code}"),
        |d| {
            if let EventData::GpuXid(x) = d {
                x.code = code;
            }
        },
    )
}

fn run(p: &Arc<pitcrew_rules::Program>, events: &[Event], until_ms: i64) -> Vec<Output> {
    let mut e = Engine::new(
        p.clone(),
        Arc::new(Inventory::default()),
        EngineConfig::default(),
    );
    let mut out = Vec::new();
    for x in events {
        e.process(x);
        out.extend(e.drain());
    }
    e.advance(TEST_EPOCH.add_nanos(until_ms * 1_000_000));
    out.extend(e.drain());
    out
}

fn opened(out: &[Output]) -> Vec<(String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Incident(i) if i.status == IncidentStatus::Open => {
                Some((i.rule.clone(), i.blame.to_string()))
            }
            _ => None,
        })
        .collect()
}

const SEQ: &str = r#"
[[rule]]
name = "62-then-154"
[rule.sequence]
first = { kind = "gpu.xid", where = { "data.code" = 62 } }
followed_by = { kind = "gpu.xid", where = { "data.code" = 154 } }
within = "10s"

[[rule]]
name = "79-without-aer"
[rule.sequence]
first = { kind = "gpu.xid", where = { "data.code" = 79 } }
not_followed_by = { kind = "pcie.aer" }
within = "5s"
"#;

#[test]
fn sequence_followed_within() {
    let p = program(SEQ);
    let out = run(&p, &[xid("n1", 0, 62), xid("n1", 4_000, 154)], 20_000);
    assert_eq!(opened(&out), vec![("62-then-154".into(), "node/n1".into())]);
    // Too late, or on another node: nothing.
    let out = run(
        &p,
        &[
            xid("n1", 0, 62),
            xid("n1", 11_000, 154),
            xid("n2", 11_500, 154),
        ],
        30_000,
    );
    assert!(opened(&out).is_empty(), "{out:?}");
    // B before A does not pair.
    let out = run(&p, &[xid("n1", 0, 154), xid("n1", 1_000, 62)], 30_000);
    assert!(opened(&out).is_empty(), "{out:?}");
}

#[test]
fn sequence_not_followed() {
    let p = program(SEQ);
    let aer = ev(EventKind::PcieAer, "n1", 2_000, "aer-1", |_| {});
    let out = run(&p, &[xid("n1", 0, 79), aer], 20_000);
    assert!(opened(&out).is_empty(), "{out:?}");
    let out = run(&p, &[xid("n1", 0, 79)], 20_000);
    assert_eq!(
        opened(&out),
        vec![("79-without-aer".into(), "node/n1".into())]
    );
    if let Some(Output::Incident(i)) = out.first() {
        assert_eq!(i.at, TEST_EPOCH.add_nanos(5_000_000_000));
    }
}

const EACH: &str = "[[rule]]\nname = \"x79\"\nplan = \"reboot_node\"\nwhen = { kind = \"gpu.xid\", where = { \"data.code\" = 79 } }\n";

#[test]
fn late_events_are_counted_and_ignored() {
    let p = program(EACH);
    let mut e = Engine::new(p, Arc::new(Inventory::default()), EngineConfig::default());
    e.process(&xid("n1", 60_000, 13));
    e.process(&xid("n2", 1_000, 79)); // 59 s behind, lateness 5 s
    assert_eq!(e.stats().late, 1);
    assert!(e.drain().is_empty());
    e.process(&xid("n3", 57_000, 79)); // within the lateness
    assert_eq!(e.stats().late, 1);
    assert_eq!(e.drain().len(), 2);
}

#[test]
fn same_input_same_ids() {
    let p = program(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pack/network.toml"))
            .unwrap_or_default(),
    );
    let events: Vec<Event> = (0..40)
        .map(|i| {
            ev(
                EventKind::NetIbCounter,
                &format!("n{i}"),
                i * 100,
                &format!("ib-{i}"),
                |d| {
                    if let EventData::NetIbCounter(c) = d {
                        c.counter = pitcrew_contract::IbCounterName::LinkDowned;
                        c.delta = 1;
                    }
                },
            )
        })
        .collect();
    let a = run(&p, &events, 120_000);
    let b = run(&p, &events, 120_000);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn keys_past_the_bound_are_refused_and_counted() {
    let p = program("[[rule]]\nname = \"w\"\nkey = \"node,gpu\"\nwhen = { kind = \"gpu.pcie_replay\" }\nwindow = { over = \"1m\", agg = \"sum\", field = \"data.delta\" }\nthreshold = { op = \">\", fire = 8 }\n");
    let cfg = EngineConfig {
        max_keys_per_rule: 10,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(p, Arc::new(Inventory::default()), cfg);
    for i in 0..25 {
        e.process(&replay(&format!("n{i}"), 0, 1));
    }
    assert_eq!(e.state_entries(), 10);
    assert_eq!(e.stats().overflow, 15);
}

const WINDOW: &str = "[[rule]]\nname = \"w\"\nwhen = { kind = \"gpu.pcie_replay\" }\nwindow = { over = \"60s\", agg = \"sum\", field = \"data.delta\", step = \"1s\" }\nthreshold = { op = \">\", fire = 8, clear = 4 }\n";

fn replay(node: &str, at_s: i64, delta: u64) -> Event {
    ev(
        EventKind::GpuPcieReplay,
        node,
        at_s * 1000,
        &format!("r-{at_s}"),
        |d| {
            if let EventData::GpuPcieReplay(c) = d {
                c.delta = delta;
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The sliding sum fires exactly when a brute-force sum over the last
    /// 60 s (in whole seconds, the window's step) goes above 8, and the
    /// incident opens and resolves alternately, never twice in a row.
    #[test]
    fn window_sum_matches_brute_force(samples in proptest::collection::vec((0i64..5, 0u64..6), 1..60)) {
        let p = program(WINDOW);
        let mut t = 0;
        let mut events = Vec::new();
        for (gap, d) in samples {
            t += gap;
            events.push(replay("n1", t, d));
        }
        let mut e = Engine::new(p, Arc::new(Inventory::default()), EngineConfig { allowed_lateness: pitcrew_rules::Span::ZERO, ..EngineConfig::default() });
        let mut firing = false;
        for (i, x) in events.iter().enumerate() {
            e.process(x);
            for o in e.drain() {
                if let Output::Incident(inc) = o {
                    match inc.status {
                        IncidentStatus::Open => { prop_assert!(!firing); firing = true; }
                        IncidentStatus::Resolved => { prop_assert!(firing); firing = false; }
                        _ => {}
                    }
                }
            }
            let now = x.time.unix_nanos() / 1_000_000_000;
            let sum: u64 = events[..=i].iter()
                .filter(|y| y.time.unix_nanos() / 1_000_000_000 > now - 60)
                .map(|y| if let EventData::GpuPcieReplay(c) = &y.data { c.delta } else { 0 })
                .sum();
            if sum > 8 { prop_assert!(firing, "sum {} at {}s but not firing", sum, now); }
            if sum < 4 { prop_assert!(!firing, "sum {} at {}s but firing", sum, now); }
        }
    }

    /// Any interleaving of the same events on distinct keys yields the same
    /// set of incident ids (order-independent across keys), and re-running
    /// the same order yields identical outputs.
    #[test]
    fn incident_ids_are_deterministic(order in Just((0..12).collect::<Vec<usize>>()).prop_shuffle()) {
        let p = program(EACH);
        let events: Vec<Event> = order.iter().map(|&i| xid(&format!("n{i}"), 1000, 79)).collect();
        let a = run(&p, &events, 5000);
        let b = run(&p, &events, 5000);
        prop_assert_eq!(&a, &b);
        let mut ids: Vec<String> = a.iter().filter_map(|o| match o { Output::Incident(i) => Some(i.id.clone()), _ => None }).collect();
        ids.sort();
        let sorted: Vec<Event> = (0..12).map(|i| xid(&format!("n{i}"), 1000, 79)).collect();
        let mut ids2: Vec<String> = run(&p, &sorted, 5000).iter().filter_map(|o| match o { Output::Incident(i) => Some(i.id.clone()), _ => None }).collect();
        ids2.sort();
        prop_assert_eq!(ids, ids2);
    }

    /// Any stream, late or not, through the whole default pack: every event
    /// is counted, an incident opens at most once and closes only after it
    /// opened, every action belongs to an incident opened just before it,
    /// and the same stream again gives the same outputs.
    #[test]
    fn arbitrary_event_streams_keep_the_incident_lifecycle(stream in proptest::collection::vec((0usize..28, 0i64..600_000, 0u32..200, 0u32..4), 0..200)) {
        let set = compile(&pitcrew_rules::default_pack()).unwrap_or_default();
        let program = Arc::new(set.program);
        let events: Vec<Event> = stream
            .iter()
            .enumerate()
            .map(|(i, &(k, at, code, node))| {
                let mut x = examples::event(EventKind::ALL[k]);
                x.node = format!("n{node}");
                x.id = format!("e{i}");
                x.time = Timestamp::from_unix_nanos(TEST_EPOCH.unix_nanos() + at * 1_000_000);
                if let EventData::GpuXid(xx) = &mut x.data { xx.code = code; }
                x
            })
            .collect();
        let run_once = || {
            let mut e = Engine::new(program.clone(), Arc::new(Inventory::default()), EngineConfig::default());
            let mut out = Vec::new();
            for x in &events {
                e.process(x);
                out.extend(e.drain());
            }
            e.advance(TEST_EPOCH.add_nanos(3_600_000_000_000));
            out.extend(e.drain());
            (out, e.stats().events, e.stats().late)
        };
        let (out, counted, late) = run_once();
        prop_assert_eq!(counted, events.len() as u64);
        prop_assert!(late <= counted);
        let mut opened = std::collections::HashSet::new();
        let mut closed = std::collections::HashSet::new();
        let mut last_opened: Option<String> = None;
        for o in &out {
            match o {
                Output::Incident(i) => match i.status {
                    IncidentStatus::Open | IncidentStatus::Suppressed => {
                        prop_assert!(opened.insert(i.id.clone()) || i.status == IncidentStatus::Suppressed, "{} opened twice", i.id);
                        last_opened = Some(i.id.clone());
                    }
                    IncidentStatus::Update => prop_assert!(opened.contains(&i.id)),
                    IncidentStatus::Resolved => {
                        prop_assert!(opened.contains(&i.id), "{} resolved before it opened", i.id);
                        prop_assert!(closed.insert(i.id.clone()), "{} resolved twice", i.id);
                    }
                },
                Output::Action(a) => prop_assert_eq!(Some(&a.incident), last_opened.as_ref()),
            }
        }
        prop_assert_eq!(run_once().0, out);
    }
}
