//! The compiled form of a rule set: what the evaluator runs.

use std::collections::BTreeMap;

use pitcrew_contract::{EventKind, Severity, TargetKind};

use crate::duration::Span;
use crate::field::FieldRef;
use crate::template::Template;

/// A set of event kinds, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KindSet(pub(crate) u64);

impl KindSet {
    /// The kind's bit: its discriminant, which indexes `EventKind::ALL`
    /// (checked by a test), so no search on the hot path.
    pub(crate) fn bit(kind: EventKind) -> u64 {
        1u64 << (kind as usize).min(63)
    }
    pub(crate) fn insert(&mut self, kind: EventKind) {
        self.0 |= Self::bit(kind);
    }
    pub(crate) fn contains(&self, kind: EventKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }
    pub(crate) fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }
}

/// A literal in a `where` clause.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
}

/// A comparison in a `where` clause.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Eq(Lit),
    Ne(Lit),
    In(Vec<Lit>),
    NotIn(Vec<Lit>),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Contains(String),
    Prefix(String),
    Exists(bool),
}

#[derive(Clone, Debug)]
pub(crate) struct Pred {
    pub(crate) field: FieldRef,
    pub(crate) op: Op,
}

/// Which events a clause selects.
#[derive(Clone, Debug, Default)]
pub(crate) struct Matcher {
    pub(crate) kinds: KindSet,
    pub(crate) preds: Vec<Pred>,
}

/// One dimension of a key, or a topology group.
#[derive(Clone, Debug)]
pub(crate) enum Dim {
    Node,
    Gpu,
    Rack,
    LeafSwitch,
    Pdu,
    Bmc,
    DriverVersion,
    Job,
    /// A free label of the event (`labels.X`).
    Label(u16),
    /// A `data.*` field.
    Field(FieldRef),
}

impl Dim {
    /// What a target named by this dimension is.
    pub(crate) fn target_kind(&self) -> Option<TargetKind> {
        Some(match self {
            Dim::Node => TargetKind::Node,
            Dim::Gpu => TargetKind::Gpu,
            Dim::Rack => TargetKind::Rack,
            Dim::LeafSwitch => TargetKind::LeafSwitch,
            Dim::Pdu => TargetKind::Pdu,
            Dim::DriverVersion => TargetKind::DriverVersion,
            Dim::Job => TargetKind::Job,
            Dim::Bmc | Dim::Label(_) | Dim::Field(_) => return None,
        })
    }
}

/// How a window aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Agg {
    Count,
    Rate,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Clone, Debug)]
pub(crate) struct WindowSpec {
    pub(crate) over: Span,
    pub(crate) agg: Agg,
    pub(crate) field: Option<FieldRef>,
    /// Bucket width: the window slides in steps of this.
    pub(crate) step: Span,
    pub(crate) buckets: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    pub(crate) fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Cmp::Gt => v > t,
            Cmp::Ge => v >= t,
            Cmp::Lt => v < t,
            Cmp::Le => v <= t,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Threshold {
    pub(crate) cmp: Cmp,
    pub(crate) fire: f64,
    /// The value must cross this (the other way) to clear.
    pub(crate) clear: f64,
    pub(crate) hold_for: Span,
    pub(crate) clear_for: Span,
}

impl Threshold {
    pub(crate) fn firing_condition(&self, v: f64) -> bool {
        self.cmp.holds(v, self.fire)
    }
    /// Whether `v` is on the clear side of the clear threshold.
    pub(crate) fn clear_condition(&self, v: f64) -> bool {
        match self.cmp {
            Cmp::Gt | Cmp::Ge => {
                v < self.clear || (self.clear == self.fire && !self.firing_condition(v))
            }
            Cmp::Lt | Cmp::Le => {
                v > self.clear || (self.clear == self.fire && !self.firing_condition(v))
            }
        }
    }
}

/// The value a threshold compares when there is no window.
#[derive(Clone, Debug)]
pub(crate) enum ValueSrc {
    /// A number (or boolean) field of the event.
    Field(FieldRef),
    /// 1 when the predicates hold for the event, else 0.
    Pred(Vec<Pred>),
}

/// What makes a rule fire.
#[derive(Clone, Debug)]
pub(crate) enum Logic {
    /// Every matching event (no window, no threshold).
    Each,
    /// A value (the event's field, or a window's aggregate) against a
    /// threshold with hysteresis.
    Threshold {
        window: Option<WindowSpec>,
        value: Option<ValueSrc>,
        threshold: Threshold,
    },
    /// `first` then `then` on the same key within `within`; with
    /// `negate`, `first` NOT followed by `then` within `within`.
    Sequence {
        first: Matcher,
        then: Matcher,
        within: Span,
        negate: bool,
    },
    /// No matching event from a key for `after`; with `inventory`, every
    /// inventory node is expected from the start.
    Absence { after: Span, inventory: bool },
    /// `min` distinct `member`s of a group within `within`.
    FanIn { member: Dim, min: u32, within: Span },
}

/// What an incident asks remediation to do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PlanSpec {
    pub(crate) name: String,
    pub(crate) params: BTreeMap<String, serde_json::Value>,
}

/// A repeat offender: the Nth incident of the same group on the same
/// target within `within` asks for another plan.
#[derive(Clone, Debug)]
pub(crate) struct Repeat {
    pub(crate) count: u32,
    pub(crate) within: Span,
    pub(crate) plan: Option<PlanSpec>,
    pub(crate) severity: Option<Severity>,
    pub(crate) summary: Option<Template>,
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) severity: Severity,
    /// The rule's key: one state per distinct value.
    pub(crate) key: Vec<Dim>,
    /// What the incident blames: a target kind and the dimension naming it.
    pub(crate) blame: (TargetKind, Dim),
    pub(crate) summary: Template,
    pub(crate) plan: Option<PlanSpec>,
    pub(crate) labels: BTreeMap<String, String>,
    /// Selects the events the rule looks at (all but sequences).
    pub(crate) when: Matcher,
    pub(crate) logic: Logic,
    /// Incidents of rules sharing a group and a blamed target are one
    /// incident.
    pub(crate) group: String,
    /// An incident waits this long before it opens, so a parent can claim it.
    pub(crate) hold: Span,
    /// Quiet time after which an incident without a clear condition resolves.
    pub(crate) resolve_after: Span,
    /// Rules whose incidents this one claims (by group member or by target).
    pub(crate) suppresses: Vec<usize>,
    pub(crate) repeat: Option<Repeat>,
    /// Open as suppressed (no action) while the node is in maintenance.
    pub(crate) respect_maintenance: bool,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The kinds of event this rule reads.
    pub fn kinds(&self) -> Vec<EventKind> {
        let mut set = self.when.kinds;
        if let Logic::Sequence { first, then, .. } = &self.logic {
            set.0 |= first.kinds.0 | then.kinds.0;
        }
        set.iter().collect()
    }

    /// The longest stretch of event time this rule remembers: how far back
    /// a restarted instance must re-read to rebuild its state.
    pub fn horizon(&self) -> Span {
        let logic = match &self.logic {
            Logic::Each => Span::ZERO,
            Logic::Threshold {
                window, threshold, ..
            } => Span(
                window.as_ref().map_or(0, |w| w.over.0)
                    + threshold.hold_for.0.max(threshold.clear_for.0),
            ),
            Logic::Sequence { within, .. } => *within,
            Logic::Absence { after, .. } => *after,
            Logic::FanIn { within, .. } => *within,
        };
        Span(logic.0.max(self.hold.0).max(self.resolve_after.0))
    }

    /// Whether this rule needs events re-keyed by a topology group (a
    /// fan-in over something other than the node), or is claimed by one.
    pub(crate) fn group_dim(&self) -> Option<&Dim> {
        match (&self.logic, self.key.first()) {
            (Logic::FanIn { .. }, Some(d)) if !matches!(d, Dim::Node) => Some(d),
            _ => None,
        }
    }
}

/// A compiled rule set.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub(crate) rules: Vec<Rule>,
    /// Per event kind (index into `EventKind::ALL`), the rules that read it.
    pub(crate) by_kind: Vec<Vec<usize>>,
    /// Label names rules read, interned.
    pub(crate) labels: Vec<String>,
    /// Plans the set's files declared on top of the built-in catalogue.
    pub(crate) extra_plans: Vec<String>,
}

impl Program {
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The longest horizon of any rule.
    pub fn horizon(&self) -> Span {
        self.rules
            .iter()
            .map(Rule::horizon)
            .max()
            .unwrap_or(Span::ZERO)
    }

    pub(crate) fn index(&mut self) {
        let mut by_kind = vec![Vec::new(); EventKind::ALL.len()];
        for (i, r) in self.rules.iter().enumerate() {
            for k in r.kinds() {
                if let Some(p) = EventKind::ALL.iter().position(|x| *x == k) {
                    by_kind[p].push(i);
                }
            }
        }
        self.by_kind = by_kind;
    }

    /// A program with only the named rules (or all but them), for splitting
    /// one set across a node stage and a group stage.
    pub fn subset(&self, names: &[String], keep_named: bool) -> Program {
        let keep: Vec<bool> = self
            .rules
            .iter()
            .map(|r| names.contains(&r.name) == keep_named)
            .collect();
        let mut remap = vec![usize::MAX; self.rules.len()];
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if keep[i] {
                remap[i] = rules.len();
                rules.push(r.clone());
            }
        }
        for r in &mut rules {
            r.suppresses = r
                .suppresses
                .iter()
                .filter_map(|&s| (remap[s] != usize::MAX).then_some(remap[s]))
                .collect();
        }
        let mut p = Program {
            rules,
            by_kind: Vec::new(),
            labels: self.labels.clone(),
            extra_plans: self.extra_plans.clone(),
        };
        p.index();
        p
    }
}

/// How a rule set splits across the streaming stages: rules keyed by what
/// an event carries run where events are keyed by node; a fan-in over a
/// topology group (and the rules it claims) runs where events are re-keyed
/// by that group, one route per group dimension.
#[derive(Clone, Debug)]
pub struct StagePlan {
    pub node: Program,
    /// (route name, e.g. `leaf_switch`, and its rules).
    pub routes: Vec<(String, Program)>,
}

impl Program {
    /// Splits this program for the node stage and the group routes.
    pub fn stage_plan(&self) -> StagePlan {
        let mut routes: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.rules {
            let Some(dim) = r.group_dim() else { continue };
            let name = crate::compile::dim_name(dim);
            let mut names = vec![r.name.clone()];
            names.extend(r.suppresses.iter().map(|&s| self.rules[s].name.clone()));
            match routes.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.extend(names),
                None => routes.push((name, names)),
            }
        }
        let all: Vec<String> = routes.iter().flat_map(|(_, v)| v.clone()).collect();
        StagePlan {
            node: self.subset(&all, false),
            routes: routes
                .into_iter()
                .map(|(n, v)| (n, self.subset(&v, true)))
                .collect(),
        }
    }

    /// The kinds any rule of this program reads (a quick test before
    /// [`Program::reads`]).
    pub fn kind_mask(&self) -> u64 {
        self.rules.iter().fold(0, |m, r| {
            let mut set = r.when.kinds;
            if let Logic::Sequence { first, then, .. } = &r.logic {
                set.0 |= first.kinds.0 | then.kinds.0;
            }
            m | set.0
        })
    }

    /// Whether `kind` is in a [`Program::kind_mask`].
    pub fn mask_has(mask: u64, kind: pitcrew_contract::EventKind) -> bool {
        mask & KindSet::bit(kind) != 0
    }

    /// Whether any rule of this program selects `event` (its kind and
    /// `where`; a threshold's value reads every event of its kind).
    pub fn reads(&self, event: &pitcrew_contract::Event) -> bool {
        let Some(rules) = self.by_kind.get(event.kind() as usize) else {
            return false;
        };
        rules.iter().any(|&i| {
            let r = &self.rules[i];
            match &r.logic {
                Logic::Sequence { first, then, .. } => {
                    crate::engine::matches(first, event, &self.labels)
                        || crate::engine::matches(then, event, &self.labels)
                }
                Logic::Threshold { .. } => r.when.kinds.contains(event.kind()),
                _ => crate::engine::matches(&r.when, event, &self.labels),
            }
        })
    }
}

/// The value of a route's group for an event: its job, or its node's
/// rack, leaf switch, PDU or BMC from the inventory, or its driver version
/// (`driver`, the node's latest heartbeat, before the inventory's).
pub fn group_value(
    route: &str,
    event: &pitcrew_contract::Event,
    inventory: &crate::Inventory,
    driver: Option<&str>,
) -> Option<String> {
    let node = inventory.get(&event.node);
    match route {
        "job" => crate::engine::job_of(event).map(str::to_owned),
        "rack" => node?.rack.clone(),
        "leaf_switch" => node?.leaf_switch.clone(),
        "pdu" => node?.pdu.clone(),
        "bmc" => node?.bmc.clone(),
        "driver_version" => match &event.data {
            pitcrew_contract::EventData::NodeHeartbeat(h) if h.driver_version.is_some() => {
                h.driver_version.clone()
            }
            _ => driver
                .map(str::to_owned)
                .or_else(|| node.and_then(|n| n.driver_version.clone())),
        },
        _ => None,
    }
}
