//! Remediation state per target: the value of the compacted `pitcrew.state`
//! topic, keyed by target. The latest record is the truth after a restart.

use serde::{Deserialize, Serialize};

use crate::{Target, Timestamp, V1};

/// Where a target is in remediation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In service, nothing running.
    Healthy,
    /// A plan is running.
    InProgress,
    AwaitingApproval,
    /// Out of service, waiting for verification to pass.
    Verifying,
    /// Out of service and handed to people (RMA, page).
    Escalated,
    /// The plan failed and no fallback is left.
    Failed,
}

/// An irreversible step about to run. A restart that finds an intent
/// without an outcome observes the target instead of repeating the step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub step: String,
    pub action: String,
    pub written_at: Timestamp,
}

/// What pitcrew itself changed on the target, so it undoes only its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    #[serde(default)]
    pub k8s_cordon: bool,
    #[serde(default)]
    pub k8s_taint: bool,
    #[serde(default)]
    pub slurm_drain: bool,
}

/// The state record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemediationState {
    pub v: V1,
    pub target: Target,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Index of the next step to run in the plan.
    #[serde(default)]
    pub step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    #[serde(default)]
    pub owned: Owned,
    /// When destructive attempts started, for the attempt budget (bounded).
    #[serde(default)]
    pub attempts: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<Timestamp>,
    /// Action ids already handled (bounded), for exactly-once in effect.
    #[serde(default)]
    pub handled: Vec<String>,
    pub updated_at: Timestamp,
}
