//! Plans: ordered steps with what to do when one fails.
//!
//! The built-in catalogue answers every plan name the rule engine knows
//! (`pitcrew_rules::BUILTIN_PLANS`); `[[plan]]` tables in the remediation
//! config replace a built-in or add new ones:
//!
//! ```toml
//! [[plan]]
//! name = "reboot_node"
//! steps = ["cordon", "drain", "power_cycle", "verify", "uncordon"]
//! on_failure = "escalate"      # escalate | stop | plan:NAME
//! retries = 2                  # per step, for retryable errors
//! approval = false             # wait for `pitcrew approve ACTION_ID`
//! dry_run = false              # say what would be done, do nothing
//!
//! [[plan]]
//! name = "slow_drain"
//! on_failure = "plan:rma"
//! [[plan.step]]
//! kind = "drain"
//! timeout = "20m"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// What a step does. `destructive` steps take capacity away or stop work
/// and go through the governor; the others never do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Kubernetes: mark unschedulable and taint with pitcrew's key. Slurm:
    /// drain (no new jobs) with a `pitcrew:` reason.
    Cordon,
    /// Kubernetes: evict the node's pods through the Eviction API (PDBs
    /// honoured). Slurm: requeue every job on the node.
    Drain,
    /// Requeue the hit job (`params.job`) or, without one, every job on
    /// the node, so it runs elsewhere; the node stays in service.
    RequeueJobs,
    /// Reset one GPU (`params.gpu`) through the configured hook command.
    ResetGpu,
    /// Chassis power cycle through the BMC (irreversible: intent first).
    PowerCycle,
    /// Chassis power off (irreversible: intent first).
    PowerOff,
    PowerOn,
    /// BMC reports power on, the node's heartbeat is back, and no new
    /// incident for the quiet time.
    Verify,
    /// Undo pitcrew's own cordon, taint and drain (never an operator's).
    Uncordon,
    /// Page the receivers (`params.team` picks them).
    Page,
    /// Same as page, at informational severity.
    Notify,
    /// Open a hardware ticket (a page to the RMA receivers); the node
    /// stays out of service.
    Rma,
    /// Hand the target to people: page, and stop.
    Escalate,
}

impl StepKind {
    pub const ALL: [StepKind; 13] = [
        StepKind::Cordon,
        StepKind::Drain,
        StepKind::RequeueJobs,
        StepKind::ResetGpu,
        StepKind::PowerCycle,
        StepKind::PowerOff,
        StepKind::PowerOn,
        StepKind::Verify,
        StepKind::Uncordon,
        StepKind::Page,
        StepKind::Notify,
        StepKind::Rma,
        StepKind::Escalate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StepKind::Cordon => "cordon",
            StepKind::Drain => "drain",
            StepKind::RequeueJobs => "requeue_jobs",
            StepKind::ResetGpu => "reset_gpu",
            StepKind::PowerCycle => "power_cycle",
            StepKind::PowerOff => "power_off",
            StepKind::PowerOn => "power_on",
            StepKind::Verify => "verify",
            StepKind::Uncordon => "uncordon",
            StepKind::Page => "page",
            StepKind::Notify => "notify",
            StepKind::Rma => "rma",
            StepKind::Escalate => "escalate",
        }
    }

    pub fn parse(s: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Goes through the governor: takes capacity away or stops work.
    pub const fn is_destructive(self) -> bool {
        matches!(
            self,
            StepKind::Cordon
                | StepKind::Drain
                | StepKind::RequeueJobs
                | StepKind::ResetGpu
                | StepKind::PowerCycle
                | StepKind::PowerOff
        )
    }

    /// Cannot be undone or safely repeated: the intent is written to
    /// `pitcrew.state` first, and a restart observes instead of repeating.
    pub const fn is_irreversible(self) -> bool {
        matches!(
            self,
            StepKind::PowerCycle | StepKind::PowerOff | StepKind::ResetGpu
        )
    }

    /// Leaves the target out of service (counts against the budgets).
    pub const fn takes_out_of_service(self) -> bool {
        matches!(
            self,
            StepKind::Cordon | StepKind::Drain | StepKind::PowerCycle | StepKind::PowerOff
        )
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    /// How long the step may take (drain, verify); `None`: the executor's
    /// default.
    pub timeout: Option<std::time::Duration>,
    /// Retries for retryable errors; `None`: the plan's.
    pub retries: Option<u32>,
}

impl Step {
    pub const fn new(kind: StepKind) -> Step {
        Step {
            kind,
            timeout: None,
            retries: None,
        }
    }
}

/// What to do when a step fails for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Page with the failure, keep the target out of service.
    Escalate,
    /// Record the failure and stop.
    Stop,
    /// Run another plan on the target (its own governor checks apply).
    Plan(String),
}

/// A plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub steps: Vec<Step>,
    pub on_failure: OnFailure,
    pub retries: u32,
    pub approval: bool,
    pub dry_run: bool,
}

impl Plan {
    /// Has at least one step that goes through the governor.
    pub fn is_destructive(&self) -> bool {
        self.steps.iter().any(|s| s.kind.is_destructive())
    }

    /// Takes the node itself out or resets its hardware, not only a job:
    /// what cooldown and the attempt budget exist to stop looping.
    pub fn takes_node_out(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.kind.takes_out_of_service() || s.kind.is_irreversible())
    }

    /// Ends with the target handed to people (an `rma` step).
    pub fn hands_to_people(&self) -> bool {
        self.steps.iter().any(|s| s.kind == StepKind::Rma)
    }
}

fn builtin(name: &str, steps: &[StepKind], on_failure: OnFailure) -> Plan {
    Plan {
        name: name.to_owned(),
        steps: steps.iter().map(|k| Step::new(*k)).collect(),
        on_failure,
        retries: 2,
        approval: false,
        dry_run: false,
    }
}

/// The plans, by name: the built-ins, then the config's.
#[derive(Clone, Debug)]
pub struct PlanBook {
    plans: BTreeMap<String, Plan>,
}

impl Default for PlanBook {
    fn default() -> Self {
        PlanBook::builtin()
    }
}

impl PlanBook {
    /// The catalogue `pitcrew_rules::BUILTIN_PLANS` describes.
    pub fn builtin() -> PlanBook {
        use StepKind::*;
        let plans = [
            builtin("notify", &[Notify], OnFailure::Stop),
            builtin("page", &[Page], OnFailure::Stop),
            builtin("restart_app", &[RequeueJobs], OnFailure::Escalate),
            builtin(
                "reset_gpu",
                &[Cordon, Drain, ResetGpu, Verify, Uncordon],
                OnFailure::Plan("reboot_node".to_owned()),
            ),
            builtin(
                "reboot_node",
                &[Cordon, Drain, PowerCycle, Verify, Uncordon],
                OnFailure::Escalate,
            ),
            builtin("drain_node", &[Cordon, Drain, Page], OnFailure::Escalate),
            builtin("rma", &[Cordon, Drain, Rma], OnFailure::Escalate),
        ];
        PlanBook {
            plans: plans.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    pub fn insert(&mut self, plan: Plan) {
        self.plans.insert(plan.name.clone(), plan);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }

    /// Adds the config's `[[plan]]` tables; every error names the plan.
    pub fn extend(&mut self, specs: Vec<PlanSpec>) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut added = Vec::new();
        for spec in specs {
            match spec.into_plan() {
                Ok(p) => added.push(p),
                Err(e) => errors.push(e),
            }
        }
        for p in added {
            self.insert(p);
        }
        for p in self.plans.values() {
            if let OnFailure::Plan(next) = &p.on_failure {
                if !self.plans.contains_key(next) {
                    errors.push(format!(
                        "plan `{}`: on_failure names unknown plan `{next}`",
                        p.name
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// A `[[plan]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    #[serde(default)]
    pub steps: Vec<String>,
    #[serde(default)]
    pub step: Vec<StepSpec>,
    #[serde(default)]
    pub on_failure: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub approval: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// A `[[plan.step]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub kind: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
}

fn step_kind(plan: &str, s: &str) -> Result<StepKind, String> {
    StepKind::parse(s).ok_or_else(|| {
        let known: Vec<&str> = StepKind::ALL.iter().map(|k| k.as_str()).collect();
        format!(
            "plan `{plan}`: unknown step `{s}` (known: {})",
            known.join(", ")
        )
    })
}

impl PlanSpec {
    fn into_plan(self) -> Result<Plan, String> {
        let name = self.name;
        if !self.steps.is_empty() && !self.step.is_empty() {
            return Err(format!(
                "plan `{name}`: write either `steps = [...]` or `[[plan.step]]` tables, not both"
            ));
        }
        let mut steps = Vec::new();
        for s in &self.steps {
            steps.push(Step::new(step_kind(&name, s)?));
        }
        for s in self.step {
            let timeout = match s.timeout {
                Some(t) => Some(parse_duration(&t).map_err(|e| format!("plan `{name}`: {e}"))?),
                None => None,
            };
            steps.push(Step {
                kind: step_kind(&name, &s.kind)?,
                timeout,
                retries: s.retries,
            });
        }
        if steps.is_empty() {
            return Err(format!("plan `{name}`: no steps"));
        }
        let on_failure = match self.on_failure.as_deref() {
            None | Some("escalate") => OnFailure::Escalate,
            Some("stop") => OnFailure::Stop,
            Some(other) => match other.strip_prefix("plan:") {
                Some(next) if next != name => OnFailure::Plan(next.to_owned()),
                Some(_) => return Err(format!("plan `{name}`: on_failure names itself")),
                None => {
                    return Err(format!(
                        "plan `{name}`: on_failure `{other}`: expected escalate, stop or plan:NAME"
                    ))
                }
            },
        };
        Ok(Plan {
            name,
            steps,
            on_failure,
            retries: self.retries.unwrap_or(2),
            approval: self.approval,
            dry_run: self.dry_run,
        })
    }
}

/// `30s`, `5m`, `250ms`, `2h`, `7d` as a std Duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let span = pitcrew_rules::Span::parse(s)?;
    u64::try_from(span.nanos())
        .map(std::time::Duration::from_nanos)
        .map_err(|_| format!("negative duration `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_the_rule_engine_knows_is_defined() {
        let book = PlanBook::builtin();
        for (name, _) in pitcrew_rules::BUILTIN_PLANS {
            assert!(book.get(name).is_some(), "no built-in plan {name}");
        }
    }

    #[test]
    fn config_plans_replace_and_add() {
        let mut book = PlanBook::builtin();
        let specs: Vec<PlanSpec> = vec![
            PlanSpec {
                name: "reboot_node".into(),
                steps: vec!["cordon".into(), "power_cycle".into(), "verify".into()],
                step: vec![],
                on_failure: Some("plan:rma".into()),
                retries: Some(1),
                approval: true,
                dry_run: false,
            },
            PlanSpec {
                name: "slow".into(),
                steps: vec![],
                step: vec![StepSpec {
                    kind: "drain".into(),
                    timeout: Some("20m".into()),
                    retries: None,
                }],
                on_failure: None,
                retries: None,
                approval: false,
                dry_run: false,
            },
        ];
        book.extend(specs).unwrap();
        let r = book.get("reboot_node").unwrap();
        assert!(r.approval);
        assert_eq!(r.on_failure, OnFailure::Plan("rma".into()));
        assert_eq!(r.steps.len(), 3);
        let s = book.get("slow").unwrap();
        assert_eq!(
            s.steps[0].timeout,
            Some(std::time::Duration::from_secs(1200))
        );
    }

    #[test]
    fn bad_plans_say_why() {
        let mut book = PlanBook::builtin();
        let bad = PlanSpec {
            name: "x".into(),
            steps: vec!["cordn".into()],
            step: vec![],
            on_failure: None,
            retries: None,
            approval: false,
            dry_run: false,
        };
        let err = book.extend(vec![bad]).unwrap_err();
        assert!(err.contains("unknown step `cordn`"), "{err}");
        let dangling = PlanSpec {
            name: "y".into(),
            steps: vec!["page".into()],
            step: vec![],
            on_failure: Some("plan:nope".into()),
            retries: None,
            approval: false,
            dry_run: false,
        };
        let err = book.extend(vec![dangling]).unwrap_err();
        assert!(err.contains("unknown plan `nope`"), "{err}");
    }
}
