//! A target's runs: each plan run (driven by [`super::reconcile`]) and how
//! it ended folded into the state, then the next queued request; and the
//! pieces a pass calls: the governor's gate, the intent, a step's record,
//! the plan's failure handling.

use super::*;

impl Worker {
    pub(super) async fn run(&self, target: Target) {
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
    pub(super) async fn finish(&self, target: &Target, req: &ActionRequest, end: End) -> bool {
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
                start(st, &next, inner.cfg.handled_cap, inner.cfg.clock.now());
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
                let took = (self.now().unix_nanos() - req.requested_at.unix_nanos()).max(0);
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

    /// Asks the governor for a destructive step: on a refusal, the refusal
    /// is audited and counted and the run ends (escalated when the target
    /// keeps failing or is already out); on the plan's first destructive
    /// step, the attempt and the cooldown are recorded.
    pub(super) async fn gate(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        step: &Step,
        st: &RemediationState,
        plan_start: bool,
    ) -> Result<(), End> {
        let inner = &self.inner;
        let name = step.kind.as_str();
        let verdict = {
            let snap = self.snapshot(target).unwrap_or_else(|| st.clone());
            let ask = Ask {
                target,
                step: step.kind,
                plan_start,
                attempts: &snap.attempts,
                cooldown_until: snap.cooldown_until,
                hands_off: plan.hands_to_people(),
            };
            lock(&inner.governor).check(&ask, self.now())
        };
        match verdict {
            Verdict::Allow => {
                self.audit(target, Some(req), AuditEntry::Allowed { step: name.into() })
                    .await;
                if plan_start {
                    let cooldown = lock(&inner.governor).config().cooldown;
                    let now = self.now();
                    self.update(target, |s| state::note_attempt(s, now, cooldown))
                        .await;
                }
                Ok(())
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
                    // A target that keeps failing, or one pitcrew already
                    // took out and cannot finish: people.
                    self.escalate(target, req, &format!("{name} refused: {}", refusal.message))
                        .await;
                    return Err(End::Escalated);
                }
                Err(End::RefusedAtStart)
            }
        }
    }

    /// Writes and acknowledges the intent before an irreversible step; a
    /// run that cannot make it durable does not take the step.
    pub(super) async fn write_intent(
        &self,
        target: &Target,
        req: &ActionRequest,
        plan: &Plan,
        name: &str,
    ) -> Result<(), End> {
        self.audit_with(
            target,
            Some(req),
            AuditEntry::Intent { step: name.into() },
            true,
        )
        .await;
        let intent = Intent {
            step: name.into(),
            action: req.id.clone(),
            written_at: self.now(),
        };
        let (_, durable) = self.update(target, |s| s.intent = Some(intent)).await;
        if durable {
            return Ok(());
        }
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
        Err(self
            .on_failure(target, req, plan, "intent not durable")
            .await)
    }

    /// A step succeeded (or was already done): counted, audited with any
    /// pages it sent, and folded into the state (`next` is the step to run
    /// next).
    pub(super) async fn record_done(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
        done: Done,
        next: usize,
    ) {
        let name = step.kind.as_str();
        self.inner.metrics.step(
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
        self.update(target, |s| state::step_done(s, done, step.kind, next))
            .await;
    }

    pub(super) async fn on_failure(
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
}
