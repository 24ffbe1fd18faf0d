//! The governor: the one gate in front of every destructive step.
//!
//! Pure: no I/O, no clock (time is passed in), so every decision is
//! testable and explainable. Checks, in order:
//!
//! 1. the circuit breaker: latched open, nothing destructive passes until
//!    a person resets it;
//! 2. per-target cooldown and attempt budget (the first destructive step of
//!    a plan only): a target that keeps failing is escalated, not retried;
//! 3. fleet-wide targets out of service, as a count and a percentage of the
//!    inventory, and per topology domain (rack, leaf switch, PDU);
//! 4. token buckets per step kind per domain (e.g. 2 power cycles per rack
//!    per hour).
//!
//! Refusals of 3 and 4 are the signature of a storm: `trip_after` of them
//! within `trip_window` latch the breaker.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{BreakerState, Target, Timestamp};
use pitcrew_rules::Inventory;
use serde::Deserialize;

use crate::plan::StepKind;

/// A topology dimension budgets and buckets count by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Fleet,
    Rack,
    LeafSwitch,
    Pdu,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Fleet => "fleet",
            Scope::Rack => "rack",
            Scope::LeafSwitch => "leaf_switch",
            Scope::Pdu => "pdu",
        }
    }
}

/// A token bucket: `capacity` steps of `step` per `per` domain, refilled
/// evenly over `period`.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketSpec {
    pub step: StepKind,
    pub per: Scope,
    pub capacity: u32,
    pub period: Duration,
}

/// The governor's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct GovernorConfig {
    /// Targets out of service because of pitcrew, at most.
    pub max_out_of_service: usize,
    /// ... and at most this percentage of the inventory (never below one
    /// node, or a small fleet could never be remediated).
    pub max_out_of_service_percent: f64,
    /// Out of service per domain, at most (e.g. rack: 2).
    pub domain_max: BTreeMap<Scope, usize>,
    pub buckets: Vec<BucketSpec>,
    /// After a destructive plan starts, the target's next one waits this long.
    pub cooldown: Duration,
    /// Destructive plans per target within `attempt_window`, at most.
    pub max_attempts: u32,
    pub attempt_window: Duration,
    /// Budget and rate refusals within `trip_window` that latch the breaker.
    pub trip_after: u32,
    pub trip_window: Duration,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            max_out_of_service: 50,
            max_out_of_service_percent: 5.0,
            domain_max: BTreeMap::from([(Scope::Rack, 2), (Scope::LeafSwitch, 4)]),
            buckets: vec![BucketSpec {
                step: StepKind::PowerCycle,
                per: Scope::Rack,
                capacity: 4,
                period: Duration::from_secs(3600),
            }],
            cooldown: Duration::from_secs(30 * 60),
            max_attempts: 3,
            attempt_window: Duration::from_secs(24 * 3600),
            trip_after: 5,
            trip_window: Duration::from_secs(600),
        }
    }
}

/// What the governor is asked.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    pub target: &'a Target,
    pub step: StepKind,
    /// The first destructive step of this plan run (cooldown and attempts
    /// are checked once per plan, not per step).
    pub plan_start: bool,
    /// Destructive plan starts on this target (from its state).
    pub attempts: &'a [Timestamp],
    pub cooldown_until: Option<Timestamp>,
    /// The plan hands the target to people (it has an `rma` step): a node
    /// that keeps failing must still be taken out, so cooldown and the
    /// attempt budget, which stop remediation loops, do not hold it back.
    /// The breaker, the budgets and the buckets still do.
    pub hands_off: bool,
}

/// Why a step was refused. `escalate`: the target needs people (cooldown
/// or attempt budget), not a later retry.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    BreakerOpen,
    Cooldown,
    AttemptBudget,
    FleetBudget,
    DomainBudget,
    RateLimited,
}

impl RefusalKind {
    /// Bounded metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalKind::BreakerOpen => "breaker_open",
            RefusalKind::Cooldown => "cooldown",
            RefusalKind::AttemptBudget => "attempt_budget",
            RefusalKind::FleetBudget => "fleet_budget",
            RefusalKind::DomainBudget => "domain_budget",
            RefusalKind::RateLimited => "rate_limited",
        }
    }

    /// The target needs people rather than a later retry.
    pub const fn escalates(self) -> bool {
        matches!(self, RefusalKind::Cooldown | RefusalKind::AttemptBudget)
    }

    /// A sign of a storm: counts toward tripping the breaker.
    const fn is_storm_signal(self) -> bool {
        matches!(
            self,
            RefusalKind::FleetBudget | RefusalKind::DomainBudget | RefusalKind::RateLimited
        )
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused; `tripped` is set when this refusal latched the breaker.
    Refuse {
        refusal: Refusal,
        tripped: Option<BreakerState>,
    },
}

#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

/// How much of the budgets is used, for metrics and the demo's view.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetUse {
    pub out_of_service: usize,
    pub max_out_of_service: usize,
    pub breaker_open: bool,
}

/// The governor's state: who is out of service, buckets, the breaker.
#[derive(Debug)]
pub struct Governor {
    cfg: GovernorConfig,
    inventory: Arc<Inventory>,
    out: BTreeSet<Target>,
    /// Targets of `out` per domain (rack, leaf switch, PDU), kept with
    /// `out` so a domain check is one lookup, not a walk of `out`.
    out_per_domain: HashMap<(Scope, String), usize>,
    buckets: BTreeMap<(StepKind, Scope, String), Bucket>,
    storm: VecDeque<Timestamp>,
    breaker: Option<BreakerState>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Governor {
    pub fn new(cfg: GovernorConfig, inventory: Arc<Inventory>) -> Governor {
        Governor {
            cfg,
            inventory,
            out: BTreeSet::new(),
            out_per_domain: HashMap::new(),
            buckets: BTreeMap::new(),
            storm: VecDeque::new(),
            breaker: None,
        }
    }

    pub fn config(&self) -> &GovernorConfig {
        &self.cfg
    }

    /// The fleet-wide limit: the count, and the percentage of the
    /// inventory (at least one).
    pub fn fleet_limit(&self) -> usize {
        let n = self.inventory.len();
        if n == 0 {
            return self.cfg.max_out_of_service;
        }
        let pct = (n as f64 * self.cfg.max_out_of_service_percent / 100.0).floor() as usize;
        self.cfg.max_out_of_service.min(pct.max(1))
    }

    fn domain_of(&self, target: &Target, scope: Scope) -> Option<String> {
        if scope == Scope::Fleet {
            return Some("fleet".to_owned());
        }
        let node = self.inventory.get(&target.name)?;
        match scope {
            Scope::Rack => node.rack.clone(),
            Scope::LeafSwitch => node.leaf_switch.clone(),
            Scope::Pdu => node.pdu.clone(),
            Scope::Fleet => None,
        }
    }

    /// Marks a target out of service (restoring state after a restart).
    pub fn mark_out(&mut self, target: &Target) {
        if self.out.insert(target.clone()) {
            self.count_domains(target, true);
        }
    }

    /// The target is back in service (or handed to people and removed
    /// from the fleet by them: `pitcrew` no longer holds it).
    pub fn release(&mut self, target: &Target) {
        if self.out.remove(target) {
            self.count_domains(target, false);
        }
    }

    fn count_domains(&mut self, target: &Target, added: bool) {
        for scope in [Scope::Rack, Scope::LeafSwitch, Scope::Pdu] {
            let Some(domain) = self.domain_of(target, scope) else {
                continue;
            };
            let key = (scope, domain);
            if added {
                *self.out_per_domain.entry(key).or_insert(0) += 1;
            } else if let Some(n) = self.out_per_domain.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.out_per_domain.remove(&key);
                }
            }
        }
    }

    pub fn is_out(&self, target: &Target) -> bool {
        self.out.contains(target)
    }

    pub fn breaker(&self) -> Option<&BreakerState> {
        self.breaker.as_ref().filter(|b| b.open)
    }

    pub fn restore_breaker(&mut self, state: BreakerState) {
        self.breaker = Some(state);
    }

    /// A person reset the breaker. Returns whether it was open.
    pub fn reset_breaker(&mut self) -> bool {
        self.storm.clear();
        self.breaker.take().is_some_and(|b| b.open)
    }

    pub fn budget_use(&self) -> BudgetUse {
        BudgetUse {
            out_of_service: self.out.len(),
            max_out_of_service: self.fleet_limit(),
            breaker_open: self.breaker().is_some(),
        }
    }

    /// Latches the breaker by hand (admin API) or from a storm.
    pub fn open_breaker(&mut self, reason: String, now: Timestamp) -> BreakerState {
        let state = BreakerState {
            open: true,
            reason,
            opened_at: now,
        };
        self.breaker = Some(state.clone());
        state
    }

    /// Decides one step. An allowed step that takes the target out of
    /// service counts against the budgets from now on.
    pub fn check(&mut self, ask: &Ask<'_>, now: Timestamp) -> Verdict {
        if !ask.step.is_destructive() {
            return Verdict::Allow;
        }
        match self.evaluate(ask, now) {
            Ok(()) => Verdict::Allow,
            Err(refusal) => {
                let tripped = if refusal.kind.is_storm_signal() {
                    self.note_storm(now)
                } else {
                    None
                };
                Verdict::Refuse { refusal, tripped }
            }
        }
    }

    fn note_storm(&mut self, now: Timestamp) -> Option<BreakerState> {
        let horizon = now.unix_nanos() - nanos(self.cfg.trip_window);
        while self.storm.front().is_some_and(|t| t.unix_nanos() < horizon) {
            self.storm.pop_front();
        }
        self.storm.push_back(now);
        if self.breaker().is_none() && self.storm.len() >= self.cfg.trip_after as usize {
            let reason = format!(
                "{} budget or rate refusals within {} s: a remediation storm",
                self.storm.len(),
                self.cfg.trip_window.as_secs()
            );
            Some(self.open_breaker(reason, now))
        } else {
            None
        }
    }

    fn evaluate(&mut self, ask: &Ask<'_>, now: Timestamp) -> Result<(), Refusal> {
        let refuse = |kind, message: String| Err(Refusal { kind, message });
        if let Some(b) = self.breaker() {
            return refuse(
                RefusalKind::BreakerOpen,
                format!("circuit breaker open since {}: {}", b.opened_at, b.reason),
            );
        }
        if ask.plan_start && !ask.hands_off {
            if let Some(until) = ask.cooldown_until.filter(|u| *u > now) {
                return refuse(
                    RefusalKind::Cooldown,
                    format!("{} is cooling down until {until}", ask.target),
                );
            }
            let since = now.unix_nanos() - nanos(self.cfg.attempt_window);
            let recent = ask
                .attempts
                .iter()
                .filter(|t| t.unix_nanos() >= since)
                .count();
            if recent >= self.cfg.max_attempts as usize {
                return refuse(
                    RefusalKind::AttemptBudget,
                    format!(
                        "{} had {recent} destructive attempts within {} h (budget {})",
                        ask.target,
                        self.cfg.attempt_window.as_secs() / 3600,
                        self.cfg.max_attempts
                    ),
                );
            }
        }
        let newly_out = ask.step.takes_out_of_service() && !self.out.contains(ask.target);
        if newly_out {
            let limit = self.fleet_limit();
            if self.out.len() >= limit {
                return refuse(
                    RefusalKind::FleetBudget,
                    format!(
                        "fleet budget: {} of {limit} targets out of service",
                        self.out.len()
                    ),
                );
            }
            for (&scope, &max) in &self.cfg.domain_max {
                let Some(domain) = self.domain_of(ask.target, scope) else {
                    continue;
                };
                let key = (scope, domain);
                let used = if scope == Scope::Fleet {
                    self.out.len()
                } else {
                    self.out_per_domain.get(&key).copied().unwrap_or(0)
                };
                if used >= max {
                    return refuse(
                        RefusalKind::DomainBudget,
                        format!(
                            "{} {} budget: {used} of {max} out of service",
                            scope.as_str(),
                            key.1
                        ),
                    );
                }
            }
        }
        // Take tokens only once every check passed, so a refusal costs none.
        let mut take = Vec::new();
        for spec in self.cfg.buckets.iter().filter(|b| b.step == ask.step) {
            let Some(domain) = self.domain_of(ask.target, spec.per) else {
                continue;
            };
            let key = (spec.step, spec.per, domain);
            let capacity = f64::from(spec.capacity);
            let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
            let elapsed = (now.unix_nanos() - bucket.at.unix_nanos()).max(0) as f64;
            let period = nanos(spec.period).max(1) as f64;
            bucket.tokens = (bucket.tokens + elapsed * capacity / period).min(capacity);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                return refuse(
                    RefusalKind::RateLimited,
                    format!(
                        "{} {} rate: {} per {} s used up",
                        spec.per.as_str(),
                        key.2,
                        spec.capacity,
                        spec.period.as_secs()
                    ),
                );
            }
            take.push(key);
        }
        for key in take {
            if let Some(b) = self.buckets.get_mut(&key) {
                b.tokens -= 1.0;
            }
        }
        if newly_out {
            self.mark_out(ask.target);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use pitcrew_rules::NodeInfo;

    fn inventory(nodes: usize, per_rack: usize) -> Arc<Inventory> {
        Arc::new(Inventory::new(
            (0..nodes)
                .map(|i| NodeInfo {
                    name: format!("n{i}"),
                    rack: Some(format!("r{}", i / per_rack)),
                    leaf_switch: Some(format!("leaf{}", i / (per_rack * 2))),
                    ..NodeInfo::default()
                })
                .collect(),
        ))
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000)
    }

    fn ask<'a>(target: &'a Target, step: StepKind) -> Ask<'a> {
        Ask {
            target,
            step,
            plan_start: true,
            attempts: &[],
            cooldown_until: None,
            hands_off: false,
        }
    }

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allow)
    }

    #[test]
    fn domain_budget_counts_per_rack() {
        let mut cfg = GovernorConfig::default();
        cfg.max_out_of_service = 100;
        cfg.max_out_of_service_percent = 100.0;
        let mut g = Governor::new(cfg, inventory(16, 4));
        let nodes: Vec<Target> = (0..4).map(|i| Target::node(format!("n{i}"))).collect();
        assert!(allowed(&g.check(&ask(&nodes[0], StepKind::Cordon), t(0))));
        assert!(allowed(&g.check(&ask(&nodes[1], StepKind::Cordon), t(0))));
        // The same target's next step is not a second node out.
        assert!(allowed(&g.check(&ask(&nodes[1], StepKind::Drain), t(0))));
        match g.check(&ask(&nodes[2], StepKind::Cordon), t(0)) {
            Verdict::Refuse { refusal, .. } => {
                assert_eq!(refusal.kind, RefusalKind::DomainBudget);
                assert_eq!(refusal.message, "rack r0 budget: 2 of 2 out of service");
            }
            v => panic!("{v:?}"),
        }
        // Another rack has its own budget.
        let other = Target::node("n4");
        assert!(allowed(&g.check(&ask(&other, StepKind::Cordon), t(0))));
        g.release(&nodes[0]);
        assert!(allowed(&g.check(&ask(&nodes[2], StepKind::Cordon), t(0))));
    }

    #[test]
    fn fleet_budget_takes_the_smaller_of_count_and_percent() {
        let mut cfg = GovernorConfig::default();
        cfg.domain_max.clear();
        cfg.max_out_of_service = 10;
        cfg.max_out_of_service_percent = 5.0;
        let mut g = Governor::new(cfg, inventory(100, 4));
        assert_eq!(g.fleet_limit(), 5);
        let targets: Vec<Target> = (0..7).map(|i| Target::node(format!("n{i}"))).collect();
        let ok = targets
            .iter()
            .filter(|tg| allowed(&g.check(&ask(tg, StepKind::Cordon), t(0))))
            .count();
        assert_eq!(ok, 5);
        // A small fleet still gets one.
        let g = Governor::new(GovernorConfig::default(), inventory(3, 4));
        assert_eq!(g.fleet_limit(), 1);
    }

    #[test]
    fn buckets_refill_over_their_period() {
        let mut cfg = GovernorConfig::default();
        cfg.domain_max.clear();
        cfg.max_out_of_service = 100;
        cfg.max_out_of_service_percent = 100.0;
        cfg.trip_after = 100;
        cfg.buckets = vec![BucketSpec {
            step: StepKind::PowerCycle,
            per: Scope::Rack,
            capacity: 2,
            period: Duration::from_secs(3600),
        }];
        let mut g = Governor::new(cfg, inventory(8, 8));
        let ts: Vec<Target> = (0..4).map(|i| Target::node(format!("n{i}"))).collect();
        assert!(allowed(&g.check(&ask(&ts[0], StepKind::PowerCycle), t(0))));
        assert!(allowed(&g.check(&ask(&ts[1], StepKind::PowerCycle), t(1))));
        let v = g.check(&ask(&ts[2], StepKind::PowerCycle), t(2));
        assert!(
            matches!(&v, Verdict::Refuse { refusal, .. } if refusal.kind == RefusalKind::RateLimited),
            "{v:?}"
        );
        // Half an hour refills one token.
        assert!(allowed(
            &g.check(&ask(&ts[2], StepKind::PowerCycle), t(1802))
        ));
        assert!(!allowed(
            &g.check(&ask(&ts[3], StepKind::PowerCycle), t(1803))
        ));
    }

    #[test]
    fn cooldown_and_attempts_escalate() {
        let mut g = Governor::new(GovernorConfig::default(), inventory(100, 4));
        let n = Target::node("n1");
        let a = Ask {
            cooldown_until: Some(t(100)),
            hands_off: false,
            ..ask(&n, StepKind::Cordon)
        };
        match g.check(&a, t(50)) {
            Verdict::Refuse { refusal, tripped } => {
                assert_eq!(refusal.kind, RefusalKind::Cooldown);
                assert!(refusal.kind.escalates());
                assert!(tripped.is_none());
            }
            v => panic!("{v:?}"),
        }
        let attempts = [t(0), t(10), t(20)];
        let a = Ask {
            attempts: &attempts,
            ..ask(&n, StepKind::Cordon)
        };
        assert!(!allowed(&g.check(&a, t(200))));
        // Attempts older than the window do not count.
        assert!(allowed(&g.check(&a, t(2 * 24 * 3600))));
        // Only the plan's first destructive step is checked.
        let a = Ask {
            attempts: &attempts,
            plan_start: false,
            ..ask(&n, StepKind::Drain)
        };
        assert!(allowed(&g.check(&a, t(200))));
        // A plan that hands the node to people (RMA) still takes it out.
        let a = Ask {
            attempts: &attempts,
            cooldown_until: Some(t(300)),
            hands_off: true,
            ..ask(&n, StepKind::Cordon)
        };
        assert!(allowed(&g.check(&a, t(200))));
        // But never past the breaker.
        g.open_breaker("test".into(), t(200));
        assert!(!allowed(&g.check(&a, t(201))));
    }

    #[test]
    fn a_storm_latches_the_breaker_until_reset() {
        let mut cfg = GovernorConfig::default();
        cfg.max_out_of_service = 3;
        cfg.max_out_of_service_percent = 100.0;
        cfg.domain_max.clear();
        cfg.trip_after = 5;
        let mut g = Governor::new(cfg, inventory(30, 30));
        let ts: Vec<Target> = (0..30).map(|i| Target::node(format!("n{i}"))).collect();
        let mut allowed_n = 0;
        let mut trips = 0;
        let mut breaker_refusals = 0;
        for tg in &ts {
            match g.check(&ask(tg, StepKind::Cordon), t(1)) {
                Verdict::Allow => allowed_n += 1,
                Verdict::Refuse { refusal, tripped } => {
                    trips += usize::from(tripped.is_some());
                    breaker_refusals += usize::from(refusal.kind == RefusalKind::BreakerOpen);
                }
            }
        }
        assert_eq!(allowed_n, 3);
        assert_eq!(trips, 1, "the breaker latches once");
        assert_eq!(breaker_refusals, 30 - 3 - 5);
        // Non-destructive steps still pass; destructive ones wait for a person.
        assert!(allowed(&g.check(&ask(&ts[0], StepKind::Page), t(5000))));
        g.release(&ts[0]);
        assert!(!allowed(&g.check(&ask(&ts[29], StepKind::Cordon), t(5000))));
        assert!(g.reset_breaker());
        assert!(allowed(&g.check(&ask(&ts[29], StepKind::Cordon), t(5001))));
    }

    proptest::proptest! {
        /// Whatever the order of asks and releases, the governor never lets
        /// more targets out than the fleet limit or a rack's budget.
        #[test]
        fn budgets_hold_under_any_sequence(
            restore in proptest::collection::vec(0usize..8, 0..4),
            ops in proptest::collection::vec((0usize..40, 0u8..4), 1..300),
        ) {
            let mut cfg = GovernorConfig::default();
            cfg.max_out_of_service = 6;
            cfg.max_out_of_service_percent = 100.0;
            cfg.trip_after = u32::MAX;
            let inv = inventory(40, 5);
            let mut g = Governor::new(cfg, Arc::clone(&inv));
            // A restart first restores what its state says is out (one per
            // rack, within the fleet budget).
            for rack in restore {
                g.mark_out(&Target::node(format!("n{}", rack * 5)));
            }
            for (i, (node, op)) in ops.into_iter().enumerate() {
                let target = Target::node(format!("n{node}"));
                let step = [StepKind::Cordon, StepKind::PowerCycle, StepKind::Page, StepKind::Drain][usize::from(op % 4)];
                if op == 3 && node % 3 == 0 {
                    g.release(&target);
                    continue;
                }
                let _ = g.check(&ask(&target, step), t(i as i64));
                proptest::prop_assert!(g.out.len() <= 6);
                let mut per_rack: BTreeMap<String, usize> = BTreeMap::new();
                for o in &g.out {
                    let rack = inv.get(&o.name).and_then(|n| n.rack.clone()).unwrap_or_default();
                    *per_rack.entry(rack).or_default() += 1;
                }
                // The per-domain counters agree with a count of `out`.
                let counted: BTreeMap<String, usize> = g
                    .out_per_domain
                    .iter()
                    .filter(|((scope, _), _)| *scope == Scope::Rack)
                    .map(|((_, rack), n)| (rack.clone(), *n))
                    .collect();
                proptest::prop_assert_eq!(&counted, &per_rack);
                let leaves: usize = g
                    .out_per_domain
                    .iter()
                    .filter(|((scope, _), _)| *scope == Scope::LeafSwitch)
                    .map(|(_, n)| *n)
                    .sum();
                proptest::prop_assert_eq!(leaves, g.out.len());
                proptest::prop_assert!(per_rack.values().all(|&n| n <= 2), "{per_rack:?}");
            }
        }
    }
}
