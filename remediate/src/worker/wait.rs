//! The waits inside a run: a person's approval, a deferred drain's job
//! boundary, and verification (power back, heartbeat back, quiet).

use super::*;

impl Worker {
    /// Asks for a person's approval (once: after a restart that finds the
    /// target already waiting, the same deadline stands): the channel the
    /// answer comes on and how long it may take.
    pub(super) async fn ask_approval(
        &self,
        target: &Target,
        req: &ActionRequest,
        st: &RemediationState,
    ) -> (oneshot::Receiver<String>, Duration) {
        let now = self.now();
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
        (rx, Duration::from_nanos(u64::try_from(left).unwrap_or(0)))
    }

    /// The approval's answer: who gave it, or `None` when its time ran out
    /// (the run ends, not approved).
    pub(super) async fn approval_answered(
        &self,
        target: &Target,
        req: &ActionRequest,
        by: Option<String>,
    ) -> Result<(), End> {
        if let Some(by) = by {
            self.audit(target, Some(req), AuditEntry::Approved { by })
                .await;
            self.update(target, |s| {
                s.phase = Phase::InProgress;
                s.approval_expires_at = None;
            })
            .await;
            return Ok(());
        }
        let expires = self
            .snapshot(target)
            .and_then(|s| s.approval_expires_at)
            .unwrap_or_else(|| self.now());
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

    /// A deferred drain: the node is cordoned (no new work) and its running
    /// jobs go on to their end. The boundary comes when no job runs on the
    /// node (Slurm's jobs; on Kubernetes, training jobs' unfinished pods,
    /// a job that reports a checkpoint saved since the request counting as
    /// at its boundary), when a request waiting on this target restarts
    /// the app anyway (it would end the job: the reset rides along), or at
    /// the deadline (then the drain requeues and evicts what still runs).
    /// What to do next is [`boundary`]'s decision; this makes one
    /// observation.
    pub(super) async fn job_boundary(
        &self,
        target: &Target,
        req: &ActionRequest,
        k8s: &str,
        slurm: &str,
        wait: &mut WaitProgress,
    ) -> Result<Stepped<String>, ExecError> {
        let exec = &self.inner.exec;
        let cfg = &self.inner.cfg;
        let since = *wait.since.get_or_insert_with(Instant::now);
        let mut jobs = match &exec.scheduler {
            Some(s) => s.running(slurm).await?,
            None => Vec::new(),
        };
        let mut saved = Vec::new();
        if let Some(c) = &exec.cluster {
            for j in c.jobs_on(k8s).await? {
                match j.checkpointed_at {
                    Some(at) if at >= req.requested_at => {
                        saved.push(format!("{} checkpointed at {at}", j.job));
                    }
                    _ => jobs.push(j.job),
                }
            }
        }
        let restart = self.restart_waiting(target);
        let seen = BoundarySeen {
            jobs: &jobs,
            saved: &saved,
            restart: restart.as_ref(),
            waited: since.elapsed(),
        };
        match boundary(&seen, cfg.boundary_deadline, cfg.verify_poll) {
            Decision::Done(note) => {
                if let Some(q) = &restart {
                    self.restart_rides_along(target, q).await;
                }
                Ok(Stepped::Done(note))
            }
            Decision::Failed(why) => Err(ExecError::permanent("drain", why)),
            Decision::After(after) => {
                if !std::mem::replace(&mut wait.announced, true) {
                    tracing::info!(target_id = %target, jobs = ?jobs, "drain deferred to the job boundary");
                }
                Ok(Stepped::Again(after))
            }
        }
    }

    /// A request queued on this target whose plan requeues the node's jobs
    /// (an app restart): the drain's requeue does it.
    fn restart_waiting(&self, target: &Target) -> Option<ActionRequest> {
        self.snapshot(target).and_then(|s| {
            s.queued.iter().find_map(|q| {
                let requeues = self
                    .inner
                    .plans
                    .get(&q.plan)
                    .is_some_and(|p| p.steps.iter().any(|st| st.kind == StepKind::RequeueJobs));
                requeues.then(|| q.clone())
            })
        })
    }

    /// This drain requeues the job: that is the restart the waiting request
    /// asks for, so it is done here, not again after the plan (and not
    /// refused by the cooldown it set).
    async fn restart_rides_along(&self, target: &Target, q: &ActionRequest) {
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
            Some(q),
            AuditEntry::AlreadyDone {
                step: "requeue_jobs".into(),
            },
        )
        .await;
    }

    /// Verification after a power step: the BMC says on, the node's
    /// heartbeat is back (with the inventory's GPU count, when both say
    /// one), the node check passes, and no new incident for the quiet time.
    /// [`verify_next`] decides; this makes the one observation the phase
    /// needs.
    pub(super) async fn verify(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
        st: &RemediationState,
        wait: &mut WaitProgress,
    ) -> Result<Stepped<String>, ExecError> {
        let exec = &self.inner.exec;
        let cfg = &self.inner.cfg;
        let node = target.name.as_str();
        let since = st.verify_since.unwrap_or(st.updated_at);
        let times = VerifyTimes {
            timeout: step.timeout.unwrap_or(cfg.verify_timeout),
            quiet: cfg.verify_quiet,
            poll: cfg.verify_poll,
        };
        let want = VerifyWant {
            node,
            since,
            gpus: self.inner.inventory.get(node).and_then(|n| n.gpus),
        };
        let started = *wait.since.get_or_insert_with(Instant::now);
        let phase = wait.verify.get_or_insert_with(|| {
            VerifyPhase::start(exec.power.is_some(), exec.heartbeats.is_some())
        });
        let seen = match *phase {
            VerifyPhase::Power => match exec.power.as_ref() {
                Some(p) => VerifySeen::Power(p.status(node).await),
                None => VerifySeen::Nothing,
            },
            VerifyPhase::Heartbeat => match exec.heartbeats.as_ref() {
                Some(h) => VerifySeen::Heartbeat(h.seen_since(node, since).await.unwrap_or(None)),
                None => VerifySeen::Nothing,
            },
            VerifyPhase::Check => match exec.node_check.as_ref() {
                Some(c) => {
                    let (k8s, slurm) = self.node_names(target);
                    let outcome = c
                        .run(CheckNode {
                            node,
                            k8s: &k8s,
                            slurm: &slurm,
                            action: &req.id,
                        })
                        .await?;
                    wait.check = Some(c.describe());
                    VerifySeen::Check(outcome)
                }
                None => VerifySeen::Nothing,
            },
            VerifyPhase::Quiet { .. } => {
                let last = lock(&self.inner.incidents).get(node).cloned();
                // The incident that asked for this plan does not count.
                VerifySeen::NewIncident(last.and_then(|(at, id)| {
                    (at >= since && st.request.as_ref().is_none_or(|r| r.incident != id))
                        .then_some(id)
                }))
            }
        };
        let elapsed = started.elapsed();
        // Once time is up, the BMC's own error stands (retryable or not);
        // before, the decision is to look again.
        let seen = match seen {
            VerifySeen::Power(Err(e)) if elapsed >= times.timeout => return Err(e),
            seen => seen,
        };
        match verify_next(phase, seen, elapsed, &times, &want) {
            Decision::Done(()) => {
                let mut notes = Vec::new();
                if exec.power.is_some() {
                    notes.push("power on".to_owned());
                }
                if exec.heartbeats.is_some() {
                    notes.push(match want.gpus {
                        Some(n) => format!("heartbeat back ({n} GPUs)"),
                        None => "heartbeat back".to_owned(),
                    });
                }
                if let Some(check) = &wait.check {
                    notes.push(format!("check passed ({check})"));
                }
                notes.push(format!("quiet for {} s", times.quiet.as_secs()));
                Ok(Stepped::Done(notes.join(", ")))
            }
            Decision::Failed(why) => Err(ExecError::permanent("verify", why)),
            Decision::After(after) => Ok(Stepped::Again(after)),
        }
    }
}

/// What a wait decides after an observation: it is over (with a note), it
/// failed (why), or look again after a while. Pure: the observations
/// above feed them, the reconcile pass hands their waits to its driver, and
/// tests drive them without a runtime.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision<T> {
    Done(T),
    Failed(String),
    After(Duration),
}

/// What a job-boundary wait saw.
#[derive(Debug)]
pub(super) struct BoundarySeen<'a> {
    /// Jobs running on the node now.
    pub(super) jobs: &'a [String],
    /// Jobs still on the node that saved a checkpoint since the request:
    /// at their boundary.
    pub(super) saved: &'a [String],
    /// A queued request that restarts the app (its requeue is the boundary).
    pub(super) restart: Option<&'a ActionRequest>,
    /// Since the wait began.
    pub(super) waited: Duration,
}

/// The job-boundary decision: over when no job runs, when an app restart
/// waits anyway, or at the deadline (the drain then requeues what runs).
pub(super) fn boundary(
    seen: &BoundarySeen<'_>,
    deadline: Duration,
    poll: Duration,
) -> Decision<String> {
    let waited = seen.waited.as_secs();
    if seen.jobs.is_empty() {
        if !seen.saved.is_empty() {
            return Decision::Done(format!(
                "job boundary after {waited} s: {}",
                seen.saved.join(", ")
            ));
        }
        return Decision::Done(format!("job boundary after {waited} s"));
    }
    if let Some(q) = seen.restart {
        return Decision::Done(format!(
            "job boundary: {} ({}) restarts the app after {waited} s",
            q.id, q.plan
        ));
    }
    if seen.waited >= deadline {
        return Decision::Done(format!(
            "job boundary not reached in {waited} s: requeueing [{}]",
            seen.jobs.join(",")
        ));
    }
    Decision::After(poll.min(deadline - seen.waited))
}

/// How long a drain waits for its evicted pods.
#[derive(Clone, Copy, Debug)]
pub(super) struct PodsGoneTimes {
    /// Since the eviction.
    pub(super) waited: Duration,
    /// The drain's deadline for all of them.
    pub(super) deadline: Duration,
    /// How long past its grace period a pod may still be terminating.
    pub(super) margin: Duration,
    pub(super) poll: Duration,
}

/// Whether the evicted pods are gone: over when none is left, or when the
/// node is not Ready (its kubelet can end nothing, and nothing runs); failed
/// when one is still terminating `margin` past its grace period, or any is
/// left at the deadline; otherwise look again.
pub(super) fn pods_gone(left: &PodsLeft, now: Timestamp, t: &PodsGoneTimes) -> Decision<String> {
    let waited = t.waited.as_secs_f64();
    if left.pods.is_empty() {
        return Decision::Done(format!("gone after {waited:.1} s"));
    }
    if !left.node_ready {
        return Decision::Done(format!(
            "{} not gone but the node is not ready (nothing runs on it to wait for)",
            left.pods.len()
        ));
    }
    let margin = i64::try_from(t.margin.as_nanos()).unwrap_or(i64::MAX);
    if let Some(p) = left
        .pods
        .iter()
        .find(|p| p.grace_ends.is_some_and(|g| g.add_nanos(margin) <= now))
    {
        return Decision::Failed(format!(
            "pod {} still terminating {} s after its grace period ended ({} left)",
            p.name,
            (now.unix_nanos() - p.grace_ends.map_or(0, Timestamp::unix_nanos)) / 1_000_000_000,
            left.pods.len()
        ));
    }
    if t.waited >= t.deadline {
        let names: Vec<&str> = left.pods.iter().map(|p| p.name.as_str()).collect();
        return Decision::Failed(format!(
            "{} pods still on the node {} s after their eviction: {}",
            names.len(),
            t.deadline.as_secs(),
            names.join(", ")
        ));
    }
    Decision::After(t.poll.min(t.deadline - t.waited))
}

/// Verification's timing.
#[derive(Clone, Copy, Debug)]
pub(super) struct VerifyTimes {
    /// For power and heartbeat together.
    pub(super) timeout: Duration,
    pub(super) quiet: Duration,
    pub(super) poll: Duration,
}

/// What verification expects of the node.
#[derive(Clone, Copy, Debug)]
pub(super) struct VerifyWant<'a> {
    pub(super) node: &'a str,
    /// The power step's time: heartbeats from before do not count.
    pub(super) since: Timestamp,
    /// The inventory's GPU count for the node.
    pub(super) gpus: Option<u32>,
}

/// Where verification is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VerifyPhase {
    Power,
    Heartbeat,
    /// The node check (a diagnostic on the node), where one is configured.
    Check,
    /// Quiet since `from` (time since verification began).
    Quiet {
        from: Duration,
    },
}

impl VerifyPhase {
    /// The first phase there is an executor for (the check's phase says
    /// itself whether there is one: it passes without).
    pub(super) fn start(power: bool, heartbeat: bool) -> VerifyPhase {
        if power {
            VerifyPhase::Power
        } else if heartbeat {
            VerifyPhase::Heartbeat
        } else {
            VerifyPhase::Check
        }
    }
}

/// One observation for the phase verification is in.
#[derive(Debug)]
pub(super) enum VerifySeen {
    Power(Result<PowerState, ExecError>),
    /// The node's latest heartbeat since the power step, if any.
    Heartbeat(Option<Beat>),
    /// The node check's verdict.
    Check(CheckOutcome),
    /// A new incident on the node since the power step (not the one that
    /// asked for this plan).
    NewIncident(Option<String>),
    /// No executor for this phase: it passes.
    Nothing,
}

/// Verification's decision: moves `phase` on, or fails, or asks to look
/// again. `elapsed`: since verification began.
pub(super) fn verify_next(
    phase: &mut VerifyPhase,
    seen: VerifySeen,
    elapsed: Duration,
    t: &VerifyTimes,
    want: &VerifyWant<'_>,
) -> Decision<()> {
    let in_time = elapsed < t.timeout;
    let (node, since) = (want.node, want.since);
    // A heartbeat that counts fewer (or more) GPUs than the inventory: the
    // node is back without all of them.
    let gpus_wrong = |b: &Beat| match (b.gpu_count, want.gpus) {
        (Some(seen), Some(wanted)) if seen != wanted => Some((seen, wanted)),
        _ => None,
    };
    match (*phase, seen) {
        (VerifyPhase::Power, VerifySeen::Power(Ok(PowerState::On)) | VerifySeen::Nothing) => {
            *phase = VerifyPhase::Heartbeat;
            Decision::After(Duration::ZERO)
        }
        (VerifyPhase::Power, VerifySeen::Power(Ok(PowerState::Off) | Err(_))) if in_time => {
            Decision::After(t.poll)
        }
        (VerifyPhase::Power, VerifySeen::Power(Ok(PowerState::Off))) => {
            Decision::Failed("the bmc still reports power off".to_owned())
        }
        (VerifyPhase::Power, VerifySeen::Power(Err(e))) => Decision::Failed(e.to_string()),
        (VerifyPhase::Heartbeat, VerifySeen::Heartbeat(Some(b))) => match gpus_wrong(&b) {
            // The first heartbeats after a boot may come before the driver
            // has found every GPU: look again until the timeout.
            Some(_) if in_time => Decision::After(t.poll),
            Some((seen, wanted)) => Decision::Failed(format!(
                "{node} is back with {seen} GPUs, the inventory says {wanted}"
            )),
            None => {
                *phase = VerifyPhase::Check;
                Decision::After(Duration::ZERO)
            }
        },
        (VerifyPhase::Heartbeat, VerifySeen::Nothing) => {
            *phase = VerifyPhase::Check;
            Decision::After(Duration::ZERO)
        }
        (VerifyPhase::Heartbeat, VerifySeen::Heartbeat(None)) if in_time => Decision::After(t.poll),
        (VerifyPhase::Heartbeat, VerifySeen::Heartbeat(None)) => Decision::Failed(format!(
            "no heartbeat from {node} since {since} within {} s",
            t.timeout.as_secs()
        )),
        (VerifyPhase::Check, VerifySeen::Check(c)) if !c.passed => {
            Decision::Failed(format!("node check failed: {}", c.output))
        }
        (VerifyPhase::Check, VerifySeen::Check(_) | VerifySeen::Nothing) => {
            *phase = VerifyPhase::Quiet { from: elapsed };
            Decision::After(Duration::ZERO)
        }
        (VerifyPhase::Quiet { .. }, VerifySeen::NewIncident(Some(id))) => {
            Decision::Failed(format!("new fault during verification: {id}"))
        }
        (VerifyPhase::Quiet { from }, _) => {
            let until = from + t.quiet;
            if elapsed >= until {
                Decision::Done(())
            } else {
                Decision::After(t.poll.min(until - elapsed))
            }
        }
        // An observation for another phase than the one it is in: look again.
        (_, _) => Decision::After(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: VerifyTimes = VerifyTimes {
        timeout: Duration::from_secs(900),
        quiet: Duration::from_secs(120),
        poll: Duration::from_secs(5),
    };

    fn since() -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn want(gpus: Option<u32>) -> VerifyWant<'static> {
        VerifyWant {
            node: "n1",
            since: since(),
            gpus,
        }
    }

    #[test]
    fn verification_goes_power_then_heartbeat_then_quiet() {
        let mut p = VerifyPhase::start(true, true);
        let d = verify_next(
            &mut p,
            VerifySeen::Power(Ok(PowerState::Off)),
            secs(1),
            &TIMES,
            &want(None),
        );
        assert_eq!(d, Decision::After(secs(5)));
        let d = verify_next(
            &mut p,
            VerifySeen::Power(Ok(PowerState::On)),
            secs(6),
            &TIMES,
            &want(None),
        );
        assert_eq!(
            (d, p),
            (Decision::After(Duration::ZERO), VerifyPhase::Heartbeat)
        );
        let d = verify_next(
            &mut p,
            VerifySeen::Heartbeat(None),
            secs(6),
            &TIMES,
            &want(None),
        );
        assert_eq!(d, Decision::After(secs(5)));
        let d = verify_next(
            &mut p,
            VerifySeen::Heartbeat(Some(Beat::default())),
            secs(40),
            &TIMES,
            &want(None),
        );
        assert_eq!(
            (d, p),
            (Decision::After(Duration::ZERO), VerifyPhase::Check)
        );
        // No check configured: it passes at once.
        let d = verify_next(&mut p, VerifySeen::Nothing, secs(40), &TIMES, &want(None));
        assert_eq!(d, Decision::After(Duration::ZERO));
        assert_eq!(p, VerifyPhase::Quiet { from: secs(40) });
        let d = verify_next(
            &mut p,
            VerifySeen::NewIncident(None),
            secs(157),
            &TIMES,
            &want(None),
        );
        assert_eq!(
            d,
            Decision::After(secs(3)),
            "the last wait ends at the quiet time"
        );
        let d = verify_next(
            &mut p,
            VerifySeen::NewIncident(None),
            secs(160),
            &TIMES,
            &want(None),
        );
        assert_eq!(d, Decision::Done(()));
    }

    #[test]
    fn verification_fails_on_timeout_or_a_new_fault() {
        let mut p = VerifyPhase::Power;
        let d = verify_next(
            &mut p,
            VerifySeen::Power(Ok(PowerState::Off)),
            secs(900),
            &TIMES,
            &want(None),
        );
        assert_eq!(
            d,
            Decision::Failed("the bmc still reports power off".into())
        );
        let mut p = VerifyPhase::Heartbeat;
        let Decision::Failed(why) = verify_next(
            &mut p,
            VerifySeen::Heartbeat(None),
            secs(901),
            &TIMES,
            &want(None),
        ) else {
            panic!("a missing heartbeat past the timeout fails")
        };
        assert!(why.starts_with("no heartbeat from n1 since"), "{why}");
        let mut p = VerifyPhase::Quiet { from: secs(10) };
        let d = verify_next(
            &mut p,
            VerifySeen::NewIncident(Some("inc-2".into())),
            secs(20),
            &TIMES,
            &want(None),
        );
        assert_eq!(
            d,
            Decision::Failed("new fault during verification: inc-2".into())
        );
        // Without power or heartbeat executors, verification starts at the
        // check (which passes where none is configured).
        assert_eq!(VerifyPhase::start(false, false), VerifyPhase::Check);
    }

    #[test]
    fn a_node_back_without_all_its_gpus_fails_verification() {
        let beat = |n| VerifySeen::Heartbeat(Some(Beat { gpu_count: Some(n) }));
        let mut p = VerifyPhase::Heartbeat;
        // Early heartbeats may count fewer: look again while in time.
        let d = verify_next(&mut p, beat(7), secs(30), &TIMES, &want(Some(8)));
        assert_eq!((d, p), (Decision::After(secs(5)), VerifyPhase::Heartbeat));
        let Decision::Failed(why) = verify_next(&mut p, beat(7), secs(900), &TIMES, &want(Some(8)))
        else {
            panic!("a node with 7 of 8 GPUs passed");
        };
        assert_eq!(why, "n1 is back with 7 GPUs, the inventory says 8");
        // The right count, or a count nobody states, passes.
        let d = verify_next(&mut p, beat(8), secs(40), &TIMES, &want(Some(8)));
        assert_eq!(
            (d, p),
            (Decision::After(Duration::ZERO), VerifyPhase::Check)
        );
        let mut p = VerifyPhase::Heartbeat;
        verify_next(&mut p, beat(4), secs(40), &TIMES, &want(None));
        assert_eq!(p, VerifyPhase::Check);
    }

    #[test]
    fn a_failed_node_check_fails_verification_with_its_output() {
        let check = |passed| {
            VerifySeen::Check(CheckOutcome {
                passed,
                output: "GPU 3: memory test FAIL".into(),
            })
        };
        let mut p = VerifyPhase::Check;
        assert_eq!(
            verify_next(&mut p, check(false), secs(50), &TIMES, &want(None)),
            Decision::Failed("node check failed: GPU 3: memory test FAIL".into())
        );
        assert_eq!(
            p,
            VerifyPhase::Check,
            "a failed check does not go on to quiet"
        );
        let d = verify_next(&mut p, check(true), secs(50), &TIMES, &want(None));
        assert_eq!(d, Decision::After(Duration::ZERO));
        assert_eq!(p, VerifyPhase::Quiet { from: secs(50) });
    }

    #[test]
    fn a_drain_goes_on_once_its_evicted_pods_are_gone_and_not_before() {
        use crate::exec::PodLeft;
        let now = since().add_nanos(60_000_000_000);
        let t = |waited| PodsGoneTimes {
            waited: secs(waited),
            deadline: secs(600),
            margin: secs(30),
            poll: secs(1),
        };
        let pod = |grace_ends: Option<Timestamp>| PodLeft {
            name: "ml/train-0".into(),
            grace_ends,
        };
        let left = |pods: Vec<PodLeft>, node_ready| PodsLeft { node_ready, pods };
        assert_eq!(
            pods_gone(&left(vec![], true), now, &t(4)),
            Decision::Done("gone after 4.0 s".into())
        );
        // Terminating within its grace period (plus the margin): wait.
        let checkpointing = left(vec![pod(Some(now.add_nanos(-10_000_000_000)))], true);
        assert_eq!(
            pods_gone(&checkpointing, now, &t(50)),
            Decision::After(secs(1))
        );
        let not_yet_terminating = left(vec![pod(None)], true);
        assert_eq!(
            pods_gone(&not_yet_terminating, now, &t(598)),
            Decision::After(secs(1))
        );
        // Stuck past its grace period and the margin: fail, naming it.
        let stuck = left(vec![pod(Some(now.add_nanos(-31_000_000_000)))], true);
        assert_eq!(
            pods_gone(&stuck, now, &t(61)),
            Decision::Failed(
                "pod ml/train-0 still terminating 31 s after its grace period ended (1 left)"
                    .into()
            )
        );
        // Any pod left at the drain's deadline.
        let Decision::Failed(why) = pods_gone(&not_yet_terminating, now, &t(600)) else {
            panic!("the deadline fails the drain")
        };
        assert!(
            why.starts_with("1 pods still on the node 600 s after their eviction: ml/train-0"),
            "{why}"
        );
        // A node whose kubelet is not Ready runs nothing to wait for.
        let Decision::Done(note) = pods_gone(&left(vec![pod(None)], false), now, &t(1)) else {
            panic!("a not-ready node's pods are not waited for")
        };
        assert!(note.contains("not ready"), "{note}");
    }

    #[test]
    fn a_job_boundary_comes_with_the_jobs_end_a_restart_or_the_deadline() {
        let jobs = vec!["101".to_owned()];
        let deadline = secs(3600);
        let seen = |jobs: &'static [String], waited| BoundarySeen {
            jobs,
            restart: None,
            saved: &[],
            waited,
        };
        assert_eq!(
            boundary(&seen(&[], secs(7)), deadline, secs(5)),
            Decision::Done("job boundary after 7 s".into())
        );
        let running = BoundarySeen {
            jobs: &jobs,
            restart: None,
            saved: &[],
            waited: secs(3598),
        };
        assert_eq!(
            boundary(&running, deadline, secs(5)),
            Decision::After(secs(2))
        );
        let late = BoundarySeen {
            jobs: &jobs,
            restart: None,
            saved: &[],
            waited: deadline,
        };
        assert_eq!(
            boundary(&late, deadline, secs(5)),
            Decision::Done("job boundary not reached in 3600 s: requeueing [101]".into())
        );
    }
}
