//! Which Kafka key each message type is written with: part of the contract
//! (docs/schema.md's topic table), because per-key ordering and compaction
//! depend on it.

use crate::{ActionRequest, AuditRecord, Event, Incident, RemediationState};

/// A message that knows its key on its topic.
pub trait Keyed {
    /// Events: the node. Incidents: the incident id. Actions, audit
    /// records and state: the target (`node/n17`).
    fn key(&self) -> String;
}

impl Keyed for Event {
    fn key(&self) -> String {
        self.node.clone()
    }
}

impl Keyed for Incident {
    fn key(&self) -> String {
        self.id.clone()
    }
}

impl Keyed for ActionRequest {
    fn key(&self) -> String {
        self.target.key()
    }
}

impl Keyed for AuditRecord {
    fn key(&self) -> String {
        self.target.key()
    }
}

impl Keyed for RemediationState {
    fn key(&self) -> String {
        self.target.key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;

    #[test]
    fn keys_follow_the_topic_table() {
        assert_eq!(examples::event(crate::EventKind::GpuXid).key(), "n17");
        let inc = examples::incident();
        assert_eq!(inc.key(), inc.id);
        assert_eq!(examples::action().key(), "node/n17");
        assert_eq!(examples::audit().key(), "node/n17");
        assert_eq!(examples::state().key(), "node/n17");
    }
}
