//! The worker: runs plans for action requests, one target at a time, every
//! destructive step through the governor, every decision to the audit.
//!
//! Contract:
//! - A request is accepted once its state record is durable
//!   ([`Worker::submit`] returns then): the consumer commits its offset only
//!   after, so a crash before loses nothing and a crash after resumes from
//!   `pitcrew.state` ([`Worker::restore`]).
//! - The same action id delivered twice runs once: the id is in the
//!   target's `handled` list (or is the one running, or queued).
//! - One plan runs per node at a time; requests that arrive meanwhile wait
//!   in a bounded queue in the state record. GPU targets (`gpu/n17/3`) are
//!   remediated as their node (`node/n17`), with the GPU index as a param.
//! - Before an irreversible step the intent is written and acknowledged;
//!   a restart that finds it observes the BMC instead of repeating it.
//! - pitcrew undoes only what it did: the `owned` flags in the state say
//!   which cordon, taint and drain are its own.
//!
//! No lock is held across an await: the state lives in a map behind a std
//! mutex, copied out to be written.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use pitcrew_contract::{
    deterministic_id, ActionRequest, AuditEntry, AuditRecord, BreakerState, Incident,
    IncidentStatus, Intent, OpenPage, Phase, RemediationState, Target, TargetKind, Timestamp, V1,
};
use pitcrew_rules::Inventory;
use tokio::sync::{oneshot, Notify};

use crate::exec::check::{CheckNode, CheckOutcome};
use crate::exec::page::{Page, PageEvent, PageSeverity};
use crate::exec::{
    Beat, BoxFuture, DrainResult, ExecError, Executors, NodeEvent, NodeMark, PodsLeft, PowerOp,
    PowerState,
};
use crate::governor::{Ask, Governor, Verdict};
use crate::metrics::{JournalWriteFailed, ReasonLabel, RemediateMetrics, StepLabel, StepRetrying};
use crate::plan::{OnFailure, Plan, PlanBook, Step, StepKind};

mod clock;
mod execute;
mod journal;
mod page;
mod reconcile;
mod records;
mod run;
mod state;
mod wait;

pub use clock::Clock;
use execute::retry_after;
pub use journal::{describe, Journal, JournalError, MemoryJournal};
use reconcile::{Stepped, WaitProgress};
use state::start;
use wait::{pods_gone, Decision, PodsGoneTimes, VerifyPhase};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `remediate@host`: the actor in audit records and pages.
    pub actor: String,
    /// Global dry run: every destructive step is only described.
    pub dry_run: bool,
    pub approval_ttl: Duration,
    /// Verification: how long to wait for power and heartbeat, and how long
    /// the node must stay quiet (no new incident) after.
    pub verify_timeout: Duration,
    pub verify_quiet: Duration,
    pub verify_poll: Duration,
    /// First retry wait for a retryable step error; doubles each time.
    pub retry_base: Duration,
    /// How long evictions may be blocked by PDBs before the drain fails,
    /// and how long the evicted pods may take to go.
    pub drain_deadline: Duration,
    /// How long past its grace period an evicted pod may still be
    /// terminating before it counts as stuck.
    pub pods_gone_margin: Duration,
    /// What a drain does with a pod stuck terminating: escalate (the plan's
    /// failure path; no power step), or go on.
    pub stuck_pods: StuckPods,
    /// How long a drain deferred to the job boundary (`when =
    /// "job_boundary"`, `at = "checkpoint"`) waits for the node's jobs to
    /// end before it requeues them anyway.
    pub boundary_deadline: Duration,
    /// Action ids remembered per target for duplicate detection.
    pub handled_cap: usize,
    /// Requests waiting per target.
    pub queue_cap: usize,
    /// Team paged for escalations and the breaker (`None`: every receiver).
    pub escalation_team: Option<String>,
    /// Where timestamps come from (tests run on tokio's paused clock).
    pub clock: Clock,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            actor: "remediate".into(),
            dry_run: false,
            approval_ttl: Duration::from_secs(3600),
            verify_timeout: Duration::from_secs(900),
            verify_quiet: Duration::from_secs(120),
            verify_poll: Duration::from_secs(5),
            retry_base: Duration::from_secs(1),
            drain_deadline: Duration::from_secs(600),
            pods_gone_margin: Duration::from_secs(30),
            stuck_pods: StuckPods::Escalate,
            boundary_deadline: Duration::from_secs(24 * 3600),
            handled_cap: 64,
            queue_cap: 4,
            escalation_team: None,
            clock: Clock::System,
        }
    }
}

/// What a drain does with an evicted pod that does not go in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StuckPods {
    /// The drain fails: the plan takes its failure path (escalation by
    /// default) and no power step runs while a pod may still be writing
    /// its checkpoint.
    #[default]
    Escalate,
    /// The drain goes on (the stuck pods are named in the audit).
    Proceed,
}

/// What [`Worker::submit`] did with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    Started,
    Queued,
    Duplicate,
    /// Not runnable (unknown plan, queue full); audited with the reason.
    Rejected(String),
}

/// Why an admin command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no action {0} is waiting for approval")]
    NotAwaiting(String),
    #[error("the circuit breaker is not open")]
    BreakerClosed,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

#[derive(Debug)]
struct Slot {
    state: RemediationState,
    running: bool,
    approve: Option<oneshot::Sender<String>>,
}

struct Inner {
    cfg: WorkerConfig,
    plans: PlanBook,
    exec: Executors,
    journal: Arc<dyn Journal>,
    inventory: Arc<Inventory>,
    governor: Mutex<Governor>,
    slots: Mutex<HashMap<Target, Slot>>,
    /// Last incident opened per node, for verification's quiet time.
    incidents: Mutex<HashMap<String, (Timestamp, String)>>,
    metrics: RemediateMetrics,
    idle: Notify,
}

/// The remediation worker. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("actor", &self.inner.cfg.actor)
            .finish_non_exhaustive()
    }
}

/// The record key for the fleet-wide breaker.
pub fn breaker_target() -> Target {
    Target::new(TargetKind::Fleet, "breaker")
}

/// The node a target is remediated as: a GPU `n17/3` is node `n17`.
pub fn subject(target: &Target) -> Target {
    match target.kind {
        TargetKind::Gpu => Target::node(target.name.split('/').next().unwrap_or(&target.name)),
        _ => target.clone(),
    }
}

fn gpu_of(req: &ActionRequest) -> Option<String> {
    param_str(req, "gpu").or_else(|| {
        (req.target.kind == TargetKind::Gpu)
            .then(|| req.target.name.split('/').nth(1).map(str::to_owned))
            .flatten()
    })
}

/// Whether the request asks to wait for the job boundary before it takes
/// running work away (`when = "job_boundary"`, `at = "checkpoint"`).
fn deferred(req: &ActionRequest) -> bool {
    param_str(req, "when").as_deref() == Some("job_boundary")
        || param_str(req, "at").as_deref() == Some("checkpoint")
}

fn param_str(req: &ActionRequest, key: &str) -> Option<String> {
    match req.params.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What a step did, to be folded into the state.
#[derive(Debug, Default)]
struct Done {
    already: bool,
    detail: String,
    k8s_cordon: Option<bool>,
    k8s_taint: Option<bool>,
    slurm_drain: Option<bool>,
    verify_since: Option<Timestamp>,
    page: Option<OpenPage>,
}

/// How a plan run ended.
#[derive(Debug)]
enum End {
    /// Every step done; `out`: the target stays out of service on purpose
    /// (drain_node, rma) and is handed to people.
    Completed {
        out: bool,
    },
    /// Refused before anything changed.
    RefusedAtStart,
    /// Escalated (paged), the target stays as it is.
    Escalated,
    Failed,
    /// Run another plan next.
    Next(Box<ActionRequest>),
    /// Approval expired or was not given.
    NotApproved,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        plans: PlanBook,
        exec: Executors,
        journal: Arc<dyn Journal>,
        governor: Governor,
        inventory: Arc<Inventory>,
        metrics: RemediateMetrics,
    ) -> Worker {
        metrics
            .out_of_service_limit
            .set(governor.fleet_limit() as i64);
        Worker {
            inner: Arc::new(Inner {
                cfg,
                plans,
                exec,
                journal,
                inventory,
                governor: Mutex::new(governor),
                slots: Mutex::new(HashMap::new()),
                incidents: Mutex::new(HashMap::new()),
                metrics,
                idle: Notify::new(),
            }),
        }
    }

    /// The time now, from the configured clock.
    fn now(&self) -> Timestamp {
        self.inner.cfg.clock.now()
    }

    pub fn metrics(&self) -> &RemediateMetrics {
        &self.inner.metrics
    }

    /// Loads the latest state records (from the compacted topic) and
    /// resumes what was running.
    pub fn restore(&self, states: Vec<RemediationState>) {
        let mut resume = Vec::new();
        {
            let mut slots = lock(&self.inner.slots);
            let mut gov = lock(&self.inner.governor);
            for st in states {
                if st.target == breaker_target() {
                    if let Some(b) = st.breaker.clone().filter(|b| b.open) {
                        gov.restore_breaker(b);
                    }
                    continue;
                }
                let running = matches!(
                    st.phase,
                    Phase::InProgress | Phase::AwaitingApproval | Phase::Verifying
                ) && st.request.is_some();
                // Out of service: pitcrew holds a cordon or drain, or the
                // running plan got past (or intends) a step that takes the
                // node out, such as a power cycle.
                let reached = st.step as usize + usize::from(st.intent.is_some());
                let out_by_plan = running
                    && st
                        .request
                        .as_ref()
                        .and_then(|r| self.inner.plans.get(&r.plan))
                        .is_some_and(|p| {
                            p.steps
                                .iter()
                                .take(reached)
                                .any(|s| s.kind.takes_out_of_service())
                        });
                if st.owned.any() || out_by_plan {
                    gov.mark_out(&st.target);
                }
                if running {
                    resume.push(st.target.clone());
                }
                slots.insert(
                    st.target.clone(),
                    Slot {
                        state: st,
                        running,
                        approve: None,
                    },
                );
            }
        }
        self.refresh_gauges();
        for t in resume {
            tracing::info!(target_id = %t, "resuming remediation after restart");
            self.spawn_run(t);
        }
    }

    /// Accepts an action request. Returns once the decision is durable.
    pub async fn submit(&self, req: ActionRequest) -> Result<Submitted, JournalError> {
        let inner = &self.inner;
        let target = subject(&req.target);
        let now = self.now();
        let known_plan = inner.plans.get(&req.plan).is_some();
        let (decision, state) = {
            let mut slots = lock(&inner.slots);
            let slot = slots.entry(target.clone()).or_insert_with(|| Slot {
                state: RemediationState::healthy(target.clone(), now),
                running: false,
                approve: None,
            });
            let st = &mut slot.state;
            if st.handled.iter().any(|h| h == &req.id)
                || st.action.as_deref() == Some(req.id.as_str()) && slot.running
                || st.queued.iter().any(|q| q.id == req.id)
            {
                (Submitted::Duplicate, None)
            } else if !known_plan {
                (
                    Submitted::Rejected(format!("unknown plan `{}`", req.plan)),
                    None,
                )
            } else if slot.running {
                if st.queued.len() >= inner.cfg.queue_cap {
                    (
                        Submitted::Rejected(format!(
                            "{} requests already wait for {target}",
                            st.queued.len()
                        )),
                        None,
                    )
                } else {
                    st.queued.push(req.clone());
                    st.updated_at = now;
                    (Submitted::Queued, Some(st.clone()))
                }
            } else {
                start(st, &req, inner.cfg.handled_cap, now);
                slot.running = true;
                (Submitted::Started, Some(st.clone()))
            }
        };
        let outcome = match &decision {
            Submitted::Started => "accepted",
            Submitted::Queued => "queued",
            Submitted::Duplicate => "duplicate",
            Submitted::Rejected(_) => "rejected",
        };
        inner.metrics.action(outcome);
        match &decision {
            Submitted::Duplicate => {
                self.audit(&target, Some(&req), AuditEntry::Duplicate).await;
            }
            Submitted::Rejected(reason) => {
                self.audit(&target, Some(&req), AuditEntry::Received).await;
                self.audit(
                    &target,
                    Some(&req),
                    AuditEntry::Refused {
                        step: "accept".into(),
                        reason: reason.clone(),
                    },
                )
                .await;
            }
            _ => {
                self.audit(&target, Some(&req), AuditEntry::Received).await;
            }
        }
        if let Some(st) = state {
            if let Err(e) = inner.journal.state(st).await {
                // Not durable: undo, so a redelivery is not taken for a duplicate.
                let mut slots = lock(&inner.slots);
                if let Some(slot) = slots.get_mut(&target) {
                    slot.state.handled.retain(|h| h != &req.id);
                    slot.state.queued.retain(|q| q.id != req.id);
                    if decision == Submitted::Started {
                        slot.running = false;
                        slot.state.phase = Phase::Healthy;
                        slot.state.request = None;
                    }
                }
                inner.metrics.journal_errors.inc();
                return Err(e);
            }
        }
        self.refresh_gauges();
        if decision == Submitted::Started {
            self.spawn_run(target);
        }
        Ok(decision)
    }

    /// An incident message from `pitcrew.alerts`: opened ones interrupt a
    /// verification's quiet time; resolved ones resolve their pages.
    pub async fn incident(&self, inc: &Incident) {
        let node = subject(&inc.blame);
        match inc.status {
            IncidentStatus::Resolved => {
                let mut resolve = Vec::new();
                {
                    let mut slots = lock(&self.inner.slots);
                    for slot in slots.values_mut() {
                        let (done, keep): (Vec<OpenPage>, Vec<OpenPage>) = slot
                            .state
                            .open_pages
                            .drain(..)
                            .partition(|p| p.incident.as_deref() == Some(inc.id.as_str()));
                        slot.state.open_pages = keep;
                        if !done.is_empty() {
                            resolve.push((slot.state.target.clone(), done, slot.state.clone()));
                        }
                    }
                }
                for (target, pages, st) in resolve {
                    for p in pages {
                        self.resolve_page(&target, &p).await;
                    }
                    self.write_state(st).await;
                }
            }
            IncidentStatus::Open if node.kind == TargetKind::Node => {
                lock(&self.inner.incidents).insert(node.name, (inc.at, inc.id.clone()));
            }
            _ => {}
        }
    }

    /// A person approves a waiting action.
    pub fn approve(&self, action: &str, by: &str) -> Result<(), AdminError> {
        let mut slots = lock(&self.inner.slots);
        for slot in slots.values_mut() {
            if slot.state.phase == Phase::AwaitingApproval
                && slot.state.action.as_deref() == Some(action)
            {
                if let Some(tx) = slot.approve.take() {
                    let _ = tx.send(by.to_owned());
                    return Ok(());
                }
            }
        }
        Err(AdminError::NotAwaiting(action.to_owned()))
    }

    /// A person resets the latched breaker; its page is resolved.
    pub async fn reset_breaker(&self, by: &str) -> Result<(), AdminError> {
        let was_open = lock(&self.inner.governor).reset_breaker();
        if !was_open {
            return Err(AdminError::BreakerClosed);
        }
        let target = breaker_target();
        self.audit(
            &target,
            None,
            AuditEntry::BreakerReset { by: by.to_owned() },
        )
        .await;
        let mut st = RemediationState::healthy(target.clone(), self.now());
        let pages = {
            let mut slots = lock(&self.inner.slots);
            slots
                .remove(&target)
                .map(|s| s.state.open_pages)
                .unwrap_or_default()
        };
        for p in &pages {
            self.resolve_page(&target, p).await;
        }
        st.breaker = Some(BreakerState {
            open: false,
            reason: format!("reset by {by}"),
            opened_at: self.now(),
        });
        self.inner.journal.state(st).await?;
        self.refresh_gauges();
        Ok(())
    }

    /// A person latches the breaker (stop everything destructive now).
    pub async fn open_breaker(&self, by: &str, reason: &str) -> Result<(), JournalError> {
        let b = lock(&self.inner.governor)
            .open_breaker(format!("opened by {by}: {reason}"), self.now());
        self.breaker_opened(b, None).await;
        Ok(())
    }

    pub fn breaker(&self) -> Option<BreakerState> {
        lock(&self.inner.governor).breaker().cloned()
    }

    /// Every target's state, for the admin API.
    pub fn states(&self) -> Vec<RemediationState> {
        let slots = lock(&self.inner.slots);
        let mut v: Vec<RemediationState> = slots.values().map(|s| s.state.clone()).collect();
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    }

    pub fn state(&self, target: &Target) -> Option<RemediationState> {
        lock(&self.inner.slots)
            .get(&subject(target))
            .map(|s| s.state.clone())
    }

    pub fn budget(&self) -> crate::governor::BudgetUse {
        lock(&self.inner.governor).budget_use()
    }

    /// Whether any plan is running.
    pub fn busy(&self) -> bool {
        lock(&self.inner.slots).values().any(|s| s.running)
    }

    /// Waits until no plan runs (tests, the demo's end, shutdown).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            if !self.busy() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }

    fn refresh_gauges(&self) {
        let m = &self.inner.metrics;
        {
            let slots = lock(&self.inner.slots);
            m.targets.set(slots.len() as i64);
            m.in_flight
                .set(slots.values().filter(|s| s.running).count() as i64);
            m.awaiting_approval.set(
                slots
                    .values()
                    .filter(|s| s.state.phase == Phase::AwaitingApproval)
                    .count() as i64,
            );
        }
        let b = lock(&self.inner.governor).budget_use();
        m.out_of_service.set(b.out_of_service as i64);
        m.out_of_service_limit.set(b.max_out_of_service as i64);
        m.breaker_open.set(i64::from(b.breaker_open));
    }
}
