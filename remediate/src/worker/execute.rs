//! One attempt at a step against the executors, observing before acting;
//! whether a failure is tried again is [`retry_after`]'s decision, taken by
//! the reconcile pass.

use super::*;

impl Worker {
    pub(super) fn node_names(&self, target: &Target) -> (String, String) {
        let info = self.inner.inventory.get(&target.name);
        let k8s = info
            .and_then(|n| n.k8s_node.clone())
            .unwrap_or_else(|| target.name.clone());
        let slurm = info
            .and_then(|n| n.slurm_node.clone())
            .unwrap_or_else(|| target.name.clone());
        (k8s, slurm)
    }

    /// One attempt (or, for a step that waits, one observation).
    pub(super) async fn execute(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
        st: &RemediationState,
        wait: &mut WaitProgress,
        resuming: bool,
    ) -> Result<Stepped<Done>, ExecError> {
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
        let done = match step.kind {
            StepKind::Cordon => self.cordon(req, st, &k8s, &slurm).await,
            StepKind::Drain | StepKind::RequeueJobs => {
                return self.drain(target, req, step, &k8s, &slurm, wait).await;
            }
            StepKind::ResetGpu => self.reset_gpu(req, node, resuming).await,
            StepKind::PowerCycle | StepKind::PowerOff | StepKind::PowerOn => {
                self.power(step, st, node, resuming).await
            }
            StepKind::Verify => {
                return Ok(match self.verify(target, req, step, st, wait).await? {
                    Stepped::Done(detail) => Stepped::Done(Done {
                        detail,
                        ..Done::default()
                    }),
                    Stepped::Again(after) => Stepped::Again(after),
                });
            }
            StepKind::Uncordon => self.uncordon(st, &k8s, &slurm).await,
            StepKind::Page | StepKind::Notify | StepKind::Rma | StepKind::Escalate => {
                self.page_step(target, req, step).await
            }
        };
        done.map(Stepped::Done)
    }

    /// Cordon (and taint) in Kubernetes and drain in Slurm: what was
    /// already so is not claimed as pitcrew's.
    async fn cordon(
        &self,
        req: &ActionRequest,
        st: &RemediationState,
        k8s: &str,
        slurm: &str,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
        if exec.cluster.is_none() && exec.scheduler.is_none() {
            return Err(ExecError::NotConfigured {
                system: "kubernetes or slurm",
            });
        }
        let mut notes = Vec::new();
        // Already done only if every system already was as wanted.
        done.already = true;
        if let Some(c) = &exec.cluster {
            // The taint's value says why in a word: the rule.
            let why = crate::exec::kube::taint_value(req.rule.as_deref().unwrap_or("remediation"));
            let r = c.cordon(k8s, &why).await?;
            let mark = NodeMark {
                rule: req.rule.clone(),
                incident: req.incident.clone(),
                action: req.id.clone(),
                summary: req.reason.clone(),
            };
            if let Err(e) = c.mark(k8s, Some(&mark)).await {
                tracing::warn!(node = k8s, error = %e, "node condition not set");
            }
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
            let r = s.drain(slurm, &reason).await?;
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
        Ok(done)
    }

    /// Evict the node's pods and requeue its jobs (a deferred drain waits
    /// for the job boundary first); `requeue_jobs` does it for one job.
    async fn drain(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
        k8s: &str,
        slurm: &str,
        wait: &mut WaitProgress,
    ) -> Result<Stepped<Done>, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
        let job = if step.kind == StepKind::RequeueJobs {
            param_str(req, "job")
        } else {
            None
        };
        let mut notes = Vec::new();
        if step.kind == StepKind::Drain && deferred(req) {
            if wait.boundary.is_none() {
                match self.job_boundary(target, req, k8s, slurm, wait).await? {
                    Stepped::Done(note) => wait.boundary = Some(note),
                    Stepped::Again(after) => return Ok(Stepped::Again(after)),
                }
            }
            notes.extend(wait.boundary.clone());
        }
        if let Some(c) = &exec.cluster {
            let deadline = step.timeout.unwrap_or(self.inner.cfg.drain_deadline);
            let (n, at) = match wait.evicted {
                Some(e) => e,
                None => {
                    // What the eviction does to each training job, said
                    // before it is done (an indexed Job's index comes
                    // back; a FailJob policy ends the whole Job).
                    let only = job.as_deref().map(|j| format!("/{j}"));
                    wait.eviction_notes = c
                        .jobs_on(k8s)
                        .await?
                        .into_iter()
                        .filter(|j| only.as_ref().is_none_or(|o| j.job.ends_with(o.as_str())))
                        .map(|j| {
                            let effect = j.eviction.map(|e| format!(": {e}")).unwrap_or_default();
                            format!("{} ({} pods){effect}", j.job, j.pods)
                        })
                        .collect();
                    let n = c.evict(k8s, job.as_deref(), deadline).await?;
                    *wait.evicted.insert((n, Instant::now()))
                }
            };
            // The evicted pods write their checkpoints in their grace
            // period: nothing further happens to the node before they are
            // gone ([`pods_gone`] decides).
            let left = c.pods_left(k8s, job.as_deref()).await?;
            let cfg = &self.inner.cfg;
            let gone = pods_gone(
                &left,
                self.now(),
                &PodsGoneTimes {
                    waited: at.elapsed(),
                    deadline,
                    margin: cfg.pods_gone_margin,
                    poll: cfg.verify_poll.min(Duration::from_secs(1)),
                },
            );
            let note = match gone {
                Decision::Done(note) => note,
                Decision::After(after) => return Ok(Stepped::Again(after)),
                Decision::Failed(why) if cfg.stuck_pods == StuckPods::Proceed => {
                    format!("{why}; going on (stuck_pods = proceed)")
                }
                Decision::Failed(why) => return Err(ExecError::permanent("kubernetes", why)),
            };
            notes.push(format!("kubernetes: {n} pods evicted, {note}"));
            notes.extend(wait.eviction_notes.iter().cloned());
        }
        if let Some(s) = &exec.scheduler {
            let jobs = s.requeue(slurm, job.as_deref()).await?;
            notes.push(format!("slurm: requeued [{}]", jobs.join(",")));
        }
        if notes.is_empty() {
            return Err(ExecError::NotConfigured {
                system: "kubernetes or slurm",
            });
        }
        done.detail = notes.join("; ");
        Ok(Stepped::Done(done))
    }

    /// Reset the GPU (or all of them); after a restart with an intent, not
    /// again.
    async fn reset_gpu(
        &self,
        req: &ActionRequest,
        node: &str,
        resuming: bool,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
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
            done.detail = format!("gpu {} reset", gpu_of(req).unwrap_or_else(|| "all".into()));
        }
        done.verify_since = Some(self.now());
        Ok(done)
    }

    /// Power off, on or cycle through the BMC, observing first: what the
    /// BMC already reports is not done again ([`power_op`] decides).
    async fn power(
        &self,
        step: &Step,
        st: &RemediationState,
        node: &str,
        resuming: bool,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
        let Some(p) = &exec.power else {
            return Err(ExecError::NotConfigured { system: "ipmi" });
        };
        let observed = p.status(node).await?;
        let resumed = resuming;
        let op = power_op(step.kind, observed, resumed);
        match op {
            None => {
                done.already = true;
                done.detail = if resumed {
                    "intent found after restart and the bmc reports power on: not cycling again"
                        .into()
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
                .map_or_else(|| self.now(), |i| i.written_at),
        );
        Ok(done)
    }

    /// Undo what pitcrew did, only that.
    async fn uncordon(
        &self,
        st: &RemediationState,
        k8s: &str,
        slurm: &str,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
        let mut notes = Vec::new();
        if let Some(c) = &exec.cluster {
            if st.owned.k8s_cordon || st.owned.k8s_taint {
                c.uncordon(k8s, st.owned.k8s_cordon, st.owned.k8s_taint)
                    .await?;
                if let Err(e) = c.mark(k8s, None).await {
                    tracing::warn!(node = k8s, error = %e, "node condition not cleared");
                }
                notes.push("kubernetes: uncordoned");
            } else {
                notes.push("kubernetes: nothing of pitcrew's to undo");
            }
        }
        if let Some(s) = &exec.scheduler {
            if st.owned.slurm_drain {
                let resumed = s.resume(slurm).await?;
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
        Ok(done)
    }

    /// Page, notify, hand over for RMA or escalate, through the pagers.
    async fn page_step(
        &self,
        target: &Target,
        req: &ActionRequest,
        step: &Step,
    ) -> Result<Done, ExecError> {
        let exec = &self.inner.exec;
        let mut done = Done::default();
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
        let page = self.page_for(target, Some(req), key, summary, severity, incident.clone());
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
        Ok(done)
    }
}

/// A failed step's retry decision: a retryable failure with attempts left
/// is tried again after `base` doubled per attempt so far, at most a
/// minute; anything else stands (None).
pub(super) fn retry_after(
    retryable: bool,
    attempt: u32,
    retries: u32,
    base: Duration,
) -> Option<Duration> {
    if !retryable || attempt >= retries {
        return None;
    }
    let wait = base.saturating_mul(1u32 << attempt.min(16));
    Some(wait.min(Duration::from_secs(60)))
}

/// What a power step does given what the BMC reports: nothing when it is
/// already as wanted, `On` for a chassis that is off (it cannot be cycled),
/// and nothing after a restart that found the intent with the power on
/// (the cycle ran, or it is safe not to run it).
pub(super) fn power_op(kind: StepKind, observed: PowerState, resumed: bool) -> Option<PowerOp> {
    match (kind, observed) {
        (StepKind::PowerOff, PowerState::Off) | (StepKind::PowerOn, PowerState::On) => None,
        (StepKind::PowerOff, PowerState::On) => Some(PowerOp::Off),
        (StepKind::PowerOn, PowerState::Off) => Some(PowerOp::On),
        // A chassis that is off cannot be cycled: switch it on.
        (StepKind::PowerCycle, PowerState::Off) => Some(PowerOp::On),
        // An intent without an outcome and the power on: the
        // cycle ran (or it is safe not to run it): not again.
        (_, PowerState::On) if resumed => None,
        _ => Some(PowerOp::Cycle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retryable_failure_is_retried_with_a_doubling_wait_until_none_are_left() {
        let base = Duration::from_secs(1);
        assert_eq!(retry_after(true, 0, 3, base), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(true, 2, 3, base), Some(Duration::from_secs(4)));
        assert_eq!(retry_after(true, 3, 3, base), None);
        assert_eq!(retry_after(false, 0, 3, base), None);
        assert_eq!(
            retry_after(true, 10, 20, base),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_power_step_does_only_what_the_bmc_does_not_already_report() {
        use PowerState::{Off, On};
        assert_eq!(power_op(StepKind::PowerOff, Off, false), None);
        assert_eq!(power_op(StepKind::PowerOff, On, false), Some(PowerOp::Off));
        assert_eq!(power_op(StepKind::PowerOn, Off, false), Some(PowerOp::On));
        assert_eq!(
            power_op(StepKind::PowerCycle, Off, false),
            Some(PowerOp::On)
        );
        assert_eq!(
            power_op(StepKind::PowerCycle, On, false),
            Some(PowerOp::Cycle)
        );
        // Resumed with the intent and the power on: never a second cycle.
        assert_eq!(power_op(StepKind::PowerCycle, On, true), None);
    }
}
