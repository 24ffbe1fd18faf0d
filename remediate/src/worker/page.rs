//! Paging: what a plan's page says, escalations to people, the grouped page
//! when the breaker latches, and resolving pages.

use super::*;

impl Worker {
    pub(super) fn page_for(
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
            started_at: self.now(),
            details,
        }
    }

    pub(super) async fn escalate(&self, target: &Target, req: &ActionRequest, why: &str) {
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
    pub(super) async fn breaker_opened(&self, b: BreakerState, req: Option<&ActionRequest>) {
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
        let mut st = RemediationState::healthy(target.clone(), self.now());
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

    pub(super) async fn resolve_page(&self, target: &Target, p: &OpenPage) {
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
