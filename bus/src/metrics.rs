//! The bus's own metrics, registered into the process registry by the
//! binary. Labels are bounded: topic names come from config, reasons from
//! [`pitcrew_contract::DecodeError::reason_label`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub topic: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Counters and gauges of the Kafka plumbing. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct BusMetrics {
    pub produced: Family<TopicLabel, Counter>,
    pub produce_errors: Family<TopicLabel, Counter>,
    pub consumed: Family<TopicLabel, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub in_flight: Gauge,
    pub transactions: Family<OutcomeLabel, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
}

impl BusMetrics {
    /// Registers every metric under `pitcrew_bus_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pitcrew_bus");
        r.register(
            "messages_produced",
            "Messages acknowledged by Kafka",
            self.produced.clone(),
        );
        r.register(
            "produce_errors",
            "Messages Kafka did not take (delivery failures)",
            self.produce_errors.clone(),
        );
        r.register(
            "messages_consumed",
            "Messages received from Kafka",
            self.consumed.clone(),
        );
        r.register(
            "dead_letters",
            "Messages written to the dead-letter topic, by reason",
            self.dead_letters.clone(),
        );
        r.register(
            "in_flight_messages",
            "Messages enqueued and not yet acknowledged",
            self.in_flight.clone(),
        );
        r.register(
            "consumer_lag_messages",
            "Messages between the consumer's position and the partition's end",
            self.consumer_lag.clone(),
        );
        r.register(
            "transactions",
            "Transactions by outcome (committed, aborted)",
            self.transactions.clone(),
        );
    }

    pub(crate) fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_owned(),
        }
    }
}
