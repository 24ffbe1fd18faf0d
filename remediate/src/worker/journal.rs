//! Where audit and state records go: the [`Journal`] trait (Kafka in the
//! service, memory in tests and the demo) and the timeline words of
//! [`describe`].

use super::*;

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
