//! Rule tests on virtual time: `[[test]]` blocks in rule files.
//!
//! ```toml
//! [[test]]
//! name = "Xid 79 then fatal AER: one incident, one reboot"
//! topology = [{ nodes = "n[1-4]", rack = "r1", leaf_switch = "leaf-1" }]
//! until = "1m"                 # run the clock this far past the start
//!
//! [[test.event]]
//! at = "0s"
//! node = "n17"                 # or a range, "n[1-32]", one event each
//! kind = "gpu.xid"
//! gpu = 3
//! data = { code = 79 }         # over the kind's example body
//!
//! [[test.expect]]
//! incident = "gpu-fallen-off-bus"
//! blame = "node/n17"
//! plan = "reboot_node"
//!
//! [[test.expect]]
//! action = "reboot_node"
//! target = "node/n17"
//! ```
//!
//! A test is strict unless it says `strict = false`: every incident opened
//! or suppressed and every action requested must be expected, so a test
//! with no `expect` asserts silence.

use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

use pitcrew_contract::{examples, Event, EventKind, IncidentStatus, Timestamp};
use toml::de::DeTable;

use crate::compile::{to_json, Cx};
use crate::duration::Span;
use crate::engine::{EngineConfig, Output};
use crate::inventory::{expand, Inventory, NodeInfo};
use crate::pipeline::Pipeline;
use crate::program::Program;

/// Where virtual time starts: 2026-01-01T00:00:00Z.
pub const TEST_EPOCH: Timestamp = Timestamp::from_unix_millis(1_767_225_600_000);

/// One `[[test]]`.
#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    pub file: String,
    pub line: usize,
    pub rules: Option<Vec<String>>,
    pub topology: Vec<NodeInfo>,
    pub events: Vec<Event>,
    pub expects: Vec<Expect>,
    pub strict: bool,
    pub until: Span,
    /// Whether inventory-aware absence rules expect the topology's nodes.
    pub inventory_absence: bool,
}

/// What a test expects to see.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// An incident of this rule, or an action with this plan.
    pub incident: Option<String>,
    pub action: Option<String>,
    pub status: Option<IncidentStatus>,
    pub blame: Option<String>,
    pub plan: Option<String>,
    pub severity: Option<String>,
    pub parent: Option<String>,
    pub summary: Option<String>,
    pub at: Option<Span>,
    pub count: u32,
    pub line: usize,
}

impl Expect {
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.incident {
            let _ = write!(s, "incident {r}");
            let st = self.status.map_or("open", status_name);
            let _ = write!(s, " {st}");
        }
        if let Some(p) = &self.action {
            let _ = write!(s, "action {p}");
        }
        for (k, v) in [
            ("blame", &self.blame),
            ("plan", &self.plan),
            ("severity", &self.severity),
            ("parent", &self.parent),
            ("summary~", &self.summary),
        ] {
            if let Some(v) = v {
                let _ = write!(s, " {k}={v}");
            }
        }
        if let Some(at) = self.at {
            let _ = write!(s, " at={at}");
        }
        s
    }
}

fn status_name(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Update => "update",
        IncidentStatus::Resolved => "resolved",
        IncidentStatus::Suppressed => "suppressed",
    }
}

/// The outcome of one test.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub name: String,
    pub file: String,
    pub line: usize,
    /// Empty when the test passed; otherwise the diff, one line each.
    pub failures: Vec<String>,
    /// What the engine produced, one line each (for the diff).
    pub actual: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

pub(crate) fn parse_test(
    cx: &mut Cx<'_, '_>,
    t: (&DeTable<'_>, Range<usize>),
    at: &Range<usize>,
) -> Option<TestCase> {
    cx.keys(
        t.clone(),
        &[
            "name",
            "rules",
            "topology",
            "event",
            "expect",
            "strict",
            "until",
            "inventory_absence",
        ],
        "[[test]]",
    );
    let (name, nspan) = cx.req_str(t.clone(), "name", at, "[[test]]")?;
    let line = cx.map.position(nspan.start).0;
    let file = cx
        .map
        .diag(&nspan, crate::diag::Level::Error, String::new())
        .file;
    let rules = match cx.get(t.clone(), "rules") {
        Some(v) => match v.get_ref().as_array() {
            Some(a) => Some(
                a.iter()
                    .filter_map(|x| x.get_ref().as_str().map(str::to_owned))
                    .collect(),
            ),
            None => {
                cx.err(&v.span(), "`rules` must be an array of rule names".into());
                None
            }
        },
        None => None,
    };
    let mut topology = Vec::new();
    if let Some(v) = cx.get(t.clone(), "topology") {
        for (tt, span) in cx.tables(v, "topology") {
            topo(cx, (tt, span), &mut topology);
        }
    }
    let strict = cx.opt_bool(t.clone(), "strict").unwrap_or(true);
    let inventory_absence = cx.opt_bool(t.clone(), "inventory_absence").unwrap_or(false);
    let until_given = cx.opt_span(t.clone(), "until").map(|u| u.0);
    let mut events = Vec::new();
    let mut ok = true;
    if let Some(v) = cx.get(t.clone(), "event") {
        for (i, (et, span)) in cx.tables(v, "test.event").into_iter().enumerate() {
            match event(cx, (et, span), &name, i, &mut events) {
                Some(()) => {}
                None => ok = false,
            }
        }
    }
    let mut expects = Vec::new();
    if let Some(v) = cx.get(t.clone(), "expect") {
        for (et, span) in cx.tables(v, "test.expect") {
            match expect(cx, (et, span)) {
                Some(e) => expects.push(e),
                None => ok = false,
            }
        }
    }
    if !ok {
        return None;
    }
    let last = events
        .iter()
        .map(|e| e.time.unix_nanos() - TEST_EPOCH.unix_nanos())
        .max()
        .unwrap_or(0);
    let until = until_given.unwrap_or(Span(last + Span::from_secs(30).0));
    Some(TestCase {
        name,
        file,
        line,
        rules,
        topology,
        events,
        expects,
        strict,
        until,
        inventory_absence,
    })
}

fn topo(cx: &mut Cx<'_, '_>, t: (&DeTable<'_>, Range<usize>), out: &mut Vec<NodeInfo>) {
    cx.keys(
        t.clone(),
        &[
            "nodes",
            "rack",
            "leaf_switch",
            "pdu",
            "bmc",
            "driver_version",
            "gpus",
        ],
        "test topology",
    );
    let Some((pattern, span)) = cx.req_str(t.clone(), "nodes", &t.1, "a topology entry") else {
        return;
    };
    let s = |cx: &mut Cx<'_, '_>, k: &str| cx.opt_str(t.clone(), k).map(|x| x.0);
    let rack = s(cx, "rack");
    let leaf = s(cx, "leaf_switch");
    let pdu = s(cx, "pdu");
    let bmc = s(cx, "bmc");
    let driver = s(cx, "driver_version");
    let gpus = cx.opt_num(t.clone(), "gpus").map(|g| g.0 as u32);
    match expand(&pattern) {
        Ok(names) => {
            for (n, num) in names {
                let sub = |o: &Option<String>| o.as_ref().map(|x| x.replace("{n}", &num));
                out.push(NodeInfo {
                    name: n,
                    rack: sub(&rack),
                    leaf_switch: sub(&leaf),
                    pdu: sub(&pdu),
                    bmc: sub(&bmc),
                    driver_version: sub(&driver),
                    gpus,
                    ..NodeInfo::default()
                });
            }
        }
        Err(m) => cx.err(&span, m),
    }
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

pub(crate) fn event(
    cx: &mut Cx<'_, '_>,
    t: (&DeTable<'_>, Range<usize>),
    test: &str,
    idx: usize,
    out: &mut Vec<Event>,
) -> Option<()> {
    cx.keys(
        t.clone(),
        &[
            "at", "node", "kind", "gpu", "data", "labels", "source", "count", "every", "repeat",
            "id",
        ],
        "[[test.event]]",
    );
    let at = match cx.opt_span(t.clone(), "at") {
        Some((a, _)) => a,
        None if cx.get(t.clone(), "at").is_some() => return None,
        None => Span::ZERO,
    };
    let (node, nspan) = cx.req_str(t.clone(), "node", &t.1, "[[test.event]]")?;
    let (kind_s, kspan) = cx.req_str(t.clone(), "kind", &t.1, "[[test.event]]")?;
    let Some(kind) = EventKind::parse(&kind_s) else {
        let hint = crate::compile::suggest(&kind_s, EventKind::ALL.iter().map(|k| k.as_str()));
        cx.err(&kspan, format!("unknown event kind `{kind_s}`{hint}"));
        return None;
    };
    let every = cx.opt_span(t.clone(), "every").map_or(Span::ZERO, |x| x.0);
    let repeat = cx
        .opt_num(t.clone(), "repeat")
        .map_or(1, |r| r.0.max(1.0) as usize);
    if repeat > 100_000 {
        cx.err(&t.1, "`repeat` is at most 100000".into());
        return None;
    }
    let mut base = serde_json::to_value(examples::event(kind)).unwrap_or_default();
    if let Some(obj) = base.as_object_mut() {
        obj.remove("labels");
        obj.remove("count");
    }
    let gpu = cx
        .get(t.clone(), "gpu")
        .map(|v| (to_json(v.get_ref()), v.span()));
    let data = cx
        .get(t.clone(), "data")
        .map(|v| (to_json(v.get_ref()), v.span()));
    let labels = cx.get(t.clone(), "labels").map(|v| to_json(v.get_ref()));
    let source = cx.opt_str(t.clone(), "source").map(|s| s.0);
    let count = cx.opt_num(t.clone(), "count").map(|c| c.0 as u64);
    let id_given = cx.opt_str(t.clone(), "id").map(|s| s.0);
    if let Some(obj) = base.as_object_mut() {
        if let Some((g, _)) = &gpu {
            let g = match g {
                serde_json::Value::Number(_) => serde_json::json!({ "index": g }),
                other => other.clone(),
            };
            obj.insert("gpu".into(), g);
        }
        if let Some(l) = labels {
            obj.insert("labels".into(), l);
        }
        if let Some(s) = source {
            obj.insert("source".into(), s.into());
        }
        if let Some(c) = count {
            obj.insert("count".into(), c.into());
        }
    }
    if let Some((d, _)) = &data {
        if let Some(slot) = base.get_mut("data") {
            merge(slot, d.clone());
        }
    }
    let names = match expand(&node) {
        Ok(n) => n,
        Err(m) => {
            cx.err(&nspan, m);
            return None;
        }
    };
    let series: Vec<(usize, &String)> = (0..repeat)
        .flat_map(|r| names.iter().map(move |(n, _)| (r, n)))
        .collect();
    let total = series.len();
    for (i, (r, n)) in series.into_iter().enumerate() {
        let mut doc = base.clone();
        let time = TEST_EPOCH.add_nanos(at.0 + every.0 * i as i64);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("node".into(), n.as_str().into());
            obj.insert("time".into(), time.to_string().into());
            let id = match &id_given {
                Some(id) if total == 1 => id.clone(),
                Some(id) => format!("{id}-{n}-{r}"),
                None => format!("{}-{idx}-{n}-{r}", slug(test)),
            };
            obj.insert("id".into(), id.into());
        }
        match serde_json::from_value::<Event>(doc) {
            Ok(e) => out.push(e),
            Err(e) => {
                let span = data.as_ref().map_or(t.1.clone(), |d| d.1.clone());
                cx.err(&span, format!("this event does not fit kind {kind}: {e}"));
                return None;
            }
        }
    }
    Some(())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

fn expect(cx: &mut Cx<'_, '_>, t: (&DeTable<'_>, Range<usize>)) -> Option<Expect> {
    cx.keys(
        t.clone(),
        &[
            "incident", "action", "status", "blame", "target", "plan", "severity", "parent",
            "summary", "at", "count",
        ],
        "[[test.expect]]",
    );
    let line = cx.map.position(t.1.start).0;
    let s = |cx: &mut Cx<'_, '_>, k: &str| cx.opt_str(t.clone(), k).map(|x| x.0);
    let incident = s(cx, "incident");
    let action = s(cx, "action");
    if incident.is_some() == action.is_some() {
        cx.err(
            &t.1,
            "an expectation names an `incident` (a rule) or an `action` (a plan), one of them"
                .into(),
        );
        return None;
    }
    let status = match cx.opt_str(t.clone(), "status") {
        Some((st, span)) => Some(match st.as_str() {
            "open" => IncidentStatus::Open,
            "update" => IncidentStatus::Update,
            "resolved" => IncidentStatus::Resolved,
            "suppressed" => IncidentStatus::Suppressed,
            _ => {
                cx.err(
                    &span,
                    "`status` is open, update, resolved or suppressed".into(),
                );
                return None;
            }
        }),
        None => None,
    };
    let blame = s(cx, "blame").or_else(|| s(cx, "target"));
    let count = match cx.opt_num(t.clone(), "count") {
        Some((c, _)) if c >= 0.0 && c.fract() == 0.0 => c as u32,
        Some((_, span)) => {
            cx.err(&span, "`count` is a whole number (0 for \"never\")".into());
            return None;
        }
        None => 1,
    };
    Some(Expect {
        incident,
        action,
        status,
        blame,
        plan: s(cx, "plan"),
        severity: s(cx, "severity"),
        parent: s(cx, "parent"),
        summary: s(cx, "summary"),
        at: cx.opt_span(t.clone(), "at").map(|a| a.0),
        count,
        line,
    })
}

fn severity_name(s: pitcrew_contract::Severity) -> &'static str {
    match s {
        pitcrew_contract::Severity::Info => "info",
        pitcrew_contract::Severity::Warning => "warning",
        pitcrew_contract::Severity::Critical => "critical",
    }
}

/// One line per output, for diffs and `replay`.
pub fn describe_output(o: &Output) -> String {
    match o {
        Output::Incident(i) => {
            let mut s = format!(
                "incident {} {} blame={} severity={}",
                i.rule,
                status_name(i.status),
                i.blame,
                severity_name(i.severity)
            );
            if let Some(p) = &i.plan {
                let _ = write!(s, " plan={}", p.plan);
            }
            if let Some(p) = &i.parent {
                let _ = write!(s, " parent={p}");
            }
            let _ = write!(s, " at={} \"{}\"", offset(i.at), i.summary);
            s
        }
        Output::Action(a) => format!(
            "action {} target={} at={}",
            a.plan,
            a.target,
            offset(a.requested_at)
        ),
    }
}

fn offset(t: Timestamp) -> String {
    let d = t.unix_nanos() - TEST_EPOCH.unix_nanos();
    if d >= 0 && d < Span::from_secs(10 * 365 * 86400).0 {
        Span(d).to_string()
    } else {
        t.to_string()
    }
}

/// Runs one test against `program`.
pub fn run_test(program: &Program, test: &TestCase) -> TestResult {
    let mut failures = Vec::new();
    let prog = match &test.rules {
        Some(names) => {
            for n in names {
                if !program.rule_names().any(|r| r == n) {
                    failures.push(format!("test names unknown rule `{n}`"));
                }
            }
            program.subset(names, true)
        }
        None => program.clone(),
    };
    let mut pipeline = Pipeline::new(
        &prog,
        Arc::new(Inventory::new(test.topology.clone())),
        EngineConfig {
            expect_inventory: test.inventory_absence,
            ..EngineConfig::default()
        },
    );
    let mut events = test.events.clone();
    events.sort_by_key(|e| e.time);
    let mut outputs = Vec::new();
    for e in &events {
        pipeline.process(e, &mut outputs);
    }
    pipeline.advance(TEST_EPOCH.add_nanos(test.until.0), &mut outputs);

    // Incident rule names by id, for `parent` checks.
    let rule_of: std::collections::HashMap<String, String> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Incident(i) => Some((i.id.clone(), i.rule.clone())),
            Output::Action(_) => None,
        })
        .collect();
    let hit = |e: &Expect, o: &Output| -> bool {
        match o {
            Output::Incident(i) => {
                let Some(rule) = &e.incident else {
                    return false;
                };
                let status = e.status.unwrap_or(IncidentStatus::Open);
                *rule == i.rule
                    && status == i.status
                    && e.blame.as_ref().is_none_or(|b| *b == i.blame.to_string())
                    && e.plan
                        .as_ref()
                        .is_none_or(|p| i.plan.as_ref().is_some_and(|x| x.plan == *p))
                    && e.severity
                        .as_ref()
                        .is_none_or(|s| s == severity_name(i.severity))
                    && e.parent.as_ref().is_none_or(|p| {
                        i.parent
                            .as_ref()
                            .and_then(|id| rule_of.get(id))
                            .is_some_and(|r| r == p)
                    })
                    && e.summary
                        .as_ref()
                        .is_none_or(|s| i.summary.contains(s.as_str()))
                    && e.at.is_none_or(|a| i.at == TEST_EPOCH.add_nanos(a.0))
            }
            Output::Action(a) => {
                let Some(plan) = &e.action else { return false };
                *plan == a.plan
                    && e.blame.as_ref().is_none_or(|b| *b == a.target.to_string())
                    && e.at
                        .is_none_or(|t| a.requested_at == TEST_EPOCH.add_nanos(t.0))
            }
        }
    };
    for e in &test.expects {
        let n = outputs.iter().filter(|o| hit(e, o)).count();
        if n != e.count as usize {
            failures.push(format!(
                "line {}: expected {} x {}, got {n}",
                e.line,
                e.count,
                e.describe()
            ));
        }
    }
    if test.strict {
        for o in &outputs {
            let relevant = match o {
                Output::Incident(i) => {
                    matches!(i.status, IncidentStatus::Open | IncidentStatus::Suppressed)
                }
                Output::Action(_) => true,
            };
            if relevant && !test.expects.iter().any(|e| e.count > 0 && hit(e, o)) {
                failures.push(format!("unexpected: {}", describe_output(o)));
            }
        }
    }
    let (late, _) = pipeline.totals();
    if late > 0 {
        failures.push(format!(
            "{late} events were late (events must be within the allowed lateness)"
        ));
    }
    TestResult {
        name: test.name.clone(),
        file: test.file.clone(),
        line: test.line,
        failures,
        actual: outputs.iter().map(describe_output).collect(),
    }
}
