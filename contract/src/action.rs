//! Action requests: what the rule engine writes to `pitcrew.actions`,
//! keyed by target.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{deterministic_id, Target, Timestamp, V1};

/// A request to run a remediation plan on a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub v: V1,
    /// Deterministic ([`ActionRequest::make_id`]): a redelivered or replayed
    /// request has the same id, so the remediation stage runs it once.
    pub id: String,
    pub incident: String,
    /// The rule whose incident asks for this (absent in requests made by
    /// hand or by an older rules stage). Shown on the node (its taint's
    /// value, a condition's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub target: Target,
    pub plan: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    pub requested_at: Timestamp,
    /// Why, in words (the incident's summary).
    pub reason: String,
    /// The events behind the incident, for the audit chain.
    #[serde(default)]
    pub events: Vec<String>,
    /// Ask the remediation stage to only say what it would do.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

impl ActionRequest {
    /// Id over incident, target and plan. `generation` distinguishes a
    /// deliberate second request for the same incident (an escalation).
    pub fn make_id(incident: &str, target: &Target, plan: &str, generation: u32) -> String {
        deterministic_id(
            "act",
            &[incident, &target.key(), plan, &generation.to_string()],
        )
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
