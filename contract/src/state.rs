//! Remediation state per target: the value of the compacted `pitcrew.state`
//! topic, keyed by target. The latest record is the truth after a restart.

use serde::{Deserialize, Serialize};

use crate::{ActionRequest, Target, Timestamp, V1};

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
    /// The request being run, so a restart resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ActionRequest>,
    /// Requests that arrived while another ran on this target (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<ActionRequest>,
    /// When an approval the running request waits for expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<Timestamp>,
    /// Pages triggered and not yet resolved: a resolve is always sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_pages: Vec<OpenPage>,
    /// When the last power or GPU reset step finished: verification wants
    /// a heartbeat after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_since: Option<Timestamp>,
    /// Only on the `fleet/breaker` record: the latched circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
    pub updated_at: Timestamp,
}

/// A page that was triggered and must be resolved later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPage {
    pub dedup_key: String,
    pub receivers: Vec<String>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    pub opened_at: Timestamp,
}

/// The fleet's circuit breaker, latched open until a person resets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub open: bool,
    pub reason: String,
    pub opened_at: Timestamp,
}

impl RemediationState {
    /// A healthy target with no history.
    pub fn healthy(target: Target, at: Timestamp) -> RemediationState {
        RemediationState {
            v: V1,
            target,
            phase: Phase::Healthy,
            action: None,
            plan: None,
            step: 0,
            intent: None,
            owned: Owned::default(),
            attempts: Vec::new(),
            cooldown_until: None,
            handled: Vec::new(),
            request: None,
            queued: Vec::new(),
            approval_expires_at: None,
            open_pages: Vec::new(),
            verify_since: None,
            breaker: None,
            updated_at: at,
        }
    }
}

impl Owned {
    /// Whether pitcrew holds anything on the target (it is out of service
    /// because of pitcrew).
    pub fn any(&self) -> bool {
        self.k8s_cordon || self.k8s_taint || self.slurm_drain
    }
}
