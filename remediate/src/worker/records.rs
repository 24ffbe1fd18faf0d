//! Writing the audit and the state: every decision audited with its causal
//! chain; state records written and acknowledged before what depends on them.

use super::*;

impl Worker {
    pub(super) fn spawn_run(&self, target: Target) {
        let me = self.clone();
        tokio::spawn(async move {
            me.run(target).await;
        });
    }

    pub(super) async fn audit(
        &self,
        target: &Target,
        req: Option<&ActionRequest>,
        entry: AuditEntry,
    ) {
        self.audit_with(target, req, entry, false).await;
    }

    pub(super) async fn audit_with(
        &self,
        target: &Target,
        req: Option<&ActionRequest>,
        entry: AuditEntry,
        durable: bool,
    ) {
        let at = self.now();
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
        self.show_on_node(&record);
        let written = if durable {
            self.inner.journal.audit_durable(record).await
        } else {
            self.inner.journal.audit(record).await
        };
        if let Err(e) = written {
            self.inner.metrics.emit(JournalWriteFailed {
                record: "audit",
                target,
                error: &e,
            });
        }
    }

    /// A node's audit record as an Event on its Kubernetes Node, sent on
    /// the side: a slow or failing API server delays no step (a failure
    /// is logged).
    fn show_on_node(&self, record: &AuditRecord) {
        let Some(cluster) = self.inner.exec.cluster.clone() else {
            return;
        };
        if record.target.kind != TargetKind::Node {
            return;
        }
        let Some(event) = node_event(record) else {
            return;
        };
        let (node, _) = self.node_names(&record.target);
        tokio::spawn(async move {
            if let Err(e) = cluster.event(&node, &event).await {
                tracing::warn!(node = %node, reason = %event.reason, error = %e, "node event not recorded");
            }
        });
    }

    pub(super) async fn write_state(&self, st: RemediationState) -> bool {
        let target = st.target.clone();
        match self.inner.journal.state(st).await {
            Ok(()) => true,
            Err(e) => {
                self.inner.metrics.emit(JournalWriteFailed {
                    record: "state",
                    target: &target,
                    error: &e,
                });
                false
            }
        }
    }

    /// Applies `f` to the target's state and writes it; returns the copy
    /// written and whether it is durable.
    pub(super) async fn update(
        &self,
        target: &Target,
        f: impl FnOnce(&mut RemediationState),
    ) -> (RemediationState, bool) {
        let st = {
            let mut slots = lock(&self.inner.slots);
            let Some(slot) = slots.get_mut(target) else {
                return (RemediationState::healthy(target.clone(), self.now()), false);
            };
            f(&mut slot.state);
            slot.state.updated_at = self.now();
            slot.state.clone()
        };
        let ok = self.write_state(st.clone()).await;
        (st, ok)
    }

    pub(super) fn snapshot(&self, target: &Target) -> Option<RemediationState> {
        lock(&self.inner.slots).get(target).map(|s| s.state.clone())
    }
}

/// The Event a node's audit record shows on the Node: its steps (started,
/// done, failed, already so, described in a dry run) and decisions
/// (refused, waiting for approval, approved, escalated, returned); not the
/// bookkeeping (received, allowed, intent, pages). Reasons are CamelCase,
/// the note names the action and incident.
pub(super) fn node_event(r: &AuditRecord) -> Option<NodeEvent> {
    use crate::exec::kube::camel;
    let (reason, note, action, warning) = match &r.entry {
        AuditEntry::StepStarted { step } => (
            format!("{}Started", camel(step)),
            format!("{step} started"),
            step.clone(),
            false,
        ),
        AuditEntry::StepSucceeded { step, detail } => (
            format!("{}Succeeded", camel(step)),
            match detail {
                Some(d) => format!("{step}: {d}"),
                None => format!("{step} done"),
            },
            step.clone(),
            false,
        ),
        AuditEntry::StepFailed { step, error, .. } => (
            format!("{}Failed", camel(step)),
            format!("{step} failed: {error}"),
            step.clone(),
            true,
        ),
        AuditEntry::AlreadyDone { step } => (
            format!("{}AlreadyDone", camel(step)),
            format!("{step}: already so, nothing done"),
            step.clone(),
            false,
        ),
        AuditEntry::DryRun { step } => (
            format!("{}DryRun", camel(step)),
            format!("{step} would run (dry run)"),
            step.clone(),
            false,
        ),
        AuditEntry::Refused { step, reason } => (
            "Refused".to_owned(),
            format!("{step} refused: {reason}"),
            step.clone(),
            true,
        ),
        AuditEntry::AwaitingApproval { expires_at } => (
            "AwaitingApproval".to_owned(),
            format!("waiting for approval until {expires_at}"),
            "approval".to_owned(),
            false,
        ),
        AuditEntry::Approved { by } => (
            "Approved".to_owned(),
            format!("approved by {by}"),
            "approval".to_owned(),
            false,
        ),
        AuditEntry::Escalated { to, reason } => (
            "Escalated".to_owned(),
            format!("handed to {to}: {reason}"),
            "escalate".to_owned(),
            true,
        ),
        AuditEntry::Returned => (
            "Returned".to_owned(),
            "returned to service".to_owned(),
            "uncordon".to_owned(),
            false,
        ),
        AuditEntry::Received
        | AuditEntry::Duplicate
        | AuditEntry::Allowed { .. }
        | AuditEntry::Intent { .. }
        | AuditEntry::Paged { .. }
        | AuditEntry::BreakerOpened { .. }
        | AuditEntry::BreakerReset { .. } => return None,
    };
    let mut note = note;
    if let Some(a) = &r.action {
        note.push_str(&format!(" (action {a}"));
        if let Some(i) = &r.incident {
            note.push_str(&format!(", incident {i}"));
        }
        note.push(')');
    }
    Some(NodeEvent {
        reason,
        note,
        action,
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_decisions_become_node_events_and_bookkeeping_does_not() {
        let mut r = pitcrew_contract::examples::audit();
        r.entry = AuditEntry::StepSucceeded {
            step: "power_cycle".into(),
            detail: Some("cycle".into()),
        };
        let e = node_event(&r).unwrap();
        assert_eq!(e.reason, "PowerCycleSucceeded");
        assert_eq!(e.action, "power_cycle");
        assert!(!e.warning);
        assert!(
            e.note.starts_with("power_cycle: cycle (action act-")
                && e.note.contains("incident inc-"),
            "{}",
            e.note
        );
        r.entry = AuditEntry::Refused {
            step: "power_cycle".into(),
            reason: "rack budget".into(),
        };
        let e = node_event(&r).unwrap();
        assert_eq!((e.reason.as_str(), e.warning), ("Refused", true));
        r.entry = AuditEntry::Intent {
            step: "power_cycle".into(),
        };
        assert!(node_event(&r).is_none(), "an intent is bookkeeping");
    }

    #[test]
    fn a_rule_name_is_a_condition_reason_and_a_taint_value() {
        use crate::exec::kube::{camel, taint_value};
        assert_eq!(camel("gpu-fallen-off-bus"), "GpuFallenOffBus");
        assert_eq!(camel("xid-154-node-reboot"), "Xid154NodeReboot");
        assert_eq!(taint_value("gpu-fallen-off-bus"), "gpu-fallen-off-bus");
        assert_eq!(taint_value("-odd rule/name!"), "odd-rule-name");
        assert_eq!(taint_value(&"x".repeat(100)).len(), 63);
    }
}
