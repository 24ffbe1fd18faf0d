//! The two-stage evaluation path every runner shares: the streaming
//! service, `pitcrew test`, `pitcrew replay`, the simulator and the
//! benchmarks.
//!
//! A [`StagePlan`] splits a rule set into
//!
//! - the **node stage**: every rule that reads what an event carries, run
//!   over events keyed (and partitioned) by node. It also forwards each
//!   event a topology-group rule reads, re-keyed by that group
//!   ([`Emit::Forward`]), remembering the driver version each node last
//!   reported so a driver change reaches the `driver_version` route;
//! - the **group stage**: one engine per route (leaf switch, driver version,
//!   job...) for the fan-in rules and the rules they claim, over the
//!   re-keyed events.
//!
//! [`Stage`] is one of them over a partitioned input: one [`Engine`] set
//! per partition, where each partition is (`next_offset`), the rebuild of a
//! partition's state from its recent past ([`Stage::begin_rebuild`],
//! [`Stage::restore`]), and the idle advance that lets a quiet partition's
//! timers fire. [`Pipeline`] joins the two stages in one process, with one
//! partition each and every forward delivered at once: the path rule tests
//! and backtests run, so what they prove is what production runs.
//!
//! Contract: no Kafka, no clock, no I/O. Event time comes with the events;
//! the wall time the idle advance needs is passed in by the caller, as the
//! time since an origin of its choosing (a [`Duration`]); which partition
//! owns a node is the caller's partitioner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{Event, EventData, EventKind, Timestamp};

use crate::{group_value, Engine, EngineConfig, Inventory, Output, Program, Span, StagePlan};

/// The label a re-keyed event carries: which route's engines read it.
pub const ROUTE_LABEL: &str = "pitcrew.route";

/// Which of the two stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageKind {
    Node,
    Group,
}

impl StageKind {
    /// `node` or `group`, for metrics, logs and ids.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Node => "node",
            StageKind::Group => "group",
        }
    }
}

/// Which partition of the events topic a node's events land in (the
/// producers' partitioner), given the partition count.
pub type Partitioner = fn(&str, i32) -> i32;

/// Everything a stage needs besides its rules.
#[derive(Clone, Debug)]
pub struct StageConfig {
    /// Lateness, state bounds and dry run for every engine. Its
    /// `expect_inventory` applies to the node stage's absence rules; group
    /// engines never expect the inventory.
    pub engine: EngineConfig,
    /// The longest past a rebuild re-reads, whatever the rules' horizon.
    pub lookback_cap: Span,
    /// How long a partition may be quiet before its event time moves on at
    /// wall-clock pace, this far behind.
    pub idle_grace: Span,
    /// Partitions of the node stage's input (the events topic): absence
    /// rules expect, in each partition, only the nodes it owns.
    pub node_partitions: i32,
    /// Which partition owns a node.
    pub partitioner: Partitioner,
}

impl StageConfig {
    /// One partition: every node in it (rule tests, replays, the
    /// simulator).
    pub fn single_partition(engine: EngineConfig) -> StageConfig {
        StageConfig {
            engine,
            lookback_cap: Span::from_secs(3600),
            idle_grace: Span::from_secs(10),
            node_partitions: 1,
            partitioner: |_, _| 0,
        }
    }
}

/// What a stage makes of an event or a timer.
#[derive(Clone, Debug, PartialEq)]
pub enum Emit {
    /// An incident or an action request, for the alerts or actions topic.
    Output(Output),
    /// An event for the group stage: `key` is `<route>/<group value>` (the
    /// value empty when the node's group is unknown), the event carries
    /// [`ROUTE_LABEL`].
    Forward { key: String, event: Event },
}

/// The size of a stage's state, for gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    pub entries: usize,
    pub bytes: usize,
    pub open_incidents: usize,
}

/// One partition's engines (one for the node stage; one per route for the
/// group stage) and where the partition is.
#[derive(Debug)]
struct Slot {
    /// The node engine, or one per route in the plan's order.
    engines: Vec<Engine>,
    next_offset: i64,
    /// Event time and wall time of the last event, to move a quiet
    /// partition's time on.
    last: Option<(Timestamp, Duration)>,
}

/// One stage over a partitioned input. See the module docs.
#[derive(Debug)]
pub struct Stage {
    kind: StageKind,
    plan: Arc<StagePlan>,
    horizon: Span,
    inventory: Arc<Inventory>,
    cfg: StageConfig,
    slots: BTreeMap<i32, Slot>,
    /// Every kind some route reads: most events need no routing at all.
    route_kinds: u64,
    /// Node stage: the driver version each node last reported.
    drivers: rustc_hash::FxHashMap<String, String>,
    /// Late and overflow counts of engines dropped since, so totals only
    /// grow.
    retired: (u64, u64),
    /// The earliest event time any partition processed live: a partition
    /// that has had no event yet starts there when time moves on, so the
    /// inventory nodes it owns that never spoke are missed from then.
    first_seen: Option<Timestamp>,
}

impl Stage {
    /// A stage with no partitions yet. `horizon` is the rule set's (how far
    /// back a rebuild reads, capped by `lookback_cap`).
    pub fn new(
        kind: StageKind,
        plan: Arc<StagePlan>,
        horizon: Span,
        inventory: Arc<Inventory>,
        cfg: StageConfig,
    ) -> Stage {
        let route_kinds = plan.routes.iter().fold(0, |m, (_, p)| m | p.kind_mask());
        Stage {
            kind,
            route_kinds,
            plan,
            horizon,
            inventory,
            cfg,
            slots: BTreeMap::new(),
            drivers: rustc_hash::FxHashMap::default(),
            retired: (0, 0),
            first_seen: None,
        }
    }

    pub fn kind(&self) -> StageKind {
        self.kind
    }

    /// New rules, new state: every partition rebuilds from its past.
    pub fn set_rules(&mut self, plan: Arc<StagePlan>, horizon: Span) {
        self.route_kinds = plan.routes.iter().fold(0, |m, (_, p)| m | p.kind_mask());
        self.plan = plan;
        self.horizon = horizon;
        self.reset();
    }

    /// Forgets every partition (after a rebalance any of them may have been
    /// processed elsewhere in between).
    pub fn reset(&mut self) {
        let parts: Vec<i32> = self.slots.keys().copied().collect();
        for p in parts {
            self.forget(p);
        }
    }

    /// Forgets one partition: its next input rebuilds it.
    pub fn forget(&mut self, partition: i32) {
        if let Some(slot) = self.slots.remove(&partition) {
            for e in &slot.engines {
                self.retired.0 += e.stats().late;
                self.retired.1 += e.stats().overflow;
            }
        }
    }

    /// Keeps only the partitions `keep` says this instance still holds.
    pub fn retain(&mut self, mut keep: impl FnMut(i32) -> bool) {
        let gone: Vec<i32> = self.slots.keys().copied().filter(|&p| !keep(p)).collect();
        for p in gone {
            self.forget(p);
        }
    }

    /// Whether the message at `offset` needs the partition rebuilt first:
    /// never seen, or a rewind (offsets only skip forward, over
    /// transaction markers; going back means the state is ahead of the
    /// input).
    pub fn needs_rebuild(&self, partition: i32, offset: i64) -> bool {
        self.slots
            .get(&partition)
            .is_none_or(|s| offset < s.next_offset)
    }

    /// How far before the first message a rebuild re-reads: the rules'
    /// horizon, capped, and never less than the lateness.
    pub fn lookback(&self) -> Span {
        self.horizon
            .min(self.cfg.lookback_cap)
            .max(self.cfg.engine.allowed_lateness)
    }

    /// Starts a partition afresh, to process from `next_offset` on; feed it
    /// its past with [`Stage::restore`] before the first live event.
    pub fn begin_rebuild(&mut self, partition: i32, next_offset: i64) {
        self.forget(partition);
        let mut engines = Vec::new();
        for (_route, program) in self.programs() {
            let (inventory, expect) = match self.kind {
                // Absence rules expect only the nodes this partition owns.
                StageKind::Node => {
                    let (parts, owner) = (self.cfg.node_partitions, self.cfg.partitioner);
                    let inv = if parts <= 1 {
                        Arc::clone(&self.inventory)
                    } else {
                        Arc::new(self.inventory.filtered(|n| owner(n, parts) == partition))
                    };
                    (inv, self.cfg.engine.expect_inventory)
                }
                StageKind::Group => (Arc::clone(&self.inventory), false),
            };
            let cfg = EngineConfig {
                expect_inventory: expect,
                ..self.cfg.engine.clone()
            };
            engines.push(Engine::new(Arc::new(program), inventory, cfg));
        }
        self.slots.insert(
            partition,
            Slot {
                engines,
                next_offset,
                last: None,
            },
        );
    }

    /// Feeds a partition's past to its engines during a rebuild; what they
    /// produce was written by whoever processed those events, with the
    /// same ids, and is discarded.
    pub fn restore(&mut self, partition: i32, event: &Event) {
        if self.kind == StageKind::Node {
            self.note_driver(event);
        }
        let route = self.route_of(event);
        if let Some(slot) = self.slots.get_mut(&partition) {
            if let Some(e) = engine_for(self.kind, &mut slot.engines, route) {
                e.process(event);
                drop(e.drain());
            }
        }
    }

    /// Processes the live event at `offset` of `partition` (rebuilt first
    /// when [`Stage::needs_rebuild`] said so); `wall` is when it was read,
    /// on the caller's monotonic clock.
    pub fn process(
        &mut self,
        partition: i32,
        offset: i64,
        event: &Event,
        wall: Duration,
        out: &mut Vec<Emit>,
    ) {
        if self.kind == StageKind::Node {
            self.forward(event, out);
        }
        let route = self.route_of(event);
        self.live(partition, offset, event, wall, route, out);
    }

    /// A re-keyed event's route, as an index into the plan's routes.
    fn route_of(&self, event: &Event) -> Option<usize> {
        let name = event.labels.get(ROUTE_LABEL)?;
        self.plan.routes.iter().position(|(r, _)| r == name)
    }

    /// Feeds a live event to the partition's engine for `route` (an index
    /// into the plan's routes; the node stage has its one engine).
    fn live(
        &mut self,
        partition: i32,
        offset: i64,
        event: &Event,
        wall: Duration,
        route: Option<usize>,
        out: &mut Vec<Emit>,
    ) {
        if self.first_seen.is_none_or(|t| event.time < t) {
            self.first_seen = Some(event.time);
        }
        let Some(slot) = self.slots.get_mut(&partition) else {
            return;
        };
        slot.last = Some((event.time, wall));
        slot.next_offset = offset + 1;
        if let Some(e) = engine_for(self.kind, &mut slot.engines, route) {
            e.process(event);
            // Most events produce nothing: no drain, no allocation then.
            if !e.pending_outputs().is_empty() {
                out.extend(e.drain().into_iter().map(Emit::Output));
            }
        }
    }

    /// Steps over a message that was not an event (it was dead-lettered).
    pub fn skip(&mut self, partition: i32, offset: i64) {
        if let Some(slot) = self.slots.get_mut(&partition) {
            slot.next_offset = offset + 1;
        }
    }

    /// Moves every partition quiet for longer than the idle grace on to
    /// wall-clock pace, the grace behind its last event (so an agent's
    /// spooled backlog delayed by less still counts), firing its timers.
    pub fn advance_idle(&mut self, now: Duration, out: &mut Vec<Emit>) {
        let grace = Duration::from_nanos(u64::try_from(self.cfg.idle_grace.0).unwrap_or(0));
        for slot in self.slots.values_mut() {
            let Some((t, wall)) = slot.last else { continue };
            let idle = now.saturating_sub(wall);
            if idle <= grace {
                continue;
            }
            let to = t.add_nanos(i64::try_from((idle - grace).as_nanos()).unwrap_or(i64::MAX));
            advance_slot(slot, None, to, out);
        }
    }

    /// Moves every partition's event time to `to` (the end of a replay or
    /// a test), firing what is due.
    pub fn advance_to(&mut self, to: Timestamp, out: &mut Vec<Emit>) {
        for slot in self.slots.values_mut() {
            advance_slot(slot, self.first_seen, to, out);
        }
    }

    /// Late events and state-bound refusals so far, over the stage's life.
    pub fn totals(&self) -> (u64, u64) {
        let (mut late, mut over) = self.retired;
        for e in self.slots.values().flat_map(|s| &s.engines) {
            late += e.stats().late;
            over += e.stats().overflow;
        }
        (late, over)
    }

    /// The state held now.
    pub fn state_size(&self) -> StateSize {
        let mut size = StateSize::default();
        for e in self.slots.values().flat_map(|s| &s.engines) {
            size.entries += e.state_entries();
            size.bytes += e.state_bytes();
            size.open_incidents += e.open_count();
        }
        size
    }

    fn programs(&self) -> Vec<(String, Program)> {
        match self.kind {
            StageKind::Node => vec![("node".to_owned(), self.plan.node.clone())],
            StageKind::Group => self.plan.routes.clone(),
        }
    }

    /// Remembers a node's driver version; true when it changed.
    fn note_driver(&mut self, ev: &Event) -> bool {
        if let EventData::NodeHeartbeat(h) = &ev.data {
            if let Some(v) = &h.driver_version {
                if self.drivers.get(ev.node.as_str()) != Some(v) {
                    self.drivers.insert(ev.node.clone(), v.clone());
                    return true;
                }
            }
        }
        false
    }

    /// The routes (indices into the plan's) whose rules read `ev`; a
    /// node's new driver version reaches the driver route too.
    fn routes_reading(&mut self, ev: &Event, routes: &mut Vec<usize>) {
        let kind = ev.kind();
        let driver_changed = kind == EventKind::NodeHeartbeat && self.note_driver(ev);
        if !Program::mask_has(self.route_kinds, kind) && !driver_changed {
            return;
        }
        for (i, (route, program)) in self.plan.routes.iter().enumerate() {
            if program.reads(ev) || (driver_changed && route == "driver_version") {
                routes.push(i);
            }
        }
    }

    /// Sends an event on to the group stage for each route whose rules read
    /// it, keyed by the route's group value.
    fn forward(&mut self, ev: &Event, out: &mut Vec<Emit>) {
        let mut routes = Vec::new();
        self.routes_reading(ev, &mut routes);
        for i in routes {
            let route = &self.plan.routes[i].0;
            let driver = self.drivers.get(&ev.node).map(String::as_str);
            // A node whose group is unknown (not in the inventory, no driver
            // version yet) still has the route's member rules to answer to:
            // its events go to the route's "unknown" key, where the fan-in
            // cannot place them and the members evaluate them as usual.
            if ev.kind().is_facility() && route == "rack" {
                self.forward_facility(ev, route, out);
                continue;
            }
            let value = group_value(route, ev, &self.inventory, driver).unwrap_or_default();
            let mut event = ev.clone();
            event.labels.insert(ROUTE_LABEL.to_owned(), route.clone());
            out.push(Emit::Forward {
                key: format!("{route}/{value}"),
                event,
            });
        }
    }
}

impl Stage {
    /// A facility reading goes to each rack it serves, as a copy whose
    /// `data.racks` names that rack alone: the rack's engine keys it with
    /// the rack's nodes. The racks are the event's own, else its device's
    /// `[[facility]]` entry's; a device serving no known rack goes to the
    /// route's unknown key like a node outside the inventory.
    fn forward_facility(&self, ev: &Event, route: &str, out: &mut Vec<Emit>) {
        for (rack, mut event) in self.rack_copies(ev) {
            event
                .labels
                .insert(ROUTE_LABEL.to_owned(), route.to_owned());
            out.push(Emit::Forward {
                key: format!("{route}/{rack}"),
                event,
            });
        }
    }

    /// One copy of a facility event per rack it serves (see
    /// [`Stage::forward_facility`]), with the rack's name.
    fn rack_copies(&self, ev: &Event) -> Vec<(String, Event)> {
        let own = ev.data.facility_racks();
        let racks: &[String] = if own.is_empty() {
            self.inventory
                .facility(&ev.node)
                .map_or(&[][..], |f| f.racks.as_slice())
        } else {
            own
        };
        if racks.is_empty() {
            return vec![(String::new(), ev.clone())];
        }
        racks
            .iter()
            .map(|rack| {
                let mut event = ev.clone();
                event.data.set_facility_racks(vec![rack.clone()]);
                (rack.clone(), event)
            })
            .collect()
    }
}

/// Moves a slot's engines to `to`; one not started yet starts at `start`
/// first (when given), so its timers run from there.
fn advance_slot(slot: &mut Slot, start: Option<Timestamp>, to: Timestamp, out: &mut Vec<Emit>) {
    for e in &mut slot.engines {
        if let Some(s) = start.filter(|&s| s < to && !e.is_started()) {
            e.advance(s);
        }
        e.advance(to);
        out.extend(e.drain().into_iter().map(Emit::Output));
    }
}

/// The engine an event goes to: the node stage's one, or its route's.
fn engine_for(
    kind: StageKind,
    engines: &mut [Engine],
    route: Option<usize>,
) -> Option<&mut Engine> {
    match kind {
        StageKind::Node => engines.first_mut(),
        StageKind::Group => engines.get_mut(route?),
    }
}

/// Both stages in one process, one partition each, every forward delivered
/// at once: the streaming service's evaluation without Kafka.
#[derive(Debug)]
pub struct Pipeline {
    node: Stage,
    group: Stage,
    offset: i64,
    group_offset: i64,
    scratch: Vec<Emit>,
    routes: Vec<usize>,
}

impl Pipeline {
    /// Splits `program` into its stages. `engine.expect_inventory` applies
    /// to the node stage, as in the service.
    pub fn new(program: &Program, inventory: Arc<Inventory>, engine: EngineConfig) -> Pipeline {
        let plan = Arc::new(program.stage_plan());
        let horizon = program.horizon();
        let cfg = StageConfig::single_partition(engine);
        let mut node = Stage::new(
            StageKind::Node,
            Arc::clone(&plan),
            horizon,
            Arc::clone(&inventory),
            cfg.clone(),
        );
        let mut group = Stage::new(StageKind::Group, plan, horizon, inventory, cfg);
        node.begin_rebuild(0, 0);
        group.begin_rebuild(0, 0);
        Pipeline {
            node,
            group,
            offset: 0,
            group_offset: 0,
            scratch: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Feeds one event through both stages; appends what they produce.
    /// The group stage gets the event itself, not a re-keyed copy: in one
    /// process there is no key to compute and nothing to encode.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Output>) {
        let mut emits = std::mem::take(&mut self.scratch);
        let mut routes = std::mem::take(&mut self.routes);
        self.node.routes_reading(event, &mut routes);
        self.node
            .live(0, self.offset, event, Duration::ZERO, None, &mut emits);
        self.offset += 1;
        for &i in &routes {
            if event.kind().is_facility() && self.node.plan.routes[i].0 == "rack" {
                for (_, copy) in self.node.rack_copies(event) {
                    self.group.live(
                        0,
                        self.group_offset,
                        &copy,
                        Duration::ZERO,
                        Some(i),
                        &mut emits,
                    );
                    self.group_offset += 1;
                }
                continue;
            }
            self.group.live(
                0,
                self.group_offset,
                event,
                Duration::ZERO,
                Some(i),
                &mut emits,
            );
            self.group_offset += 1;
        }
        routes.clear();
        self.routes = routes;
        self.collect(&mut emits, out);
        self.scratch = emits;
    }

    /// Moves both stages' event time to `to`, firing what is due.
    pub fn advance(&mut self, to: Timestamp, out: &mut Vec<Output>) {
        let mut emits = std::mem::take(&mut self.scratch);
        self.node.advance_to(to, &mut emits);
        self.group.advance_to(to, &mut emits);
        self.collect(&mut emits, out);
        self.scratch = emits;
    }

    /// Late events and state-bound refusals, both stages together.
    pub fn totals(&self) -> (u64, u64) {
        let (a, b) = self.node.totals();
        let (c, d) = self.group.totals();
        (a + c, b + d)
    }

    /// The state both stages hold.
    pub fn state_size(&self) -> StateSize {
        let (a, b) = (self.node.state_size(), self.group.state_size());
        StateSize {
            entries: a.entries + b.entries,
            bytes: a.bytes + b.bytes,
            open_incidents: a.open_incidents + b.open_incidents,
        }
    }

    /// Outputs go out (a pipeline forwards nothing through `emits`).
    fn collect(&mut self, emits: &mut Vec<Emit>, out: &mut Vec<Output>) {
        for e in emits.drain(..) {
            if let Emit::Output(o) = e {
                out.push(o);
            }
        }
    }
}
