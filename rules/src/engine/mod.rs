//! The evaluator: events in (with their event time), incidents and action
//! requests out. No Kafka, no clock, no I/O.
//!
//! Contract:
//! - Time is event time. The watermark is the latest event time seen less
//!   the allowed lateness; timers (absence, `for`, holds, quiet-time
//!   resolves, sequences not followed in time) fire when the watermark
//!   passes them, or when the caller calls [`Engine::advance`]. An event
//!   older than the watermark is late: counted and ignored, never a crash.
//! - Deterministic: the same events in the same order give the same
//!   outputs, with the same incident and action ids, on every run. Nothing
//!   that reaches an output is iterated from a hash map unsorted.
//! - Bounded: every rule holds at most `max_keys_per_rule` keys; a key past
//!   that is refused and counted (`overflow`), as are fan-in members and
//!   pending sequence steps past their bounds.

#[cfg(test)]
use pitcrew_contract::EventKind;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use pitcrew_contract::{
    ActionRequest, Event, EventData, Incident, IncidentStatus, PlanRequest, Target, TargetKind,
    Timestamp, WindowEdge, V1,
};

use crate::duration::Span;
use crate::field::{read, Val};
use crate::inventory::Inventory;
use crate::program::*;
use crate::template::{Part, Template};

mod absence;
mod claims;
mod fan_in;
mod incident;
mod predicate;
mod sequence;
mod threshold;
mod timers;
mod window;

use predicate::gpu_index;
pub(crate) use predicate::{job_of, matches, pred};
use window::{Bucket, Ring};

/// The engine's maps: FxHash, fast and deterministic (no random seed).
pub(crate) type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Tuning of the evaluator.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How far behind the newest event an event may be and still count.
    pub allowed_lateness: Span,
    /// Keys one rule may hold before new keys are refused (and counted).
    pub max_keys_per_rule: usize,
    /// Event ids an incident carries (its `event_count` goes on counting).
    pub max_events_per_incident: usize,
    /// Distinct members one fan-in group tracks.
    pub max_members_per_group: usize,
    /// Pending first steps one sequence key keeps.
    pub max_pending_per_sequence: usize,
    /// Ask remediation to only say what it would do.
    pub dry_run: bool,
    /// Inventory-aware absence rules expect every inventory node from the
    /// first event on (off in rule tests that do not send heartbeats).
    pub expect_inventory: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness: Span::from_secs(5),
            max_keys_per_rule: 1_000_000,
            max_events_per_incident: 16,
            max_members_per_group: 200_000,
            max_pending_per_sequence: 8,
            dry_run: false,
            expect_inventory: true,
        }
    }
}

/// One output of the evaluator.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Incident(Incident),
    Action(ActionRequest),
}

/// Counters the service exports as metrics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub late: u64,
    pub overflow: u64,
    /// Incidents opened (or suppressed) per rule, in the program's order.
    pub incidents_by_rule: Vec<u64>,
    pub actions: u64,
}

#[derive(Debug, Default)]
struct ThresholdState {
    ring: Option<Ring>,
    /// The condition has held since then (not yet for long enough).
    pending_since: Option<Timestamp>,
    clear_since: Option<Timestamp>,
    firing: bool,
    last_value: f64,
    timer_at: Option<Timestamp>,
}

#[derive(Debug)]
enum KeyData {
    Threshold(ThresholdState),
    Sequence(VecDeque<(Timestamp, Box<str>)>),
    Absence {
        last_seen: Timestamp,
        firing: bool,
    },
    FanIn {
        members: FxMap<Box<str>, (Timestamp, Box<str>)>,
        firing: bool,
    },
}

#[derive(Debug)]
struct KeyState {
    /// The node of the key's last event (topology, maintenance).
    node: Box<str>,
    gpu: Option<u32>,
    job: Option<Box<str>>,
    data: KeyData,
}

#[derive(Debug, Default)]
struct RuleState {
    keys: FxMap<Box<str>, KeyState>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Re-evaluate a rule's key (threshold windows, `for`, absence, sequence).
    Key { rule: usize, key: Box<str> },
    /// A held incident's hold is over.
    Held { id: Box<str> },
    /// An incident may have been quiet long enough to resolve.
    Quiet { slot: Box<str> },
}

/// An incident the engine tracks until it resolves.
#[derive(Debug, Clone)]
struct Open {
    inc: Incident,
    rule: usize,
    node: Option<String>,
    gpu: Option<u32>,
    job: Option<String>,
    last_at: Timestamp,
    next_update: u64,
    /// Resolved by quiet time (else by the rule's own clear condition).
    quiet: Option<Span>,
    held_until: Option<Timestamp>,
}

/// What a rule's firing carries into [`Engine::raise`].
struct Fire<'a> {
    rule: usize,
    key: &'a str,
    node: &'a str,
    gpu: Option<u32>,
    job: Option<&'a str>,
    at: Timestamp,
    event: Option<&'a Event>,
    events: Vec<String>,
    value: Option<f64>,
    members: Option<usize>,
}

impl<'a> Fire<'a> {
    /// A firing caused by `event` on `key`.
    fn of_event(rule: usize, key: &'a str, event: &'a Event, events: Vec<String>) -> Fire<'a> {
        Fire {
            rule,
            key,
            node: &event.node,
            gpu: gpu_index(event),
            job: job_of(event),
            at: event.time,
            event: Some(event),
            events,
            value: None,
            members: None,
        }
    }

    /// A firing of a timer (an absence, a step not followed in time): no
    /// event, only the evidence's id.
    fn of_timer(
        rule: usize,
        key: &'a str,
        node: &'a str,
        at: Timestamp,
        evidence: String,
    ) -> Fire<'a> {
        Fire {
            rule,
            key,
            node,
            gpu: None,
            job: None,
            at,
            event: None,
            events: vec![evidence],
            value: None,
            members: None,
        }
    }
}

/// The rule evaluator for one stream of events (one partition, one replay).
#[derive(Debug)]
pub struct Engine {
    program: Arc<Program>,
    inventory: Arc<Inventory>,
    cfg: EngineConfig,
    started: Option<Timestamp>,
    max_seen: Timestamp,
    watermark: Timestamp,
    rules: Vec<RuleState>,
    timers: BinaryHeap<Reverse<(Timestamp, u64, TimerKind)>>,
    timer_seq: u64,
    /// Open (and held) incidents by `group\0target`.
    open: BTreeMap<String, Open>,
    history: FxMap<String, VecDeque<Timestamp>>,
    maintenance: FxMap<Box<str>, Option<Timestamp>>,
    drivers: FxMap<Box<str>, Box<str>>,
    /// Each node's boot id from its heartbeats: a new one is a reboot.
    boots: FxMap<Box<str>, Box<str>>,
    key_buf: String,
    stats: Stats,
    out: Vec<Output>,
}

impl Engine {
    pub fn new(program: Arc<Program>, inventory: Arc<Inventory>, cfg: EngineConfig) -> Engine {
        let n = program.rules.len();
        Engine {
            rules: (0..n).map(|_| RuleState::default()).collect(),
            stats: Stats {
                incidents_by_rule: vec![0; n],
                ..Stats::default()
            },
            program,
            inventory,
            cfg,
            started: None,
            max_seen: Timestamp::EPOCH,
            watermark: Timestamp::EPOCH,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            open: BTreeMap::new(),
            history: FxMap::default(),
            maintenance: FxMap::default(),
            drivers: FxMap::default(),
            boots: FxMap::default(),
            key_buf: String::with_capacity(64),
            out: Vec::new(),
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the engine has seen an event or been advanced yet (its
    /// event time starts at the first).
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Keys held across all rules, and open incidents.
    pub fn state_entries(&self) -> usize {
        self.rules.iter().map(|r| r.keys.len()).sum::<usize>() + self.open.len()
    }

    /// An estimate of the bytes of state held (keys, windows, members,
    /// incidents, timers), for the state-size metric and benchmarks.
    pub fn state_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Box<str>, KeyState)>() + 8;
        let mut total = 0;
        for r in &self.rules {
            total += r.keys.capacity() * entry;
            for (k, s) in &r.keys {
                total += k.len() + s.node.len() + s.job.as_ref().map_or(0, |j| j.len());
                total += match &s.data {
                    KeyData::Threshold(t) => t
                        .ring
                        .as_ref()
                        .map_or(0, |r| r.slots.len() * std::mem::size_of::<Bucket>()),
                    KeyData::Sequence(q) => q.iter().map(|(_, id)| 24 + id.len()).sum(),
                    KeyData::Absence { .. } => 0,
                    KeyData::FanIn { members, .. } => members
                        .iter()
                        .map(|(m, (_, id))| 48 + m.len() + id.len())
                        .sum(),
                };
            }
        }
        total += self.timers.len() * std::mem::size_of::<(Timestamp, u64, TimerKind)>();
        total += self.open.len() * 512;
        total += (self.drivers.len() + self.boots.len() + self.maintenance.len()) * 48;
        total
    }

    /// Takes the outputs produced so far.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Outputs produced so far, without taking them.
    pub fn pending_outputs(&self) -> &[Output] {
        &self.out
    }

    /// Feeds one event.
    pub fn process(&mut self, event: &Event) {
        self.stats.events += 1;
        let t = event.time;
        if self.started.is_none() {
            self.start(t);
        }
        if t < self.watermark {
            self.stats.late += 1;
            return;
        }
        // What fell due before this event's time (less the lateness)
        // happens first.
        if t > self.max_seen {
            self.max_seen = t;
            let wm = t.add_nanos(-self.cfg.allowed_lateness.0);
            if wm > self.watermark {
                self.watermark = wm;
                self.fire_timers();
            }
        }
        self.builtin(event);
        let kind_idx = event.kind() as usize;
        let program = Arc::clone(&self.program);
        if let Some(rules) = program.by_kind.get(kind_idx) {
            for &ri in rules {
                self.eval(&program, ri, event);
            }
        }
    }

    /// Moves event time forward to `to` without an event (end of a replay
    /// or a test; a service whose partition went quiet), firing what is due.
    pub fn advance(&mut self, to: Timestamp) {
        if self.started.is_none() {
            self.start(to);
        }
        if to > self.watermark {
            self.watermark = to;
            if to > self.max_seen {
                self.max_seen = to;
            }
            self.fire_timers();
        }
    }

    fn start(&mut self, t: Timestamp) {
        self.started = Some(t);
        self.watermark = t.add_nanos(-self.cfg.allowed_lateness.0);
        // Inventory-aware absences expect every node from the start.
        if !self.cfg.expect_inventory {
            return;
        }
        let program = Arc::clone(&self.program);
        let inventory = Arc::clone(&self.inventory);
        for (ri, rule) in program.rules.iter().enumerate() {
            if let Logic::Absence {
                after,
                inventory: true,
            } = rule.logic
            {
                for n in inventory.nodes() {
                    let key: Box<str> = n.name.as_str().into();
                    self.rules[ri].keys.insert(
                        key.clone(),
                        KeyState {
                            node: key.clone(),
                            gpu: None,
                            job: None,
                            data: KeyData::Absence {
                                last_seen: t,
                                firing: false,
                            },
                        },
                    );
                    self.push_timer(t.add_nanos(after.0), TimerKind::Key { rule: ri, key });
                }
            }
        }
    }

    /// What every rule set relies on: maintenance windows and each node's
    /// driver version (for driver-version fan-in).
    fn builtin(&mut self, event: &Event) {
        match &event.data {
            EventData::NodeMaintenance(m) => match m.state {
                WindowEdge::Start => {
                    self.maintenance.insert(event.node.as_str().into(), m.until);
                }
                WindowEdge::End => {
                    self.maintenance.remove(event.node.as_str());
                }
            },
            EventData::NodeHeartbeat(h) => {
                let node = event.node.as_str();
                match self.boots.get(node) {
                    Some(b) if **b == *h.boot_id => {}
                    Some(_) => {
                        self.boots.insert(node.into(), h.boot_id.as_str().into());
                        self.rebooted(node, event.time);
                    }
                    None => {
                        self.boots.insert(node.into(), h.boot_id.as_str().into());
                    }
                }
                if let Some(v) = &h.driver_version {
                    if self.drivers.get(event.node.as_str()).map(|x| &**x) != Some(v.as_str()) {
                        self.drivers
                            .insert(event.node.as_str().into(), v.as_str().into());
                    }
                }
            }
            _ => {}
        }
    }

    /// The node came back with a new boot id: the faults it had before
    /// are over (whatever remediated them). Resolving their incidents now,
    /// not after their quiet time, lets the same fault after the reboot
    /// open a new incident, and count as a repeat (a second fall is an
    /// RMA, not evidence on the first). Incidents that resolve by their
    /// own condition (thresholds, absences) are left to it.
    fn rebooted(&mut self, node: &str, at: Timestamp) {
        let gpu_prefix = format!("{node}/");
        let slots: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.quiet.is_some()
                    && o.last_at <= at
                    && match o.inc.blame.kind {
                        TargetKind::Node => o.inc.blame.name == node,
                        TargetKind::Gpu => o.inc.blame.name.starts_with(&gpu_prefix),
                        _ => false,
                    }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for slot in slots {
            self.close(&slot, at);
        }
    }

    fn in_maintenance(&self, node: &str, at: Timestamp) -> bool {
        match self.maintenance.get(node) {
            Some(Some(until)) => at < *until,
            Some(None) => true,
            None => false,
        }
    }

    fn push_timer(&mut self, at: Timestamp, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, kind)));
    }

    fn fire_timers(&mut self) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > self.watermark {
                break;
            }
            let Some(Reverse((at, _, kind))) = self.timers.pop() else {
                break;
            };
            match kind {
                TimerKind::Key { rule, key } => self.on_key_timer(rule, &key, at),
                TimerKind::Held { id } => self.on_held_timer(&id, at),
                TimerKind::Quiet { slot } => self.on_quiet_timer(&slot),
            }
        }
    }

    // ---- keys -------------------------------------------------------------

    /// Writes the rule's key for `event` into `key_buf`; false when a
    /// dimension has no value for this event (the rule skips it).
    fn make_key(&mut self, dims: &[Dim], event: &Event) -> bool {
        let mut buf = std::mem::take(&mut self.key_buf);
        buf.clear();
        let mut ok = true;
        for (i, d) in dims.iter().enumerate() {
            if i > 0 {
                buf.push('/');
            }
            if !self.dim_value(d, event, &mut buf) {
                ok = false;
                break;
            }
        }
        self.key_buf = buf;
        ok
    }

    fn dim_value(&self, d: &Dim, event: &Event, buf: &mut String) -> bool {
        use std::fmt::Write;
        match d {
            Dim::Node => buf.push_str(&event.node),
            Dim::Gpu => match event.gpu.as_ref().and_then(|g| g.index) {
                Some(i) => {
                    let _ = write!(buf, "{i}");
                }
                None => match event.gpu.as_ref().and_then(|g| g.uuid.as_deref()) {
                    Some(u) => buf.push_str(u),
                    None => return false,
                },
            },
            Dim::Job => match job_of(event) {
                Some(j) => buf.push_str(j),
                None => return false,
            },
            Dim::Label(i) => match self
                .program
                .labels
                .get(usize::from(*i))
                .and_then(|l| event.labels.get(l))
            {
                Some(v) => buf.push_str(v),
                None => return false,
            },
            Dim::Field(f) => {
                let labels = &self.program.labels;
                match read(f, event, labels) {
                    Val::Missing => return false,
                    v => v.render(buf),
                }
            }
            topo => match self
                .topology(topo, &event.node)
                .or_else(|| facility_topology(topo, event))
            {
                Some(v) => buf.push_str(v),
                None => return false,
            },
        }
        true
    }

    /// A node's place in the topology; the driver version from its latest
    /// heartbeat before the inventory's.
    fn topology<'s>(&'s self, d: &Dim, node: &str) -> Option<&'s str> {
        if let Dim::DriverVersion = d {
            if let Some(v) = self.drivers.get(node) {
                return Some(v);
            }
        }
        let n = self.inventory.get(node)?;
        match d {
            Dim::Rack => n.rack.as_deref(),
            Dim::LeafSwitch => n.leaf_switch.as_deref(),
            Dim::Pdu => n.pdu.as_deref(),
            Dim::Bmc => n.bmc.as_deref(),
            Dim::DriverVersion => n.driver_version.as_deref(),
            Dim::Node => Some(&n.name),
            _ => None,
        }
    }

    // ---- evaluation -------------------------------------------------------

    fn eval(&mut self, program: &Program, ri: usize, event: &Event) {
        let rule = &program.rules[ri];
        match &rule.logic {
            Logic::Sequence {
                first,
                then,
                within,
                negate,
            } => {
                let is_first = matches(first, event, &program.labels);
                let is_then = matches(then, event, &program.labels);
                if !is_first && !is_then {
                    return;
                }
                if !self.make_key(&rule.key, event) {
                    return;
                }
                self.eval_sequence(ri, event, is_first, is_then, *within, *negate);
            }
            logic => {
                if !rule.when.kinds.contains(event.kind()) {
                    return;
                }
                // Threshold values read every event of the kind; the
                // predicates select for all other logics.
                let selected = matches(&rule.when, event, &program.labels);
                match logic {
                    Logic::Each => {
                        if selected && self.make_key(&rule.key, event) {
                            let key = self.key_buf.clone();
                            self.raise(Fire::of_event(ri, &key, event, vec![event.id.clone()]));
                        }
                    }
                    Logic::Threshold {
                        window,
                        value,
                        threshold,
                    } => {
                        if !selected {
                            return;
                        }
                        let x = match (window, value) {
                            (Some(w), _) => match &w.field {
                                Some(f) => read(f, event, &program.labels).as_num(),
                                None => Some(1.0),
                            },
                            (None, Some(ValueSrc::Field(f))) => {
                                read(f, event, &program.labels).as_num()
                            }
                            (None, Some(ValueSrc::Pred(p))) => {
                                Some(if p.iter().all(|p| pred(p, event, &program.labels)) {
                                    1.0
                                } else {
                                    0.0
                                })
                            }
                            (None, None) => Some(1.0),
                        };
                        let Some(x) = x else { return };
                        // Fast path: a value on the quiet side for a key
                        // that holds no state changes nothing.
                        if window.is_none()
                            && !threshold.firing_condition(x)
                            && self.rules[ri].keys.is_empty()
                        {
                            return;
                        }
                        if !self.make_key(&rule.key, event) {
                            return;
                        }
                        self.eval_threshold(rule, ri, event, window.as_ref(), threshold, x);
                    }
                    Logic::Absence { .. } => {
                        if selected && self.make_key(&rule.key, event) {
                            self.eval_absence(rule, ri, event);
                        }
                    }
                    Logic::FanIn {
                        member,
                        min,
                        within,
                    } => {
                        if !selected || !self.make_key(&rule.key, event) {
                            return;
                        }
                        let mut m = String::new();
                        if !self.dim_value(member, event, &mut m) {
                            return;
                        }
                        self.eval_fan_in(ri, event, m, *min, *within);
                    }
                    Logic::Sequence { .. } => {}
                }
            }
        }
    }

    /// Finds or makes the key's state; None when the rule is full.
    fn key_state(
        &mut self,
        ri: usize,
        event: &Event,
        make: impl FnOnce() -> KeyData,
    ) -> Option<&mut KeyState> {
        let max = self.cfg.max_keys_per_rule;
        let rs = &mut self.rules[ri];
        if !rs.keys.contains_key(self.key_buf.as_str()) {
            if rs.keys.len() >= max {
                self.stats.overflow += 1;
                return None;
            }
            rs.keys.insert(
                self.key_buf.as_str().into(),
                KeyState {
                    node: event.node.as_str().into(),
                    gpu: gpu_index(event),
                    job: job_of(event).map(Into::into),
                    data: make(),
                },
            );
        }
        let st = rs.keys.get_mut(self.key_buf.as_str())?;
        if *st.node != *event.node {
            st.node = event.node.as_str().into();
        }
        Some(st)
    }

    /// Incidents open now (published, not suppressed, not resolved).
    pub fn open_count(&self) -> usize {
        self.open
            .values()
            .filter(|o| o.held_until.is_none() && o.inc.status == IncidentStatus::Open)
            .count()
    }

    /// Incidents open (or held) now, sorted by id.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.open.values().map(|o| &o.inc).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// A facility event's place in the topology: its rack when it names
/// exactly one (as the group stage's per-rack copies do), and for a PDU's
/// readings the PDU itself.
fn facility_topology<'e>(d: &Dim, event: &'e Event) -> Option<&'e str> {
    if !event.kind().is_facility() {
        return None;
    }
    match d {
        Dim::Rack => match event.data.facility_racks() {
            [one] => Some(one),
            _ => None,
        },
        Dim::Pdu if event.kind() == pitcrew_contract::EventKind::FacilityPdu => Some(&event.node),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_discriminants_index_all() {
        // `process` indexes `by_kind` with `kind as usize`.
        assert!(EventKind::ALL
            .iter()
            .enumerate()
            .all(|(i, k)| *k as usize == i));
    }
}
