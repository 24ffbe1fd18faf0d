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
