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
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
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

/// A fast, deterministic hasher for the engine's maps (FxHash's mix).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

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

#[derive(Debug)]
struct Bucket {
    idx: i64,
    n: u32,
    v: f64,
}

/// A sliding window in fixed steps: a ring of buckets.
#[derive(Debug)]
struct Ring {
    slots: Box<[Bucket]>,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n)
                .map(|_| Bucket {
                    idx: i64::MIN,
                    n: 0,
                    v: 0.0,
                })
                .collect(),
        }
    }

    fn add(&mut self, w: &WindowSpec, t: Timestamp, x: f64) {
        let idx = t.unix_nanos().div_euclid(w.step.0);
        let len = self.slots.len() as i64;
        let slot = &mut self.slots[idx.rem_euclid(len) as usize];
        if slot.idx != idx {
            if slot.idx > idx {
                return; // older than the window: nothing to add to
            }
            *slot = Bucket {
                idx,
                n: 0,
                v: match w.agg {
                    Agg::Min => f64::INFINITY,
                    Agg::Max => f64::NEG_INFINITY,
                    _ => 0.0,
                },
            };
        }
        slot.n += 1;
        slot.v = match w.agg {
            Agg::Min => slot.v.min(x),
            Agg::Max => slot.v.max(x),
            _ => slot.v + x,
        };
    }

    fn live(&self, w: &WindowSpec, now: Timestamp) -> impl Iterator<Item = &Bucket> {
        let cur = now.unix_nanos().div_euclid(w.step.0);
        let len = self.slots.len() as i64;
        self.slots
            .iter()
            .filter(move |b| b.n > 0 && b.idx > cur - len && b.idx <= cur)
    }

    fn value(&self, w: &WindowSpec, now: Timestamp) -> Option<f64> {
        let (mut n, mut v) = (
            0u64,
            match w.agg {
                Agg::Min => f64::INFINITY,
                Agg::Max => f64::NEG_INFINITY,
                _ => 0.0,
            },
        );
        for b in self.live(w, now) {
            n += u64::from(b.n);
            v = match w.agg {
                Agg::Min => v.min(b.v),
                Agg::Max => v.max(b.v),
                _ => v + b.v,
            };
        }
        let secs = w.over.as_secs_f64();
        match w.agg {
            Agg::Count => Some(n as f64),
            Agg::Rate if w.field.is_none() => Some(n as f64 / secs),
            Agg::Rate => Some(v / secs),
            Agg::Sum => Some(v),
            _ if n == 0 => None,
            Agg::Avg => Some(v / n as f64),
            Agg::Min | Agg::Max => Some(v),
        }
    }

    /// When the oldest live bucket leaves the window.
    fn next_expiry(&self, w: &WindowSpec, now: Timestamp) -> Option<Timestamp> {
        let len = self.slots.len() as i64;
        self.live(w, now)
            .map(|b| Timestamp::from_unix_nanos((b.idx + len) * w.step.0))
            .min()
    }

    fn is_empty(&self, w: &WindowSpec, now: Timestamp) -> bool {
        self.live(w, now).next().is_none()
    }
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
            topo => match self.topology(topo, &event.node) {
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

    fn eval_threshold(
        &mut self,
        rule: &Rule,
        ri: usize,
        event: &Event,
        window: Option<&WindowSpec>,
        th: &Threshold,
        x: f64,
    ) {
        let t = event.time;
        let exists = self.rules[ri].keys.contains_key(self.key_buf.as_str());
        if !exists && window.is_none() && !th.firing_condition(x) {
            return;
        }
        let Some(st) = self.key_state(ri, event, || {
            KeyData::Threshold(ThresholdState {
                ring: window.map(|w| Ring::new(w.buckets)),
                ..ThresholdState::default()
            })
        }) else {
            return;
        };
        let KeyData::Threshold(ts) = &mut st.data else {
            return;
        };
        let value = match (window, ts.ring.as_mut()) {
            (Some(w), Some(r)) => {
                r.add(w, t, x);
                r.value(w, t)
            }
            _ => Some(x),
        };
        let key: String = self.key_buf.clone();
        self.step_threshold(rule, ri, &key, t, value, Some(event));
    }

    /// Moves a threshold key's state machine at `t` given the current value.
    fn step_threshold(
        &mut self,
        rule: &Rule,
        ri: usize,
        key: &str,
        t: Timestamp,
        value: Option<f64>,
        event: Option<&Event>,
    ) {
        let Logic::Threshold {
            window,
            threshold: th,
            ..
        } = &rule.logic
        else {
            return;
        };
        let Some(st) = self.rules[ri].keys.get_mut(key) else {
            return;
        };
        let (node, gpu, job) = (
            st.node.to_string(),
            st.gpu,
            st.job.as_deref().map(str::to_owned),
        );
        let KeyData::Threshold(ts) = &mut st.data else {
            return;
        };
        if let Some(v) = value {
            ts.last_value = v;
        }
        let mut fire = false;
        let mut resolve = false;
        let mut next: Option<Timestamp> = None;
        if !ts.firing {
            let cond = value.is_some_and(|v| th.firing_condition(v));
            match debounce(&mut ts.pending_since, cond, t, th.hold_for) {
                Held::Done => {
                    fire = true;
                    ts.firing = true;
                    ts.clear_since = None;
                }
                Held::Until(due) => next = Some(due),
                Held::No => {}
            }
        } else {
            let clear = value.is_none_or(|v| th.clear_condition(v));
            match debounce(&mut ts.clear_since, clear, t, th.clear_for) {
                Held::Done => {
                    resolve = true;
                    ts.firing = false;
                }
                Held::Until(due) => next = Some(due),
                Held::No => {}
            }
        }
        // Windows change as buckets leave them: look again then.
        if let (Some(w), Some(r)) = (window, ts.ring.as_ref()) {
            if ts.firing || ts.pending_since.is_some() {
                if let Some(e) = r.next_expiry(w, t) {
                    next = Some(next.map_or(e, |n| n.min(e)));
                }
            }
        }
        let remove = !ts.firing
            && ts.pending_since.is_none()
            && match (window, ts.ring.as_ref()) {
                (Some(w), Some(r)) => r.is_empty(w, t),
                _ => true,
            };
        let schedule = match next {
            Some(n) if ts.timer_at != Some(n) => {
                ts.timer_at = Some(n);
                Some(n)
            }
            _ => None,
        };
        let last_value = ts.last_value;
        if remove {
            self.rules[ri].keys.remove(key);
        }
        if let Some(n) = schedule {
            self.push_timer(
                n,
                TimerKind::Key {
                    rule: ri,
                    key: key.into(),
                },
            );
        }
        if fire {
            let events = event.map(|e| vec![e.id.clone()]).unwrap_or_default();
            self.raise(Fire {
                rule: ri,
                key,
                node: &node,
                gpu,
                job: job.as_deref(),
                at: t,
                event,
                events,
                value: Some(last_value),
                members: None,
            });
        } else if resolve {
            self.resolve_rule_key(ri, key, &node, gpu, job.as_deref(), t);
        } else if event.is_some() && !remove {
            // Keep-firing: a further event feeds the open incident.
            if let Some(e) = event {
                if self.rules[ri]
                    .keys
                    .get(key)
                    .is_some_and(|s| matches!(&s.data, KeyData::Threshold(ts) if ts.firing))
                {
                    self.evidence(ri, key, &node, gpu, job.as_deref(), e);
                }
            }
        }
    }

    fn eval_sequence(
        &mut self,
        ri: usize,
        event: &Event,
        is_first: bool,
        is_then: bool,
        within: Span,
        negate: bool,
    ) {
        let max_pending = self.cfg.max_pending_per_sequence;
        let t = event.time;
        let key = self.key_buf.clone();
        let exists = self.rules[ri].keys.contains_key(key.as_str());
        if !exists && !is_first {
            return;
        }
        let mut fire_with: Option<Vec<String>> = None;
        let mut schedule = None;
        let mut overflow = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::Sequence(VecDeque::new())) else {
                return;
            };
            let KeyData::Sequence(q) = &mut st.data else {
                return;
            };
            // Steps older than `within` can no longer pair.
            while q
                .front()
                .is_some_and(|(ft, _)| t.unix_nanos() - ft.unix_nanos() > within.0 && !negate)
            {
                q.pop_front();
            }
            if is_then {
                if negate {
                    // B arrived: every pending A at or before it is answered.
                    q.retain(|(ft, _)| *ft > t);
                } else if let Some((_, fid)) = q
                    .iter()
                    .find(|(ft, _)| *ft <= t && t.unix_nanos() - ft.unix_nanos() <= within.0)
                {
                    fire_with = Some(vec![fid.to_string(), event.id.clone()]);
                    q.clear();
                }
            }
            if is_first && fire_with.is_none() {
                if q.len() >= max_pending {
                    q.pop_front();
                    overflow = true;
                }
                q.push_back((t, event.id.as_str().into()));
                if negate {
                    schedule = Some(t.add_nanos(within.0));
                }
            }
        }
        if overflow {
            self.stats.overflow += 1;
        }
        if let Some(at) = schedule {
            self.push_timer(
                at,
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
        if let Some(events) = fire_with {
            self.raise(Fire::of_event(ri, &key, event, events));
        }
        if self.rules[ri]
            .keys
            .get(key.as_str())
            .is_some_and(|s| matches!(&s.data, KeyData::Sequence(q) if q.is_empty()))
        {
            self.rules[ri].keys.remove(key.as_str());
        }
    }

    fn eval_absence(&mut self, rule: &Rule, ri: usize, event: &Event) {
        let Logic::Absence { after, .. } = rule.logic else {
            return;
        };
        let t = event.time;
        let key = self.key_buf.clone();
        let mut new_key = false;
        let mut was_firing = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::Absence {
                last_seen: Timestamp::EPOCH,
                firing: false,
            }) else {
                return;
            };
            if let KeyData::Absence { last_seen, firing } = &mut st.data {
                if *last_seen == Timestamp::EPOCH {
                    new_key = true;
                }
                if t > *last_seen {
                    *last_seen = t;
                }
                was_firing = std::mem::take(firing);
            }
        }
        if new_key {
            self.push_timer(
                t.add_nanos(after.0),
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
        if was_firing {
            let node = event.node.clone();
            self.resolve_rule_key(ri, &key, &node, gpu_index(event), job_of(event), t);
            self.push_timer(
                t.add_nanos(after.0),
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
    }

    fn eval_fan_in(&mut self, ri: usize, event: &Event, member: String, min: u32, within: Span) {
        let t = event.time;
        let key = self.key_buf.clone();
        let max_members = self.cfg.max_members_per_group;
        let mut overflow = false;
        let mut fire: Option<(Vec<String>, usize)> = None;
        let mut evidence = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::FanIn {
                members: FxMap::default(),
                firing: false,
            }) else {
                return;
            };
            let KeyData::FanIn { members, firing } = &mut st.data else {
                return;
            };
            let cutoff = t.unix_nanos() - within.0;
            if members.len() >= max_members {
                members.retain(|_, (mt, _)| mt.unix_nanos() >= cutoff);
            }
            if members.len() >= max_members && !members.contains_key(member.as_str()) {
                overflow = true;
            } else {
                members.insert(member.into(), (t, event.id.as_str().into()));
            }
            let live = members
                .values()
                .filter(|(mt, _)| mt.unix_nanos() >= cutoff)
                .count();
            if !*firing && live >= min as usize {
                *firing = true;
                let mut ev: Vec<(Timestamp, &str)> = members
                    .values()
                    .filter(|(mt, _)| mt.unix_nanos() >= cutoff)
                    .map(|(mt, id)| (*mt, &**id))
                    .collect();
                ev.sort();
                fire = Some((ev.into_iter().map(|(_, id)| id.to_owned()).collect(), live));
                members.retain(|_, (mt, _)| mt.unix_nanos() >= cutoff);
            } else if *firing {
                evidence = true;
            }
        }
        if overflow {
            self.stats.overflow += 1;
        }
        if let Some((events, live)) = fire {
            self.raise(Fire {
                value: Some(live as f64),
                members: Some(live),
                ..Fire::of_event(ri, &key, event, events)
            });
        } else if evidence {
            let node = event.node.clone();
            self.evidence(ri, &key, &node, gpu_index(event), job_of(event), event);
        }
    }

    fn on_key_timer(&mut self, ri: usize, key: &str, at: Timestamp) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        match &rule.logic {
            Logic::Threshold { window, .. } => {
                let value = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let KeyData::Threshold(ts) = &mut st.data else {
                        return;
                    };
                    if ts.timer_at != Some(at) {
                        return;
                    }
                    ts.timer_at = None;
                    match (window, ts.ring.as_ref()) {
                        (Some(w), Some(r)) => r.value(w, at),
                        _ => Some(ts.last_value),
                    }
                };
                self.step_threshold(rule, ri, key, at, value, None);
            }
            Logic::Absence { after, .. } => {
                let (node, due) = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let node = st.node.to_string();
                    let KeyData::Absence { last_seen, firing } = &mut st.data else {
                        return;
                    };
                    if *firing {
                        return;
                    }
                    let due = last_seen.add_nanos(after.0);
                    if due > at {
                        (node, Some(due))
                    } else {
                        *firing = true;
                        (node, None)
                    }
                };
                match due {
                    Some(d) => self.push_timer(
                        d,
                        TimerKind::Key {
                            rule: ri,
                            key: key.into(),
                        },
                    ),
                    None => {
                        let last_seen = match self.rules[ri].keys.get(key).map(|s| &s.data) {
                            Some(KeyData::Absence { last_seen, .. }) => *last_seen,
                            _ => at,
                        };
                        let marker = format!("absent:{key}:{}", last_seen.unix_nanos());
                        self.raise(Fire::of_timer(ri, key, &node, at, marker));
                    }
                }
            }
            Logic::Sequence {
                within,
                negate: true,
                ..
            } => {
                let fired: Option<(String, String)> = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let node = st.node.to_string();
                    let KeyData::Sequence(q) = &mut st.data else {
                        return;
                    };
                    match q.front() {
                        Some((ft, id)) if ft.add_nanos(within.0) <= at => {
                            let id = id.to_string();
                            q.pop_front();
                            Some((node, id))
                        }
                        _ => None,
                    }
                };
                if let Some((node, id)) = fired {
                    self.raise(Fire::of_timer(ri, key, &node, at, id));
                }
                if self.rules[ri]
                    .keys
                    .get(key)
                    .is_some_and(|s| matches!(&s.data, KeyData::Sequence(q) if q.is_empty()))
                {
                    self.rules[ri].keys.remove(key);
                }
            }
            _ => {}
        }
    }

    // ---- incidents --------------------------------------------------------

    fn blame(&self, rule: &Rule, f: &Fire<'_>) -> Target {
        let (kind, dim) = &rule.blame;
        let name = match (kind, dim) {
            (TargetKind::Gpu, _) => match f.gpu {
                Some(g) => format!("{}/{g}", f.node),
                None => f.key.to_owned(),
            },
            (TargetKind::Node, _) | (TargetKind::Link, _) => f.node.to_owned(),
            (TargetKind::Job, _) => f.job.map_or_else(|| f.key.to_owned(), str::to_owned),
            (_, d) => {
                if matches!(rule.logic, Logic::FanIn { .. }) {
                    f.key.to_owned()
                } else {
                    self.topology(d, f.node)
                        .map_or_else(|| f.key.to_owned(), str::to_owned)
                }
            }
        };
        Target::new(*kind, name)
    }

    fn render(&self, tpl: &Template, rule: &Rule, f: &Fire<'_>, count: u64) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for p in &tpl.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Key => s.push_str(f.key),
                Part::Rule => s.push_str(&rule.name),
                Part::Count => {
                    let _ = write!(s, "{count}");
                }
                Part::Members => {
                    let _ = write!(s, "{}", f.members.unwrap_or(0));
                }
                Part::Value => match f.value {
                    Some(v) => Val::Num((v * 1000.0).round() / 1000.0).render(&mut s),
                    None => s.push('?'),
                },
                Part::Dim(Dim::Node) => s.push_str(f.node),
                Part::Dim(Dim::Gpu) => match f.gpu {
                    Some(g) => {
                        let _ = write!(s, "{g}");
                    }
                    None => s.push('?'),
                },
                Part::Dim(Dim::Job) => s.push_str(f.job.unwrap_or("?")),
                Part::Dim(d) => {
                    if matches!(rule.logic, Logic::FanIn { .. })
                        && rule
                            .key
                            .first()
                            .is_some_and(|k| std::mem::discriminant(k) == std::mem::discriminant(d))
                    {
                        s.push_str(f.key);
                    } else {
                        s.push_str(self.topology(d, f.node).unwrap_or("?"));
                    }
                }
                Part::Field(fr) => match f.event {
                    Some(e) => read(fr, e, &self.program.labels).render(&mut s),
                    None => s.push('?'),
                },
            }
        }
        s
    }

    /// A rule fired for a key: open (or hold, or suppress) an incident, or
    /// add evidence to the open one of the same group and target.
    fn raise(&mut self, f: Fire<'_>) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[f.rule];
        let target = self.blame(rule, &f);
        let slot = slot_key(rule, &target, f.key);
        if let Some(open) = self.open.get_mut(&slot) {
            add_evidence(open, &f.events, f.at, self.cfg.max_events_per_incident);
            self.maybe_update(&slot);
            return;
        }
        let first = f.events.first().cloned().unwrap_or_default();
        let id = Incident::make_id(&rule.group, &target.key(), &first);
        let mut severity = rule.severity;
        let mut plan = rule.plan.clone();
        let mut summary_tpl = &rule.summary;
        // A repeat offender asks for more.
        let hist = self.history.entry(slot.clone()).or_default();
        if let Some(rep) = &rule.repeat {
            while hist
                .front()
                .is_some_and(|t| f.at.unix_nanos() - t.unix_nanos() > rep.within.0)
            {
                hist.pop_front();
            }
            if hist.len() + 1 >= rep.count as usize {
                severity = rep.severity.unwrap_or(severity);
                if rep.plan.is_some() {
                    plan = rep.plan.clone();
                }
                if let Some(s) = &rep.summary {
                    summary_tpl = s;
                }
            }
        }
        hist.push_back(f.at);
        if hist.len() > 64 {
            hist.pop_front();
        }
        let summary = self.render(summary_tpl, rule, &f, f.events.len() as u64);
        let mut labels = rule.labels.clone();
        if let Some(j) = f.job {
            labels.entry("job".into()).or_insert_with(|| j.to_owned());
        }
        let mut events = f.events.clone();
        events.truncate(self.cfg.max_events_per_incident);
        let inc = Incident {
            v: V1,
            id,
            status: IncidentStatus::Open,
            rule: rule.name.clone(),
            key: f.key.to_owned(),
            severity,
            blame: target,
            summary,
            opened_at: f.at,
            at: f.at,
            events,
            event_count: f.events.len() as u64,
            plan: plan.map(|p| PlanRequest {
                plan: p.name,
                params: p.params,
            }),
            parent: None,
            labels,
        };
        let quiet = match rule.logic {
            Logic::Threshold { .. } | Logic::Absence { .. } => None,
            _ => Some(rule.resolve_after),
        };
        let mut open = Open {
            inc,
            rule: f.rule,
            node: Some(f.node.to_owned()),
            gpu: f.gpu,
            job: f.job.map(str::to_owned),
            last_at: f.at,
            next_update: 2,
            quiet,
            held_until: None,
        };
        // Claimed already by an open parent?
        if let Some(parent) = self.parent_for(f.rule, &open) {
            open.inc.status = IncidentStatus::Suppressed;
            open.inc.parent = Some(parent);
        } else if rule.respect_maintenance && self.in_maintenance(f.node, f.at) {
            open.inc.status = IncidentStatus::Suppressed;
            open.inc
                .labels
                .insert("suppressed_by".into(), "maintenance".into());
        } else if rule.hold.0 > 0 {
            let until = f.at.add_nanos(rule.hold.0);
            open.held_until = Some(until);
            self.open.insert(slot.clone(), open);
            self.push_timer(until, TimerKind::Held { id: slot.into() });
            return;
        }
        self.publish_open(slot, open);
    }

    fn publish_open(&mut self, slot: String, open: Open) {
        self.stats.incidents_by_rule[open.rule] += 1;
        let inc = open.inc.clone();
        self.out.push(Output::Incident(inc.clone()));
        if inc.status == IncidentStatus::Open {
            if let Some(p) = &inc.plan {
                self.stats.actions += 1;
                let mut params = p.params.clone();
                // The hit job, so an app restart requeues that job only.
                if let Some(job) = inc.labels.get("job") {
                    params
                        .entry("job".to_owned())
                        .or_insert_with(|| job.clone().into());
                }
                self.out.push(Output::Action(ActionRequest {
                    v: V1,
                    id: ActionRequest::make_id(&inc.id, &inc.blame, &p.plan, 0),
                    incident: inc.id.clone(),
                    target: inc.blame.clone(),
                    plan: p.plan.clone(),
                    params,
                    requested_at: inc.at,
                    reason: inc.summary.clone(),
                    events: inc.events.clone(),
                    dry_run: self.cfg.dry_run,
                }));
            }
        }
        if let Some(q) = open.quiet {
            self.push_timer(
                open.last_at.add_nanos(q.0),
                TimerKind::Quiet {
                    slot: slot.as_str().into(),
                },
            );
        }
        let (rule, is_open) = (open.rule, inc.status == IncidentStatus::Open);
        self.open.insert(slot.clone(), open);
        if is_open {
            self.claim_children(&slot, rule);
        }
    }

    /// The id of an open parent incident that claims `child` (of rule `ri`).
    fn parent_for(&self, ri: usize, child: &Open) -> Option<String> {
        let mut best: Option<&Open> = None;
        for o in self.open.values() {
            if o.inc.status != IncidentStatus::Open || o.held_until.is_some() {
                continue;
            }
            let p = &self.program.rules[o.rule];
            if o.rule != ri
                && p.suppresses.contains(&ri)
                && self.claims(p, o, child)
                && best.is_none_or(|b| o.inc.id < b.inc.id)
            {
                best = Some(o);
            }
        }
        best.map(|o| o.inc.id.clone())
    }

    /// Whether a parent incident covers a child's member: the child's node
    /// is in the fan-in's group, or (a more specific rule superseding a
    /// general one) the child is on the same node and GPU.
    fn claims(&self, parent_rule: &Rule, parent: &Open, child: &Open) -> bool {
        let Some(node) = child.node.as_deref() else {
            return false;
        };
        if let Logic::FanIn { .. } = parent_rule.logic {
            let Some(dim) = parent_rule.key.first() else {
                return false;
            };
            let name = match dim {
                Dim::Node => Some(node),
                Dim::Job => child.job.as_deref(),
                d => self.topology(d, node),
            };
            name.is_some_and(|n| n == parent.inc.blame.name)
        } else {
            parent.node.as_deref() == Some(node)
                && match (parent.gpu, child.gpu) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        }
    }

    /// A parent opened: claim the held and open incidents of the rules it
    /// suppresses whose member falls in its group.
    fn claim_children(&mut self, slot_of_parent: &str, pi: usize) {
        let program = Arc::clone(&self.program);
        let prule = &program.rules[pi];
        if prule.suppresses.is_empty() {
            return;
        }
        let Some(parent) = self.open.get(slot_of_parent).cloned() else {
            return;
        };
        let mut claimed = Vec::new();
        for (slot, o) in &self.open {
            if !prule.suppresses.contains(&o.rule) || o.inc.status != IncidentStatus::Open {
                continue;
            }
            if self.claims(prule, &parent, o) {
                claimed.push(slot.clone());
            }
        }
        for slot in claimed {
            let Some(mut o) = self.open.remove(&slot) else {
                continue;
            };
            o.inc.status = IncidentStatus::Suppressed;
            o.inc.parent = Some(parent.inc.id.clone());
            let was_held = o.held_until.take().is_some();
            if was_held {
                // Never published: it appears once, as suppressed.
                self.publish_open(slot, o);
            } else {
                o.inc.at = parent.inc.at;
                self.out.push(Output::Incident(o.inc.clone()));
                self.open.insert(slot, o);
            }
        }
    }

    fn on_held_timer(&mut self, slot: &str, at: Timestamp) {
        let Some(o) = self.open.get(slot) else { return };
        if o.held_until != Some(at) {
            return;
        }
        let Some(mut o) = self.open.remove(slot) else {
            return;
        };
        o.held_until = None;
        if let Some(parent) = self.parent_for(o.rule, &o) {
            o.inc.status = IncidentStatus::Suppressed;
            o.inc.parent = Some(parent);
        }
        self.publish_open(slot.to_owned(), o);
    }

    fn on_quiet_timer(&mut self, slot: &str) {
        let Some(o) = self.open.get(slot) else { return };
        if o.held_until.is_some() {
            return;
        }
        let Some(q) = o.quiet else { return };
        let due = o.last_at.add_nanos(q.0);
        if due > self.watermark {
            self.push_timer(due, TimerKind::Quiet { slot: slot.into() });
            return;
        }
        self.close(slot, due);
    }

    fn close(&mut self, slot: &str, at: Timestamp) {
        let Some(mut o) = self.open.remove(slot) else {
            return;
        };
        if o.held_until.is_some() {
            return; // never published: nothing to resolve
        }
        o.inc.status = IncidentStatus::Resolved;
        o.inc.at = at;
        self.out.push(Output::Incident(o.inc));
    }

    /// A threshold or absence key cleared: resolve its incident.
    fn resolve_rule_key(
        &mut self,
        ri: usize,
        key: &str,
        node: &str,
        gpu: Option<u32>,
        job: Option<&str>,
        at: Timestamp,
    ) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        let f = Fire {
            rule: ri,
            key,
            node,
            gpu,
            job,
            at,
            event: None,
            events: Vec::new(),
            value: None,
            members: None,
        };
        let slot = slot_key(rule, &self.blame(rule, &f), key);
        if self.open.get(&slot).is_some_and(|o| o.rule == ri) {
            self.close(&slot, at);
        }
    }

    fn evidence(
        &mut self,
        ri: usize,
        key: &str,
        node: &str,
        gpu: Option<u32>,
        job: Option<&str>,
        e: &Event,
    ) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        let f = Fire {
            rule: ri,
            key,
            node,
            gpu,
            job,
            at: e.time,
            event: Some(e),
            events: vec![e.id.clone()],
            value: None,
            members: None,
        };
        let slot = slot_key(rule, &self.blame(rule, &f), key);
        if let Some(o) = self.open.get_mut(&slot) {
            add_evidence(o, &f.events, e.time, self.cfg.max_events_per_incident);
            self.maybe_update(&slot);
        }
    }

    /// Keep-firing updates at 2, 4, 8... events: a storm writes a handful
    /// of messages, not one per event.
    fn maybe_update(&mut self, slot: &str) {
        let Some(o) = self.open.get_mut(slot) else {
            return;
        };
        if o.held_until.is_some() || o.inc.event_count < o.next_update {
            return;
        }
        o.next_update = o.inc.event_count.saturating_mul(2);
        let mut inc = o.inc.clone();
        if inc.status == IncidentStatus::Open {
            inc.status = IncidentStatus::Update;
        }
        self.out.push(Output::Incident(inc));
    }

    /// Incidents open (or held) now, sorted by id.
    /// Incidents open now (published, not suppressed, not resolved).
    pub fn open_count(&self) -> usize {
        self.open
            .values()
            .filter(|o| o.held_until.is_none() && o.inc.status == IncidentStatus::Open)
            .count()
    }

    pub fn open_incidents(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.open.values().map(|o| &o.inc).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// Where a condition that must hold for a while stands.
enum Held {
    /// It does not hold (and its start is forgotten).
    No,
    /// It holds, and will have held long enough at this time.
    Until(Timestamp),
    /// It has held long enough (and its start is forgotten).
    Done,
}

/// Tracks how long `cond` has held (`for`, `clear_for`) in `since`.
fn debounce(since: &mut Option<Timestamp>, cond: bool, t: Timestamp, hold: Span) -> Held {
    if !cond {
        *since = None;
        return Held::No;
    }
    let start = *since.get_or_insert(t);
    if t.unix_nanos() - start.unix_nanos() >= hold.0 {
        *since = None;
        Held::Done
    } else {
        Held::Until(start.add_nanos(hold.0))
    }
}

/// The dedup slot of an incident: its group, the target it blames, its key.
fn slot_key(rule: &Rule, target: &Target, key: &str) -> String {
    format!("{}\u{0}{target}\u{0}{key}", rule.group)
}

fn add_evidence(o: &mut Open, events: &[String], at: Timestamp, max: usize) {
    o.inc.event_count += events.len().max(1) as u64;
    for id in events {
        if o.inc.events.len() < max && !o.inc.events.contains(id) {
            o.inc.events.push(id.clone());
        }
    }
    if at > o.last_at {
        o.last_at = at;
        o.inc.at = at;
    }
}

fn gpu_index(e: &Event) -> Option<u32> {
    e.gpu.as_ref().and_then(|g| g.index)
}

/// A job's id: the job events' own field, else the `job` label.
pub(crate) fn job_of(e: &Event) -> Option<&str> {
    match &e.data {
        EventData::JobStarted(j) => Some(&j.job),
        EventData::JobFinished(j) => Some(&j.job),
        EventData::JobNcclTimeout(j) => Some(&j.job),
        EventData::JobStep(j) => Some(&j.job),
        _ => e.labels.get("job").map(String::as_str),
    }
}

pub(crate) fn matches(m: &Matcher, event: &Event, labels: &[String]) -> bool {
    m.kinds.contains(event.kind()) && m.preds.iter().all(|p| pred(p, event, labels))
}

fn lit_eq(v: &Val<'_>, l: &Lit) -> bool {
    match (v, l) {
        (Val::Num(a), Lit::Num(b)) => a == b,
        (Val::Num(a), Lit::Bool(b)) => *a == f64::from(u8::from(*b)),
        (Val::Str(a), Lit::Str(b)) => a == b,
        (Val::Bool(a), Lit::Bool(b)) => a == b,
        (Val::Strings(_) | Val::Throttle(_), Lit::Str(b)) => v.contains(b),
        _ => false,
    }
}

pub(crate) fn pred(p: &Pred, event: &Event, labels: &[String]) -> bool {
    let v = read(&p.field, event, labels);
    match &p.op {
        Op::Exists(want) => !matches!(v, Val::Missing) == *want,
        _ if matches!(v, Val::Missing) => matches!(p.op, Op::Ne(_) | Op::NotIn(_)),
        Op::Eq(l) => lit_eq(&v, l),
        Op::Ne(l) => !lit_eq(&v, l),
        Op::In(ls) => ls.iter().any(|l| lit_eq(&v, l)),
        Op::NotIn(ls) => !ls.iter().any(|l| lit_eq(&v, l)),
        Op::Gt(n) => v.as_num().is_some_and(|x| x > *n),
        Op::Ge(n) => v.as_num().is_some_and(|x| x >= *n),
        Op::Lt(n) => v.as_num().is_some_and(|x| x < *n),
        Op::Le(n) => v.as_num().is_some_and(|x| x <= *n),
        Op::Contains(s) => v.contains(s),
        Op::Prefix(s) => matches!(v, Val::Str(x) if x.starts_with(s.as_str())),
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
