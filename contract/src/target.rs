//! What an incident blames and an action acts on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of thing a target is. Nodes and GPUs are remediated; the
/// topology groups (rack, leaf switch, PDU, driver version, job) are blamed
/// by fan-in rules so their members are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Node,
    Gpu,
    Rack,
    LeafSwitch,
    Pdu,
    DriverVersion,
    Job,
    Link,
    /// The whole fleet: the record of fleet-wide state (the breaker).
    Fleet,
}

impl TargetKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetKind::Node => "node",
            TargetKind::Gpu => "gpu",
            TargetKind::Rack => "rack",
            TargetKind::LeafSwitch => "leaf_switch",
            TargetKind::Pdu => "pdu",
            TargetKind::DriverVersion => "driver_version",
            TargetKind::Job => "job",
            TargetKind::Link => "link",
            TargetKind::Fleet => "fleet",
        }
    }
}

/// A target: `{"kind":"node","name":"n17"}`. Its string form `node/n17`
/// is the Kafka key of actions, audit records and state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

impl Target {
    pub fn new(kind: TargetKind, name: impl Into<String>) -> Self {
        Target {
            kind,
            name: name.into(),
        }
    }

    pub fn node(name: impl Into<String>) -> Self {
        Target::new(TargetKind::Node, name)
    }

    /// The Kafka message key for this target.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}
