//! The bus's own metrics, registered into the process registry by the
//! binary. Labels are bounded: topic names come from config, reasons from
//! [`pitcrew_contract::DecodeError::reason_label`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

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

pub(crate) use pitcrew_observe::OutcomeLabel;

pitcrew_observe::metrics! {
    /// Counters and gauges of the Kafka plumbing. Cheap to clone (shared).
    pub struct BusMetrics in "pitcrew_bus" {
        produced: Family<TopicLabel, Counter> => "messages_produced", "Messages acknowledged by Kafka";
        produce_errors: Family<TopicLabel, Counter> => "produce_errors", "Messages Kafka did not take (delivery failures)";
        consumed: Family<TopicLabel, Counter> => "messages_consumed", "Messages received from Kafka";
        dead_letters: Family<DeadLetterLabels, Counter> => "dead_letters", "Messages written to the dead-letter topic, by reason";
        in_flight: Gauge => "in_flight_messages", "Messages enqueued and not yet acknowledged";
        consumer_lag: Family<PartitionLabels, Gauge> => "consumer_lag_messages", "Messages between the consumer's position and the partition's end";
        transactions: Family<OutcomeLabel, Counter> => "transactions", "Transactions by outcome (committed, aborted)";
    }
}

impl BusMetrics {
    pub(crate) fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_owned(),
        }
    }
}

/// A message was written to the dead-letter topic (acknowledged, or added
/// to the committing transaction).
#[derive(Debug)]
pub(crate) struct DeadLettered<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) reason: &'a str,
    /// The bounded label: a `DecodeError::reason_label` or `processing`.
    pub(crate) reason_kind: &'a str,
}

impl pitcrew_observe::InternalEvent<BusMetrics> for DeadLettered<'_> {
    fn emit(self, metrics: &BusMetrics) {
        tracing::warn!(
            source_topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            reason_kind = self.reason_kind,
            "message dead-lettered"
        );
        metrics
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                topic: self.topic.to_owned(),
                reason: self.reason_kind.to_owned(),
            })
            .inc();
    }
}
