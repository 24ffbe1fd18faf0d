//! A plan run as a reconciler, in the way of kube-runtime's: each pass
//! observes the target's state record, does at most one thing (enter a
//! step, take one attempt, make one observation of a wait) and returns
//! what it wants next ([`Requeue`]: at once, after a while, on a person's
//! answer, or done). The driver, [`Worker::run_plan`], is the only place a
//! run sleeps or waits; a pass never does.
//!
//! What a run remembers between passes beyond the state record is in
//! [`Progress`]: timings and counters that a restart may lose. Everything a
//! crash must not lose (the step reached, the intent, what pitcrew owns,
//! the attempts and cooldown) is in the record, written before it matters.

use super::*;

/// What a pass asks of its driver.
#[derive(Debug)]
pub(super) enum Requeue {
    /// A step was entered, finished or skipped: the next pass is due now.
    Now,
    /// Look again after this long (a wait's poll, a retry's backoff).
    After(Duration),
    /// Wait for a person's answer on this channel, at most this long.
    Approval(oneshot::Receiver<String>, Duration),
    /// The run is over.
    Done(End),
}

/// One attempt at a step, or one observation of its wait: the step is
/// done (with what it did), or wants another look after a while.
#[derive(Debug)]
pub(super) enum Stepped<T> {
    Done(T),
    Again(Duration),
}

/// What a run remembers between passes that is not in the state record.
#[derive(Debug)]
pub(super) struct Progress {
    /// This request's intent was in the record when the run began (a
    /// crash's): the first step entered observes instead of acting.
    found_intent: bool,
    /// The plan's first destructive step (when the plan takes the node
    /// out): where the attempt and the cooldown are recorded.
    first_destructive: Option<usize>,
    /// The attempt is not yet recorded for this run.
    plan_start_pending: bool,
    /// No step has been started by this run yet (for the request to first
    /// call latency).
    first_call: bool,
    approval: Approval,
    /// The step being worked on.
    step: Option<StepProgress>,
}

/// Where the run's approval gate is.
#[derive(Debug)]
enum Approval {
    /// No approval (not asked for, dry run, or already given).
    NotNeeded,
    /// To be asked.
    Ask,
    /// The answer: who approved, or `None` when the time ran out.
    Answered(Option<String>),
}

/// The step being worked on.
#[derive(Debug)]
pub(super) struct StepProgress {
    index: usize,
    /// The state record as the step found it: what it observes against
    /// across its attempts and passes.
    st: RemediationState,
    /// Entered with a crash's intent: the first attempt observes.
    resuming: bool,
    /// Failed attempts so far.
    attempt: u32,
    started: Instant,
    wait: WaitProgress,
}

/// A wait inside a step (the job boundary, verification); an attempt that
/// fails and is retried starts its wait over.
#[derive(Debug, Default)]
pub(super) struct WaitProgress {
    /// When the wait began.
    pub(super) since: Option<Instant>,
    /// The deferred drain was logged once.
    pub(super) announced: bool,
    /// The job boundary's note once it came (the drain then goes on).
    pub(super) boundary: Option<String>,
    /// Pods the drain evicted (once it has), and when.
    pub(super) evicted: Option<(usize, Instant)>,
    /// What the eviction does to each training job on the node, found
    /// once before it, for the drain's detail.
    pub(super) eviction_notes: Vec<String>,
    pub(super) verify: Option<VerifyPhase>,
    /// The node check that ran and passed (its description), for the note.
    pub(super) check: Option<String>,
}

impl Progress {
    /// A run's progress, rebuilt from the state record it starts from.
    pub(super) fn new(req: &ActionRequest, plan: &Plan, st: &RemediationState, dry: bool) -> Self {
        // Cooldown and the attempt budget stop node remediation loops: a
        // plan that only restarts a job (requeue_jobs) is not one, and must
        // not hold back the drain that may follow it.
        let first_destructive = plan
            .steps
            .iter()
            .position(|s| s.kind.is_destructive())
            .filter(|_| plan.takes_node_out());
        Progress {
            found_intent: st.intent.as_ref().is_some_and(|i| i.action == req.id),
            first_destructive,
            plan_start_pending: st.step == 0 && !st.owned.any() && first_destructive.is_some(),
            first_call: st.step == 0,
            approval: if plan.approval && st.step == 0 && !dry {
                Approval::Ask
            } else {
                Approval::NotNeeded
            },
            step: None,
        }
    }
}

impl Worker {
    /// Drives [`Worker::reconcile`] until the run ends: the run's only
    /// sleeps and waits.
    pub(super) async fn run_plan(&self, target: &Target, req: &ActionRequest, plan: &Plan) -> End {
        let Some(st) = self.snapshot(target) else {
            return End::Failed;
        };
        let mut progress = Progress::new(req, plan, &st, self.dry(req, plan));
        loop {
            match self.reconcile(target, req, plan, &mut progress).await {
                Requeue::Now => {}
                Requeue::After(wait) => tokio::time::sleep(wait).await,
                Requeue::Approval(answer, within) => {
                    let by = tokio::time::timeout(within, answer)
                        .await
                        .ok()
                        .and_then(Result::ok);
                    progress.approval = Approval::Answered(by);
                }
                Requeue::Done(end) => return end,
            }
        }
    }

    fn dry(&self, req: &ActionRequest, plan: &Plan) -> bool {
        self.inner.cfg.dry_run || plan.dry_run || req.dry_run
    }

    /// One pass: the approval gate first, then the step the record is at
    /// (entered through the governor and the intent, then one attempt).
    pub(super) async fn reconcile(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        progress: &mut Progress,
    ) -> Requeue {
        let Some(st) = self.snapshot(target) else {
            return Requeue::Done(End::Failed);
        };
        match std::mem::replace(&mut progress.approval, Approval::NotNeeded) {
            Approval::NotNeeded => {}
            Approval::Ask => {
                progress.approval = Approval::Ask;
                let (answer, within) = self.ask_approval(target, req, &st).await;
                return Requeue::Approval(answer, within);
            }
            Approval::Answered(by) => {
                return match self.approval_answered(target, req, by).await {
                    Ok(()) => Requeue::Now,
                    Err(end) => Requeue::Done(end),
                };
            }
        }
        let i = st.step as usize;
        let Some(step) = plan.steps.get(i) else {
            return Requeue::Done(End::Completed {
                out: st.owned.any(),
            });
        };
        if progress.step.as_ref().is_none_or(|s| s.index != i) {
            if let Some(next) = self.enter(target, req, plan, i, &st, progress).await {
                return next;
            }
        }
        let Some(cur) = progress.step.as_mut() else {
            return Requeue::Done(End::Failed);
        };
        let resuming = cur.resuming && cur.attempt == 0;
        let result = self
            .execute(target, req, step, &cur.st, &mut cur.wait, resuming)
            .await;
        let name = step.kind.as_str();
        let e = match result {
            Ok(Stepped::Again(wait)) => return Requeue::After(wait),
            Ok(Stepped::Done(done)) => {
                self.step_took(name, cur.started);
                progress.step = None;
                self.record_done(target, req, step, done, i + 1).await;
                return Requeue::Now;
            }
            Err(e) => e,
        };
        let retries = step.retries.unwrap_or(plan.retries);
        if let Some(wait) = retry_after(
            e.is_retryable(),
            cur.attempt,
            retries,
            self.inner.cfg.retry_base,
        ) {
            cur.attempt += 1;
            cur.wait = WaitProgress::default();
            self.inner.metrics.emit(StepRetrying {
                target,
                step: name,
                attempt: cur.attempt + 1,
                after: wait,
                error: &e,
            });
            return Requeue::After(wait);
        }
        self.step_took(name, cur.started);
        progress.step = None;
        self.inner.metrics.step(name, "failed");
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
        Requeue::Done(
            self.on_failure(target, req, plan, &format!("{name} failed: {e}"))
                .await,
        )
    }

    /// Enters step `i`: a destructive one through the governor (or only
    /// described in a dry run), an irreversible one after its intent is
    /// durable. `None` when the step is entered and its first attempt is
    /// due; otherwise what the pass returns.
    async fn enter(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        i: usize,
        st: &RemediationState,
        progress: &mut Progress,
    ) -> Option<Requeue> {
        let step = &plan.steps[i];
        let name = step.kind.as_str();
        // The first step entered after a restart with an intent: it was
        // allowed before the crash and its intent is written.
        let resuming = std::mem::take(&mut progress.found_intent);
        if step.kind.is_destructive() && !resuming {
            if self.dry(req, plan) {
                self.inner.metrics.step(name, "dry_run");
                self.audit(target, Some(req), AuditEntry::DryRun { step: name.into() })
                    .await;
                self.update(target, |s| s.step = (i + 1) as u32).await;
                return Some(Requeue::Now);
            }
            let plan_start =
                progress.plan_start_pending && progress.first_destructive.is_some_and(|f| i >= f);
            if let Err(end) = self.gate(target, req, plan, step, st, plan_start).await {
                return Some(Requeue::Done(end));
            }
            if plan_start {
                progress.plan_start_pending = false;
            }
        }
        if step.kind.is_irreversible() && !resuming {
            if let Err(end) = self.write_intent(target, req, plan, name).await {
                return Some(Requeue::Done(end));
            }
        }
        self.audit(
            target,
            Some(req),
            AuditEntry::StepStarted { step: name.into() },
        )
        .await;
        if std::mem::take(&mut progress.first_call) {
            let waited = (self.now().unix_nanos() - req.requested_at.unix_nanos()).max(0);
            self.inner
                .metrics
                .request_to_first_call_seconds
                .observe(waited as f64 / 1e9);
        }
        progress.step = Some(StepProgress {
            index: i,
            st: self.snapshot(target).unwrap_or_else(|| st.clone()),
            resuming,
            attempt: 0,
            started: Instant::now(),
            wait: WaitProgress::default(),
        });
        None
    }

    fn step_took(&self, name: &str, started: Instant) {
        self.inner
            .metrics
            .step_seconds
            .get_or_create(&StepLabel { step: name.into() })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::exec::page::Paging;
    use crate::exec::sim::SimFleet;
    use crate::governor::GovernorConfig;
    use pitcrew_rules::NodeInfo;

    fn t0() -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000)
    }

    fn worker(fleet: &SimFleet, plan: Plan) -> Worker {
        let inv = Arc::new(Inventory::new(vec![NodeInfo {
            name: "n1".into(),
            ..NodeInfo::default()
        }]));
        let exec = Executors {
            cluster: Some(Arc::new(fleet.clone())),
            scheduler: Some(Arc::new(fleet.clone())),
            power: Some(Arc::new(fleet.clone())),
            gpu_reset: None,
            heartbeats: Some(Arc::new(fleet.clone())),
            node_check: None,
            pager: Arc::new(Paging::default()),
        };
        let mut plans = PlanBook::builtin();
        plans.insert(plan);
        let gov = GovernorConfig {
            max_out_of_service: 10,
            max_out_of_service_percent: 100.0,
            ..GovernorConfig::default()
        };
        Worker::new(
            WorkerConfig {
                clock: fleet.clock.clone(),
                ..WorkerConfig::default()
            },
            plans,
            exec,
            Arc::new(MemoryJournal::default()),
            Governor::new(gov, Arc::clone(&inv)),
            inv,
            RemediateMetrics::default(),
        )
    }

    /// The record as `submit` leaves it, without starting the driver.
    fn hold(w: &Worker, req: &ActionRequest) {
        let mut st = RemediationState::healthy(req.target.clone(), t0());
        start(&mut st, req, 8, t0());
        lock(&w.inner.slots).insert(
            req.target.clone(),
            Slot {
                state: st,
                running: true,
                approve: None,
            },
        );
    }

    fn request(target: &Target, incident: &str, plan: &str) -> ActionRequest {
        ActionRequest {
            v: V1,
            id: ActionRequest::make_id(incident, target, plan, 0),
            incident: incident.into(),
            rule: None,
            target: target.clone(),
            plan: plan.into(),
            params: BTreeMap::new(),
            requested_at: t0(),
            reason: "test".into(),
            events: Vec::new(),
            dry_run: false,
        }
    }

    fn shown(r: &Requeue) -> String {
        match r {
            Requeue::Now => "now".into(),
            Requeue::After(d) => format!("after {}s", d.as_secs()),
            Requeue::Approval(_, within) => format!("approval within {}s", within.as_secs()),
            Requeue::Done(end) => format!("done {end:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_pass_does_one_thing_and_says_when_to_come_back() {
        let mut fleet = SimFleet::new(["n1".to_owned()]);
        fleet.clock = Clock::tokio_at(t0());
        let plan = Plan {
            name: "cycle".into(),
            steps: vec![
                Step::new(StepKind::Cordon),
                Step::new(StepKind::PowerCycle),
                Step::new(StepKind::Verify),
                Step::new(StepKind::Uncordon),
            ],
            on_failure: OnFailure::Escalate,
            retries: 2,
            approval: false,
            dry_run: false,
        };
        let w = worker(&fleet, plan.clone());
        let target = Target::node("n1");
        let req = request(&target, "inc-1", "cycle");
        hold(&w, &req);
        let mut progress = Progress::new(&req, &plan, &w.snapshot(&target).unwrap(), false);
        macro_rules! pass {
            () => {
                w.reconcile(&target, &req, &plan, &mut progress)
            };
        }

        // The cordon: done in one pass, recorded before the next.
        assert_eq!(shown(&pass!().await), "now");
        assert_eq!(w.snapshot(&target).unwrap().step, 1);
        assert!(w.snapshot(&target).unwrap().owned.k8s_cordon);
        // The BMC does not answer: each pass is one attempt, and the
        // backoff doubles; nothing slept inside the pass.
        fleet.set_bmc_down("n1", true);
        let before = tokio::time::Instant::now();
        assert_eq!(shown(&pass!().await), "after 1s");
        assert_eq!(shown(&pass!().await), "after 2s");
        assert!(
            before.elapsed() < Duration::from_secs(1),
            "{:?}",
            before.elapsed()
        );
        assert_eq!(w.snapshot(&target).unwrap().step, 1, "still the power step");
        let retried = w
            .inner
            .metrics
            .steps
            .get_or_create(&crate::metrics::StepLabels {
                step: "power_cycle".into(),
                outcome: "retried".into(),
            })
            .get();
        assert_eq!(retried, 2, "each retry is counted with its log line");
        fleet.set_bmc_down("n1", false);
        assert_eq!(shown(&pass!().await), "now");
        assert_eq!(fleet.count("power cycle"), 1);
        // Verification: power, then the heartbeat, then the quiet time,
        // each a look again after the poll, until it is over.
        fleet.heartbeat("n1", fleet.clock.now());
        let mut waits = Vec::new();
        loop {
            match pass!().await {
                Requeue::After(d) => {
                    waits.push(d);
                    tokio::time::advance(d).await;
                }
                Requeue::Now => break,
                other => panic!("verification: {}", shown(&other)),
            }
        }
        let waited: Duration = waits.iter().sum();
        assert!(
            waited >= Duration::from_secs(120) && waits.len() >= 24,
            "the quiet time in polls: {waits:?}"
        );
        assert_eq!(shown(&pass!().await), "now", "the uncordon");
        assert_eq!(shown(&pass!().await), "done Completed { out: false }");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_needs_approval_hands_the_wait_to_its_driver() {
        let mut fleet = SimFleet::new(["n1".to_owned()]);
        fleet.clock = Clock::tokio_at(t0());
        let plan = Plan {
            name: "gated".into(),
            steps: vec![Step::new(StepKind::Cordon)],
            on_failure: OnFailure::Stop,
            retries: 0,
            approval: true,
            dry_run: false,
        };
        let w = worker(&fleet, plan.clone());
        let target = Target::node("n1");
        let req = request(&target, "inc-2", "gated");
        hold(&w, &req);
        let mut progress = Progress::new(&req, &plan, &w.snapshot(&target).unwrap(), false);
        let Requeue::Approval(answer, within) =
            w.reconcile(&target, &req, &plan, &mut progress).await
        else {
            panic!("the first pass asks for approval")
        };
        assert_eq!(within, Duration::from_secs(3600));
        assert_eq!(w.snapshot(&target).unwrap().phase, Phase::AwaitingApproval);
        w.approve(&req.id, "alice").unwrap();
        progress.approval = Approval::Answered(answer.await.ok());
        assert_eq!(
            shown(&w.reconcile(&target, &req, &plan, &mut progress).await),
            "now"
        );
        assert_eq!(w.snapshot(&target).unwrap().phase, Phase::InProgress);
        assert_eq!(
            shown(&w.reconcile(&target, &req, &plan, &mut progress).await),
            "now",
            "the cordon"
        );
        assert_eq!(
            shown(&w.reconcile(&target, &req, &plan, &mut progress).await),
            "done Completed { out: true }"
        );
    }
}
