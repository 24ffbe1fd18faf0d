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
use std::time::{Duration, Instant};

use pitcrew_contract::{
    deterministic_id, ActionRequest, AuditEntry, AuditRecord, BreakerState, Incident,
    IncidentStatus, Intent, OpenPage, Phase, RemediationState, Target, TargetKind, Timestamp, V1,
};
use pitcrew_rules::Inventory;
use tokio::sync::{oneshot, Notify};

use crate::exec::page::{Page, PageEvent, PageSeverity};
use crate::exec::{BoxFuture, DrainResult, ExecError, Executors, PowerOp, PowerState, Scheduler};
use crate::governor::{Ask, Governor, Verdict};
use crate::metrics::{ReasonLabel, RemediateMetrics, StepLabel};
use crate::plan::{OnFailure, Plan, PlanBook, Step, StepKind};

/// Where audit and state records go (Kafka in the service, memory in tests
/// and the demo).
pub trait Journal: Send + Sync {
    /// Enqueues an audit record; records of one target keep their order.
    fn audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), JournalError>>;
    /// Writes an audit record and returns once it is durable (before an
    /// irreversible step: a crash right after must not lose it).
    fn audit_durable(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), JournalError>> {
        self.audit(record)
    }
    /// Writes a state record and returns once it is durable.
    fn state(&self, state: RemediationState) -> BoxFuture<'_, Result<(), JournalError>>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The broker did not take it; worth another try.
    #[error("journal write failed: {0}")]
    Retryable(String),
    #[error("journal write refused: {0}")]
    Permanent(String),
}

/// A journal in memory, for tests and the demo.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    pub audits: Mutex<Vec<AuditRecord>>,
    pub states: Mutex<Vec<RemediationState>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryJournal {
    pub fn audits(&self) -> Vec<AuditRecord> {
        lock(&self.audits).clone()
    }

    /// The latest state per target, like a compacted topic.
    pub fn latest_states(&self) -> Vec<RemediationState> {
        let mut m: BTreeMap<Target, RemediationState> = BTreeMap::new();
        for s in lock(&self.states).iter() {
            m.insert(s.target.clone(), s.clone());
        }
        m.into_values().collect()
    }

    /// Decisions for a target, as `decision:step` strings, in order.
    pub fn timeline(&self, target: &Target) -> Vec<String> {
        lock(&self.audits)
            .iter()
            .filter(|a| &a.target == target)
            .map(|a| describe(&a.entry))
            .collect()
    }
}

impl Journal for MemoryJournal {
    fn audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<(), JournalError>> {
        lock(&self.audits).push(record);
        Box::pin(async { Ok(()) })
    }

    fn state(&self, state: RemediationState) -> BoxFuture<'_, Result<(), JournalError>> {
        lock(&self.states).push(state);
        Box::pin(async { Ok(()) })
    }
}

/// `received`, `allowed:cordon`, `refused:power_cycle`... for timelines.
pub fn describe(e: &AuditEntry) -> String {
    match e {
        AuditEntry::Received => "received".into(),
        AuditEntry::Duplicate => "duplicate".into(),
        AuditEntry::Allowed { step } => format!("allowed:{step}"),
        AuditEntry::Refused { step, .. } => format!("refused:{step}"),
        AuditEntry::DryRun { step } => format!("dry_run:{step}"),
        AuditEntry::AwaitingApproval { .. } => "awaiting_approval".into(),
        AuditEntry::Approved { .. } => "approved".into(),
        AuditEntry::Intent { step } => format!("intent:{step}"),
        AuditEntry::StepStarted { step } => format!("started:{step}"),
        AuditEntry::StepSucceeded { step, .. } => format!("succeeded:{step}"),
        AuditEntry::StepFailed { step, .. } => format!("failed:{step}"),
        AuditEntry::AlreadyDone { step } => format!("already_done:{step}"),
        AuditEntry::Escalated { .. } => "escalated".into(),
        AuditEntry::Paged { .. } => "paged".into(),
        AuditEntry::Returned => "returned".into(),
        AuditEntry::BreakerOpened { .. } => "breaker_opened".into(),
        AuditEntry::BreakerReset { .. } => "breaker_reset".into(),
    }
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
    /// How long evictions may be blocked by PDBs before the drain fails.
    pub drain_deadline: Duration,
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
            boundary_deadline: Duration::from_secs(24 * 3600),
            handled_cap: 64,
            queue_cap: 4,
            escalation_team: None,
        }
    }
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
        let now = Timestamp::now();
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
        let mut st = RemediationState::healthy(target.clone(), Timestamp::now());
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
            opened_at: Timestamp::now(),
        });
        self.inner.journal.state(st).await?;
        self.refresh_gauges();
        Ok(())
    }

    /// A person latches the breaker (stop everything destructive now).
    pub async fn open_breaker(&self, by: &str, reason: &str) -> Result<(), JournalError> {
        let b = lock(&self.inner.governor)
            .open_breaker(format!("opened by {by}: {reason}"), Timestamp::now());
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

    fn spawn_run(&self, target: Target) {
        let me = self.clone();
        tokio::spawn(async move {
            me.run(target).await;
        });
    }

    async fn audit(&self, target: &Target, req: Option<&ActionRequest>, entry: AuditEntry) {
        self.audit_with(target, req, entry, false).await;
    }

    async fn audit_with(
        &self,
        target: &Target,
        req: Option<&ActionRequest>,
        entry: AuditEntry,
        durable: bool,
    ) {
        let at = Timestamp::now();
        let action = req.map(|r| r.id.clone());
        let id = deterministic_id(
            "aud",
            &[
                &target.key(),
                action.as_deref().unwrap_or(""),
                &describe(&entry),
                &at.unix_nanos().to_string(),
            ],
        );
        let record = AuditRecord {
            v: V1,
            id,
            at,
            target: target.clone(),
            actor: self.inner.cfg.actor.clone(),
            action,
            incident: req.map(|r| r.incident.clone()),
            events: req.map(|r| r.events.clone()).unwrap_or_default(),
            plan: req.map(|r| r.plan.clone()),
            entry,
        };
        let written = if durable {
            self.inner.journal.audit_durable(record).await
        } else {
            self.inner.journal.audit(record).await
        };
        if let Err(e) = written {
            self.inner.metrics.journal_errors.inc();
            tracing::error!(target_id = %target, error = %e, "audit record not written");
        }
    }

    async fn write_state(&self, st: RemediationState) -> bool {
        match self.inner.journal.state(st).await {
            Ok(()) => true,
            Err(e) => {
                self.inner.metrics.journal_errors.inc();
                tracing::error!(error = %e, "state record not written");
                false
            }
        }
    }

    /// Applies `f` to the target's state and writes it; returns the copy
    /// written and whether it is durable.
    async fn update(
        &self,
        target: &Target,
        f: impl FnOnce(&mut RemediationState),
    ) -> (RemediationState, bool) {
        let st = {
            let mut slots = lock(&self.inner.slots);
            let Some(slot) = slots.get_mut(target) else {
                return (
                    RemediationState::healthy(target.clone(), Timestamp::now()),
                    false,
                );
            };
            f(&mut slot.state);
            slot.state.updated_at = Timestamp::now();
            slot.state.clone()
        };
        let ok = self.write_state(st.clone()).await;
        (st, ok)
    }

    fn snapshot(&self, target: &Target) -> Option<RemediationState> {
        lock(&self.inner.slots).get(target).map(|s| s.state.clone())
    }

    async fn run(&self, target: Target) {
        while let Some(req) = self.snapshot(&target).and_then(|st| st.request) {
            let end = match self.inner.plans.get(&req.plan).cloned() {
                Some(plan) => self.run_plan(&target, &req, &plan).await,
                None => End::Failed,
            };
            if !self.finish(&target, &req, end).await {
                break;
            }
        }
        {
            let mut slots = lock(&self.inner.slots);
            if let Some(s) = slots.get_mut(&target) {
                s.running = false;
            }
        }
        self.refresh_gauges();
        self.inner.idle.notify_waiters();
    }

    /// Records how the run ended and starts the next queued request.
    /// Returns whether there is one.
    async fn finish(&self, target: &Target, req: &ActionRequest, end: End) -> bool {
        let inner = &self.inner;
        let back_in_service = matches!(end, End::Completed { out: false });
        let mut escalated = false;
        let mut to_resolve = Vec::new();
        self.update(target, |st| {
            st.intent = None;
            st.approval_expires_at = None;
            st.verify_since = None;
            match &end {
                End::Completed { out: false } | End::RefusedAtStart | End::NotApproved => {
                    // Still holding something from an earlier plan: keep it visible.
                    st.phase = if st.owned.any() {
                        Phase::Escalated
                    } else {
                        Phase::Healthy
                    };
                    if back_in_service {
                        // Back in service: pages about this target are done.
                        to_resolve = std::mem::take(&mut st.open_pages);
                    }
                }
                End::Completed { out: true } | End::Escalated => {
                    st.phase = Phase::Escalated;
                    escalated = true;
                }
                End::Failed => st.phase = Phase::Failed,
                End::Next(next) => {
                    st.phase = Phase::InProgress;
                    st.queued.insert(0, (**next).clone());
                }
            }
            st.request = None;
            st.action = None;
            st.plan = None;
            st.step = 0;
            if !st.queued.is_empty() {
                let next = st.queued.remove(0);
                start(st, &next, inner.cfg.handled_cap, Timestamp::now());
            }
        })
        .await;
        if back_in_service {
            let was_out = {
                let mut gov = lock(&inner.governor);
                let was_out = gov.is_out(target);
                gov.release(target);
                was_out
            };
            if was_out {
                inner.metrics.returned.inc();
                let took = (Timestamp::now().unix_nanos() - req.requested_at.unix_nanos()).max(0);
                inner
                    .metrics
                    .fault_to_return_seconds
                    .observe(took as f64 / 1e9);
                self.audit(target, Some(req), AuditEntry::Returned).await;
            }
        }
        if escalated {
            inner.metrics.escalations.inc();
        }
        for p in to_resolve {
            self.resolve_page(target, &p).await;
        }
        inner.metrics.action(match end {
            End::Completed { .. } => "completed",
            End::RefusedAtStart => "refused",
            End::Escalated => "escalated",
            End::Failed => "failed",
            End::Next(_) => "next_plan",
            End::NotApproved => "not_approved",
        });
        self.refresh_gauges();
        self.snapshot(target).is_some_and(|s| s.request.is_some())
    }

    async fn run_plan(&self, target: &Target, req: &ActionRequest, plan: &Plan) -> End {
        let inner = &self.inner;
        let dry = inner.cfg.dry_run || plan.dry_run || req.dry_run;
        let Some(mut st) = self.snapshot(target) else {
            return End::Failed;
        };
        // The approval gate, before anything is touched.
        if plan.approval && st.step == 0 && !dry {
            match self.await_approval(target, req, &st).await {
                Ok(()) => {}
                Err(end) => return end,
            }
            st = match self.snapshot(target) {
                Some(s) => s,
                None => return End::Failed,
            };
        }
        // Cooldown and the attempt budget stop node remediation loops: a
        // plan that only restarts a job (requeue_jobs) is not one, and must
        // not hold back the drain that may follow it.
        let first_destructive = plan
            .steps
            .iter()
            .position(|s| s.kind.is_destructive())
            .filter(|_| plan.takes_node_out());
        // An intent in the state at the start of a run is a crash's: that
        // step is observed, not repeated.
        let mut found_intent = st.intent.as_ref().is_some_and(|i| i.action == req.id);
        let mut plan_start_pending = st.step == 0 && !st.owned.any() && first_destructive.is_some();
        let mut first_call = st.step == 0;
        let mut i = st.step as usize;
        while i < plan.steps.len() {
            let step = &plan.steps[i];
            let name = step.kind.as_str();
            // The first step run after a restart with an intent: it was
            // allowed before the crash and its intent is written.
            let resuming = std::mem::take(&mut found_intent);
            if step.kind.is_destructive() && !resuming {
                if dry {
                    inner.metrics.step(name, "dry_run");
                    self.audit(target, Some(req), AuditEntry::DryRun { step: name.into() })
                        .await;
                    i += 1;
                    self.update(target, |s| s.step = i as u32).await;
                    continue;
                }
                let ask_target = target.clone();
                let verdict = {
                    let snap = self.snapshot(target).unwrap_or_else(|| st.clone());
                    let ask = Ask {
                        target: &ask_target,
                        step: step.kind,
                        plan_start: plan_start_pending && first_destructive.is_some_and(|f| i >= f),
                        attempts: &snap.attempts,
                        cooldown_until: snap.cooldown_until,
                        hands_off: plan.hands_to_people(),
                    };
                    lock(&inner.governor).check(&ask, Timestamp::now())
                };
                match verdict {
                    Verdict::Allow => {
                        self.audit(target, Some(req), AuditEntry::Allowed { step: name.into() })
                            .await;
                        if plan_start_pending {
                            plan_start_pending = false;
                            let cooldown =
                                i64::try_from(lock(&inner.governor).config().cooldown.as_nanos())
                                    .unwrap_or(i64::MAX);
                            self.update(target, |s| {
                                let now = Timestamp::now();
                                s.attempts.push(now);
                                let keep = 16;
                                if s.attempts.len() > keep {
                                    let cut = s.attempts.len() - keep;
                                    s.attempts.drain(..cut);
                                }
                                s.cooldown_until = Some(now.add_nanos(cooldown));
                            })
                            .await;
                        }
                    }
                    Verdict::Refuse { refusal, tripped } => {
                        inner.metrics.step(name, "refused");
                        inner
                            .metrics
                            .refusals
                            .get_or_create(&ReasonLabel {
                                reason: refusal.kind.as_str().to_owned(),
                            })
                            .inc();
                        self.audit(
                            target,
                            Some(req),
                            AuditEntry::Refused {
                                step: name.into(),
                                reason: refusal.message.clone(),
                            },
                        )
                        .await;
                        if let Some(b) = tripped {
                            self.breaker_opened(b, Some(req)).await;
                        }
                        let holding = self.snapshot(target).is_some_and(|s| s.owned.any());
                        if refusal.kind.escalates() || holding {
                            // A target that keeps failing, or one pitcrew
                            // already took out and cannot finish: people.
                            self.escalate(
                                target,
                                req,
                                &format!("{name} refused: {}", refusal.message),
                            )
                            .await;
                            return End::Escalated;
                        }
                        return End::RefusedAtStart;
                    }
                }
            }
            if step.kind.is_irreversible() && !resuming {
                self.audit_with(
                    target,
                    Some(req),
                    AuditEntry::Intent { step: name.into() },
                    true,
                )
                .await;
                let (_, durable) = self
                    .update(target, |s| {
                        s.intent = Some(Intent {
                            step: name.into(),
                            action: req.id.clone(),
                            written_at: Timestamp::now(),
                        });
                    })
                    .await;
                if !durable {
                    // Without a durable intent a crash could repeat the step.
                    self.audit(
                        target,
                        Some(req),
                        AuditEntry::StepFailed {
                            step: name.into(),
                            error: "intent could not be written to the state topic".into(),
                            retryable: true,
                        },
                    )
                    .await;
                    return self
                        .on_failure(target, req, plan, "intent not durable")
                        .await;
                }
            }
            self.audit(
                target,
                Some(req),
                AuditEntry::StepStarted { step: name.into() },
            )
            .await;
            if first_call {
                first_call = false;
                let waited = (Timestamp::now().unix_nanos() - req.requested_at.unix_nanos()).max(0);
                inner
                    .metrics
                    .request_to_first_call_seconds
                    .observe(waited as f64 / 1e9);
            }
            let started = Instant::now();
            let snap = self.snapshot(target).unwrap_or_else(|| st.clone());
            let result = self
                .execute_with_retries(target, req, plan, step, &snap, resuming)
                .await;
            inner
                .metrics
                .step_seconds
                .get_or_create(&StepLabel { step: name.into() })
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(done) => {
                    inner.metrics.step(
                        name,
                        if done.already {
                            "already_done"
                        } else {
                            "succeeded"
                        },
                    );
                    let entry = if done.already {
                        AuditEntry::AlreadyDone { step: name.into() }
                    } else {
                        AuditEntry::StepSucceeded {
                            step: name.into(),
                            detail: (!done.detail.is_empty()).then(|| done.detail.clone()),
                        }
                    };
                    if done.already && !done.detail.is_empty() {
                        tracing::info!(target_id = %target, step = name, detail = %done.detail, "already done");
                    }
                    self.audit(target, Some(req), entry).await;
                    if let Some(p) = &done.page {
                        for r in &p.receivers {
                            self.audit(
                                target,
                                Some(req),
                                AuditEntry::Paged {
                                    receiver: r.clone(),
                                    dedup_key: p.dedup_key.clone(),
                                },
                            )
                            .await;
                        }
                    }
                    i += 1;
                    self.update(target, |s| {
                        s.step = i as u32;
                        s.intent = None;
                        if let Some(v) = done.k8s_cordon {
                            s.owned.k8s_cordon = v;
                        }
                        if let Some(v) = done.k8s_taint {
                            s.owned.k8s_taint = v;
                        }
                        if let Some(v) = done.slurm_drain {
                            s.owned.slurm_drain = v;
                        }
                        if let Some(t) = done.verify_since {
                            s.verify_since = Some(t);
                        }
                        if step.kind == StepKind::Verify {
                            s.phase = Phase::InProgress;
                        }
                        if let Some(p) = done.page {
                            if !s.open_pages.iter().any(|o| o.dedup_key == p.dedup_key) {
                                s.open_pages.push(p);
                            }
                        }
                    })
                    .await;
                }
                Err(e) => {
                    inner.metrics.step(name, "failed");
                    self.audit(
                        target,
                        Some(req),
                        AuditEntry::StepFailed {
                            step: name.into(),
                            error: e.to_string(),
                            retryable: e.is_retryable(),
                        },
                    )
                    .await;
                    self.update(target, |s| s.intent = None).await;
                    return self
                        .on_failure(target, req, plan, &format!("{name} failed: {e}"))
                        .await;
                }
            }
        }
        let out = self.snapshot(target).is_some_and(|s| s.owned.any());
        End::Completed { out }
    }

    async fn on_failure(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        why: &str,
    ) -> End {
        match &plan.on_failure {
            OnFailure::Stop => End::Failed,
            OnFailure::Escalate => {
                self.escalate(target, req, why).await;
                End::Escalated
            }
            OnFailure::Plan(next) => {
                let mut n = req.clone();
                n.plan = next.clone();
                n.id = ActionRequest::make_id(&req.incident, &req.target, next, 1);
                n.reason = format!("{} ({why})", req.reason);
                End::Next(Box::new(n))
            }
        }
    }

    async fn await_approval(
        &self,
        target: &Target,
        req: &ActionRequest,
        st: &RemediationState,
    ) -> Result<(), End> {
        let now = Timestamp::now();
        let ttl = i64::try_from(self.inner.cfg.approval_ttl.as_nanos()).unwrap_or(i64::MAX);
        let expires = st.approval_expires_at.unwrap_or(now.add_nanos(ttl));
        let (tx, rx) = oneshot::channel();
        {
            let mut slots = lock(&self.inner.slots);
            if let Some(s) = slots.get_mut(target) {
                s.approve = Some(tx);
            }
        }
        if st.phase != Phase::AwaitingApproval {
            self.update(target, |s| {
                s.phase = Phase::AwaitingApproval;
                s.approval_expires_at = Some(expires);
            })
            .await;
            self.audit(
                target,
                Some(req),
                AuditEntry::AwaitingApproval {
                    expires_at: expires,
                },
            )
            .await;
        }
        self.refresh_gauges();
        let left = (expires.unix_nanos() - now.unix_nanos()).max(0);
        let wait = Duration::from_nanos(u64::try_from(left).unwrap_or(0));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(by)) => {
                self.audit(target, Some(req), AuditEntry::Approved { by })
                    .await;
                self.update(target, |s| {
                    s.phase = Phase::InProgress;
                    s.approval_expires_at = None;
                })
                .await;
                Ok(())
            }
            _ => {
                self.audit(
                    target,
                    Some(req),
                    AuditEntry::Refused {
                        step: "approval".into(),
                        reason: format!("not approved before {expires}"),
                    },
                )
                .await;
                Err(End::NotApproved)
            }
        }
    }

    async fn execute_with_retries(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        step: &Step,
        st: &RemediationState,
        resuming: bool,
    ) -> Result<Done, ExecError> {
        let retries = step.retries.unwrap_or(plan.retries);
        let mut wait = self.inner.cfg.retry_base;
        let mut attempt = 0;
        loop {
            // Only the first attempt after a restart observes instead of acting.
            let r = self
                .execute(target, req, step, st, resuming && attempt == 0)
                .await;
            match r {
                Err(e) if e.is_retryable() && attempt < retries => {
                    attempt += 1;
                    tracing::warn!(target_id = %target, step = step.kind.as_str(), attempt, error = %e, "step failed, retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
                other => return other,
            }
        }
    }

    fn node_names(&self, target: &Target) -> (String, String) {
        let info = self.inner.inventory.get(&target.name);
        let k8s = info
            .and_then(|n| n.k8s_node.clone())
            .unwrap_or_else(|| target.name.clone());
        let slurm = info
            .and_then(|n| n.slurm_node.clone())
            .unwrap_or_else(|| target.name.clone());
        (k8s, slurm)
    }

    async fn execute(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
        st: &RemediationState,
        resuming: bool,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let needs_node = !matches!(
            step.kind,
            StepKind::Page | StepKind::Notify | StepKind::Rma | StepKind::Escalate
        );
        if needs_node && target.kind != TargetKind::Node {
            return Err(ExecError::permanent(
                "plan",
                format!("step {} needs a node target, not {target}", step.kind),
            ));
        }
        let (k8s, slurm) = self.node_names(target);
        let node = target.name.as_str();
        let mut done = Done::default();
        match step.kind {
            StepKind::Cordon => {
                if exec.cluster.is_none() && exec.scheduler.is_none() {
                    return Err(ExecError::NotConfigured {
                        system: "kubernetes or slurm",
                    });
                }
                let mut notes = Vec::new();
                // Already done only if every system already was as wanted.
                done.already = true;
                if let Some(c) = &exec.cluster {
                    let r = c.cordon(&k8s, &req.id).await?;
                    // On a retry or resume, keep what an earlier attempt owned.
                    done.k8s_cordon = Some(r.cordoned || st.owned.k8s_cordon);
                    done.k8s_taint = Some(r.tainted || st.owned.k8s_taint);
                    notes.push(if r.cordoned {
                        "kubernetes: cordoned and tainted"
                    } else {
                        "kubernetes: already unschedulable"
                    });
                    done.already &= !r.cordoned && !r.tainted;
                }
                if let Some(s) = &exec.scheduler {
                    let reason = format!("{} {}", req.id, req.reason);
                    let r = s.drain(&slurm, &reason).await?;
                    done.slurm_drain = Some(match r {
                        DrainResult::Drained | DrainResult::AlreadyOurs => true,
                        DrainResult::AlreadyTheirs => st.owned.slurm_drain,
                    });
                    notes.push(match r {
                        DrainResult::Drained => "slurm: drained",
                        DrainResult::AlreadyOurs => "slurm: already drained by pitcrew",
                        DrainResult::AlreadyTheirs => {
                            "slurm: already drained by someone else (not ours to resume)"
                        }
                    });
                    done.already &= r != DrainResult::Drained;
                }
                done.detail = notes.join("; ");
            }
            StepKind::Drain | StepKind::RequeueJobs => {
                let job = if step.kind == StepKind::RequeueJobs {
                    param_str(req, "job")
                } else {
                    None
                };
                let mut notes = Vec::new();
                if step.kind == StepKind::Drain && deferred(req) {
                    if let Some(s) = &exec.scheduler {
                        notes.push(self.wait_job_boundary(target, s.as_ref(), &slurm).await?);
                    }
                }
                if let Some(c) = &exec.cluster {
                    let deadline = step.timeout.unwrap_or(self.inner.cfg.drain_deadline);
                    let n = c.evict(&k8s, job.as_deref(), deadline).await?;
                    notes.push(format!("kubernetes: {n} pods evicted"));
                }
                if let Some(s) = &exec.scheduler {
                    let jobs = s.requeue(&slurm, job.as_deref()).await?;
                    notes.push(format!("slurm: requeued [{}]", jobs.join(",")));
                }
                if notes.is_empty() {
                    return Err(ExecError::NotConfigured {
                        system: "kubernetes or slurm",
                    });
                }
                done.detail = notes.join("; ");
            }
            StepKind::ResetGpu => {
                let Some(g) = &exec.gpu_reset else {
                    return Err(ExecError::NotConfigured {
                        system: "gpu_reset",
                    });
                };
                if resuming {
                    // Found after a restart: the reset may have run. Not
                    // again: verification decides.
                    done.already = true;
                    done.detail = "intent found after restart: not resetting again".into();
                } else {
                    g.reset(node, gpu_of(req).as_deref()).await?;
                    done.detail =
                        format!("gpu {} reset", gpu_of(req).unwrap_or_else(|| "all".into()));
                }
                done.verify_since = Some(Timestamp::now());
            }
            StepKind::PowerCycle | StepKind::PowerOff | StepKind::PowerOn => {
                let Some(p) = &exec.power else {
                    return Err(ExecError::NotConfigured { system: "ipmi" });
                };
                let observed = p.status(node).await?;
                let resumed = resuming;
                let op = match (step.kind, observed) {
                    (StepKind::PowerOff, PowerState::Off) | (StepKind::PowerOn, PowerState::On) => {
                        None
                    }
                    (StepKind::PowerOff, PowerState::On) => Some(PowerOp::Off),
                    (StepKind::PowerOn, PowerState::Off) => Some(PowerOp::On),
                    // A chassis that is off cannot be cycled: switch it on.
                    (StepKind::PowerCycle, PowerState::Off) => Some(PowerOp::On),
                    // An intent without an outcome and the power on: the
                    // cycle ran (or it is safe not to run it): not again.
                    (_, PowerState::On) if resumed => None,
                    _ => Some(PowerOp::Cycle),
                };
                match op {
                    None => {
                        done.already = true;
                        done.detail = if resumed {
                            "intent found after restart and the bmc reports power on: not cycling again".into()
                        } else {
                            format!(
                                "bmc reports power {}",
                                if observed == PowerState::On {
                                    "on"
                                } else {
                                    "off"
                                }
                            )
                        };
                    }
                    Some(op) => {
                        p.control(node, op).await?;
                        done.detail = format!("{op:?}").to_lowercase();
                    }
                }
                done.verify_since = Some(
                    st.intent
                        .as_ref()
                        .map_or_else(Timestamp::now, |i| i.written_at),
                );
            }
            StepKind::Verify => {
                done.detail = self.verify(target, step, st).await?;
            }
            StepKind::Uncordon => {
                let mut notes = Vec::new();
                if let Some(c) = &exec.cluster {
                    if st.owned.k8s_cordon || st.owned.k8s_taint {
                        c.uncordon(&k8s, st.owned.k8s_cordon, st.owned.k8s_taint)
                            .await?;
                        notes.push("kubernetes: uncordoned");
                    } else {
                        notes.push("kubernetes: nothing of pitcrew's to undo");
                    }
                }
                if let Some(s) = &exec.scheduler {
                    if st.owned.slurm_drain {
                        let resumed = s.resume(&slurm).await?;
                        notes.push(if resumed {
                            "slurm: resumed"
                        } else {
                            "slurm: drain no longer pitcrew's"
                        });
                    } else {
                        notes.push("slurm: nothing of pitcrew's to undo");
                    }
                }
                done.k8s_cordon = Some(false);
                done.k8s_taint = Some(false);
                done.slurm_drain = Some(false);
                done.detail = notes.join("; ");
            }
            StepKind::Page | StepKind::Notify | StepKind::Rma | StepKind::Escalate => {
                let team = param_str(req, "team");
                let rma = step.kind == StepKind::Rma;
                let receivers = exec.pager.route(team.as_deref(), rma);
                let (severity, key, incident) = match step.kind {
                    StepKind::Notify => (
                        PageSeverity::Info,
                        format!("pitcrew/{}", req.incident),
                        Some(req.incident.clone()),
                    ),
                    StepKind::Page => (
                        PageSeverity::Critical,
                        format!("pitcrew/{}", req.incident),
                        Some(req.incident.clone()),
                    ),
                    StepKind::Rma => (PageSeverity::Warning, format!("pitcrew/rma/{target}"), None),
                    _ => (
                        PageSeverity::Critical,
                        format!("pitcrew/escalation/{target}"),
                        None,
                    ),
                };
                let summary = match step.kind {
                    StepKind::Rma => {
                        format!("RMA: {target} needs hardware service: {}", req.reason)
                    }
                    _ => req.reason.clone(),
                };
                let page =
                    self.page_for(target, Some(req), key, summary, severity, incident.clone());
                exec.pager
                    .send(&receivers, &page, PageEvent::Trigger)
                    .await?;
                done.detail = format!("paged {}", receivers.join(","));
                done.page = Some(OpenPage {
                    dedup_key: page.dedup_key,
                    receivers,
                    summary: page.summary,
                    incident,
                    opened_at: page.started_at,
                });
            }
        }
        Ok(done)
    }

    fn page_for(
        &self,
        target: &Target,
        req: Option<&ActionRequest>,
        dedup_key: String,
        summary: String,
        severity: PageSeverity,
        incident: Option<String>,
    ) -> Page {
        let mut details = BTreeMap::new();
        if let Some(r) = req {
            details.insert("plan".to_owned(), r.plan.clone());
            details.insert("action".to_owned(), r.id.clone());
            details.insert("incident".to_owned(), r.incident.clone());
        }
        if let Some(n) = self.inner.inventory.get(&target.name) {
            if let Some(rack) = &n.rack {
                details.insert("rack".to_owned(), rack.clone());
            }
        }
        Page {
            dedup_key,
            summary,
            severity,
            target: target.to_string(),
            incident,
            action: req.map(|r| r.id.clone()),
            started_at: Timestamp::now(),
            details,
        }
    }

    /// A deferred drain: the node is cordoned (no new work) and its running
    /// jobs go on to their end. The boundary comes when no job runs on the
    /// node, when a request waiting on this target restarts the app anyway
    /// (it would end the job: the reset rides along), or at the deadline
    /// (then the drain requeues what still runs).
    async fn wait_job_boundary(
        &self,
        target: &Target,
        scheduler: &dyn Scheduler,
        node: &str,
    ) -> Result<String, ExecError> {
        let cfg = &self.inner.cfg;
        let started = Instant::now();
        let deadline = started + cfg.boundary_deadline;
        let mut announced = false;
        loop {
            let jobs = scheduler.running(node).await?;
            let waited = started.elapsed().as_secs();
            if jobs.is_empty() {
                return Ok(format!("job boundary after {waited} s"));
            }
            let restart = self.snapshot(target).and_then(|s| {
                s.queued.iter().find_map(|q| {
                    let requeues =
                        self.inner.plans.get(&q.plan).is_some_and(|p| {
                            p.steps.iter().any(|st| st.kind == StepKind::RequeueJobs)
                        });
                    requeues.then(|| q.clone())
                })
            });
            if let Some(q) = restart {
                // This drain requeues the job: that is the restart the
                // waiting request asks for, so it is done here, not again
                // after the plan (and not refused by the cooldown it set).
                let cap = self.inner.cfg.handled_cap;
                self.update(target, |s| {
                    s.queued.retain(|x| x.id != q.id);
                    s.handled.push(q.id.clone());
                    if s.handled.len() > cap {
                        let cut = s.handled.len() - cap;
                        s.handled.drain(..cut);
                    }
                })
                .await;
                self.audit(
                    target,
                    Some(&q),
                    AuditEntry::AlreadyDone {
                        step: "requeue_jobs".into(),
                    },
                )
                .await;
                return Ok(format!(
                    "job boundary: {} ({}) restarts the app after {waited} s",
                    q.id, q.plan
                ));
            }
            if Instant::now() >= deadline {
                return Ok(format!(
                    "job boundary not reached in {waited} s: requeueing [{}]",
                    jobs.join(",")
                ));
            }
            if !announced {
                announced = true;
                tracing::info!(target_id = %target, jobs = ?jobs, "drain deferred to the job boundary");
            }
            tokio::time::sleep(cfg.verify_poll).await;
        }
    }

    async fn verify(
        &self,
        target: &Target,
        step: &Step,
        st: &RemediationState,
    ) -> Result<String, ExecError> {
        let exec = &self.inner.exec;
        let cfg = &self.inner.cfg;
        let node = target.name.as_str();
        let since = st.verify_since.unwrap_or(st.updated_at);
        let timeout = step.timeout.unwrap_or(cfg.verify_timeout);
        let deadline = Instant::now() + timeout;
        let mut notes = Vec::new();
        // 1. power on
        if let Some(p) = &exec.power {
            loop {
                match p.status(node).await {
                    Ok(PowerState::On) => break,
                    Ok(PowerState::Off) | Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(cfg.verify_poll).await;
                    }
                    Ok(PowerState::Off) => {
                        return Err(ExecError::permanent(
                            "verify",
                            "the bmc still reports power off",
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
            notes.push("power on".to_owned());
        }
        // 2. a heartbeat after the power step
        if let Some(h) = &exec.heartbeats {
            loop {
                if h.seen_since(node, since).await.unwrap_or(false) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ExecError::permanent(
                        "verify",
                        format!(
                            "no heartbeat from {node} since {since} within {} s",
                            timeout.as_secs()
                        ),
                    ));
                }
                tokio::time::sleep(cfg.verify_poll).await;
            }
            notes.push("heartbeat back".to_owned());
        }
        // 3. no new incident for the quiet time
        let quiet_until = Instant::now() + cfg.verify_quiet;
        loop {
            let last = lock(&self.inner.incidents).get(node).cloned();
            if let Some((at, id)) = last {
                // The incident that asked for this plan does not count.
                if at >= since && st.request.as_ref().is_none_or(|r| r.incident != id) {
                    return Err(ExecError::permanent(
                        "verify",
                        format!("new fault during verification: {id}"),
                    ));
                }
            }
            if Instant::now() >= quiet_until {
                break;
            }
            tokio::time::sleep(cfg.verify_poll.min(quiet_until - Instant::now())).await;
        }
        notes.push(format!("quiet for {} s", cfg.verify_quiet.as_secs()));
        Ok(notes.join(", "))
    }

    async fn escalate(&self, target: &Target, req: &ActionRequest, why: &str) {
        let receivers = self
            .inner
            .exec
            .pager
            .route(self.inner.cfg.escalation_team.as_deref(), false);
        self.audit(
            target,
            Some(req),
            AuditEntry::Escalated {
                to: receivers.join(","),
                reason: why.to_owned(),
            },
        )
        .await;
        let page = self.page_for(
            target,
            Some(req),
            format!("pitcrew/escalation/{target}"),
            format!("{target} needs a person: {why}"),
            PageSeverity::Critical,
            None,
        );
        match self
            .inner
            .exec
            .pager
            .send(&receivers, &page, PageEvent::Trigger)
            .await
        {
            Ok(()) => {
                for r in &receivers {
                    self.audit(
                        target,
                        Some(req),
                        AuditEntry::Paged {
                            receiver: r.clone(),
                            dedup_key: page.dedup_key.clone(),
                        },
                    )
                    .await;
                }
                let open = OpenPage {
                    dedup_key: page.dedup_key.clone(),
                    receivers,
                    summary: page.summary.clone(),
                    incident: None,
                    opened_at: page.started_at,
                };
                self.update(target, |s| {
                    if !s.open_pages.iter().any(|o| o.dedup_key == open.dedup_key) {
                        s.open_pages.push(open);
                    }
                })
                .await;
            }
            Err(e) => {
                tracing::error!(target_id = %target, error = %e, "escalation page not delivered");
            }
        }
    }

    /// The breaker latched: audit, persist, and one grouped page.
    async fn breaker_opened(&self, b: BreakerState, req: Option<&ActionRequest>) {
        let target = breaker_target();
        self.audit(
            &target,
            req,
            AuditEntry::BreakerOpened {
                reason: b.reason.clone(),
            },
        )
        .await;
        let receivers = self
            .inner
            .exec
            .pager
            .route(self.inner.cfg.escalation_team.as_deref(), false);
        let page = self.page_for(
            &target,
            None,
            "pitcrew/breaker".to_owned(),
            format!(
                "pitcrew circuit breaker open, destructive remediation stopped until `pitcrew breaker reset`: {}",
                b.reason
            ),
            PageSeverity::Critical,
            None,
        );
        let sent = self
            .inner
            .exec
            .pager
            .send(&receivers, &page, PageEvent::Trigger)
            .await;
        let mut st = RemediationState::healthy(target.clone(), Timestamp::now());
        st.breaker = Some(b);
        if sent.is_ok() {
            for r in &receivers {
                self.audit(
                    &target,
                    req,
                    AuditEntry::Paged {
                        receiver: r.clone(),
                        dedup_key: page.dedup_key.clone(),
                    },
                )
                .await;
            }
            st.open_pages.push(OpenPage {
                dedup_key: page.dedup_key,
                receivers,
                summary: page.summary,
                incident: None,
                opened_at: page.started_at,
            });
        }
        lock(&self.inner.slots).insert(
            target,
            Slot {
                state: st.clone(),
                running: false,
                approve: None,
            },
        );
        self.write_state(st).await;
        self.refresh_gauges();
    }

    async fn resolve_page(&self, target: &Target, p: &OpenPage) {
        let page = Page {
            dedup_key: p.dedup_key.clone(),
            summary: p.summary.clone(),
            severity: PageSeverity::Info,
            target: target.to_string(),
            incident: p.incident.clone(),
            action: None,
            started_at: p.opened_at,
            details: BTreeMap::new(),
        };
        if let Err(e) = self
            .inner
            .exec
            .pager
            .send(&p.receivers, &page, PageEvent::Resolve)
            .await
        {
            tracing::error!(target_id = %target, dedup_key = %p.dedup_key, error = %e, "resolve not delivered");
        }
    }
}

/// Makes `req` the running request of `st`.
fn start(st: &mut RemediationState, req: &ActionRequest, handled_cap: usize, now: Timestamp) {
    st.phase = Phase::InProgress;
    st.action = Some(req.id.clone());
    st.plan = Some(req.plan.clone());
    st.request = Some(req.clone());
    st.step = 0;
    st.intent = None;
    st.verify_since = None;
    st.handled.push(req.id.clone());
    if st.handled.len() > handled_cap {
        let cut = st.handled.len() - handled_cap;
        st.handled.drain(..cut);
    }
    st.updated_at = now;
}
