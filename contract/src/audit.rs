//! Audit records: every decision and step outcome, refusals included,
//! written to `pitcrew.audit` keyed by target. The causal chain
//! (events -> incident -> action -> step) is carried in every record, so one
//! record explains itself.

use serde::{Deserialize, Serialize};

use crate::{Target, Timestamp, V1};

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum AuditEntry {
    /// An action request arrived.
    Received,
    /// A duplicate of an action already handled: ignored.
    Duplicate,
    /// The governor let a destructive step go ahead.
    Allowed {
        step: String,
    },
    /// The governor refused, and why (budget, cooldown, breaker...).
    Refused {
        step: String,
        reason: String,
    },
    /// Dry run: what would have been done.
    DryRun {
        step: String,
    },
    /// Waiting for a person to approve.
    AwaitingApproval {
        expires_at: Timestamp,
    },
    Approved {
        by: String,
    },
    /// Intent written before an irreversible step.
    Intent {
        step: String,
    },
    StepStarted {
        step: String,
    },
    StepSucceeded {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    StepFailed {
        step: String,
        error: String,
        retryable: bool,
    },
    /// The target already was in the wanted state: nothing done.
    AlreadyDone {
        step: String,
    },
    Escalated {
        to: String,
        reason: String,
    },
    Paged {
        receiver: String,
        dedup_key: String,
    },
    Returned,
    BreakerOpened {
        reason: String,
    },
    BreakerReset {
        by: String,
    },
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub v: V1,
    pub id: String,
    pub at: Timestamp,
    pub target: Target,
    /// The stage and instance that decided: `remediate@host-a`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(flatten)]
    pub entry: AuditEntry,
}
