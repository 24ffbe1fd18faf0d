//! Incidents: what the rule engine writes to `pitcrew.alerts`, keyed by id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{deterministic_id, Target, Timestamp, V1};

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// First written.
    Open,
    /// Still firing; new evidence or a new count.
    Update,
    /// The condition cleared.
    Resolved,
    /// Claimed by a parent (common-cause) incident: members do not act.
    Suppressed,
}

/// How bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// The remediation plan an incident asks for, with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub plan: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// One incident message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub v: V1,
    /// Deterministic: [`Incident::make_id`] of rule, key and first event.
    pub id: String,
    pub status: IncidentStatus,
    pub rule: String,
    /// The rule's key values, e.g. `n17/3` for a `node,gpu` key.
    pub key: String,
    pub severity: Severity,
    /// What is blamed: a node, a GPU, a leaf switch, a driver version...
    pub blame: Target,
    pub summary: String,
    pub opened_at: Timestamp,
    /// Event time of this message (open, update or resolve).
    pub at: Timestamp,
    /// Ids of the events that caused it (bounded by the rule engine).
    pub events: Vec<String>,
    /// Number of matching events so far (may exceed `events.len()`).
    pub event_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRequest>,
    /// For `suppressed`: the parent incident that claimed this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Incident {
    pub fn make_id(rule: &str, key: &str, first_event_id: &str) -> String {
        deterministic_id("inc", &[rule, key, first_event_id])
    }
}
