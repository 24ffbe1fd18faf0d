//! pitcrew's Kafka plumbing (rdkafka).
//!
//! - [`Producer`]: idempotent, `acks=all`, keyed, bounded in flight;
//!   delivery failures are returned, never swallowed. [`BatchProducer`]:
//!   the same guarantees a batch at a time, without a polling thread.
//! - [`Consumer`] and [`run_consumer`] (and [`run_decoded`]): the one
//!   at-least-once loop every such stage runs; an offset is
//!   committed only after its message was processed or dead-lettered.
//! - [`TransactionalStage`]: consume-transform-produce with the outputs and
//!   the input offsets in one Kafka transaction.
//! - [`DeadLetterWriter`]: original bytes, source topic/partition/offset
//!   and the reason, acknowledged before the original is marked processed.
//! - [`partition_of`]: the producers' partitioner, for stages that place
//!   keys without a message in hand.
//! - [`ensure_topics`]: creates pitcrew's topics from config (compaction
//!   for `pitcrew.state`) and reports existing ones that differ.
//! - [`BusConfig`]: TOML with `PITCREW__...` environment overrides; TLS and
//!   SASL settings passed through to librdkafka; secrets read from files or
//!   the environment and never logged.
//!
//! This crate knows the wire contract only to decode into it; it knows
//! nothing of rules, remediation or collectors.

mod batch;
mod config;
mod consumer;
mod dlq;
mod error;
mod metrics;
mod partition;
mod producer;
mod range;
mod ratelimit;
mod topics;
mod transaction;

pub use batch::BatchProducer;
pub use config::{
    BusConfig, ConsumerConfig, KafkaConfig, ProducerConfig, Secret, Security, TopicSpec,
    TopicsConfig, ENV_PREFIX,
};
pub use consumer::{run_consumer, run_decoded, Consumer, Delivery, Handler, Origin, ProcessError};
pub use dlq::{dead_letter_context, dead_letter_headers, DeadLetterWriter};
pub use error::{code_is_retryable, BusError};
pub use metrics::BusMetrics;
pub use partition::partition_of;
pub use producer::{Delivered, PendingDelivery, Producer};
pub use range::{read_partition_range, read_topic_merged};
pub use topics::{
    broker_count, cleanup_policy, ensure_topic_specs, ensure_topics, partition_count, TopicReport,
};
pub use transaction::{Output, Transaction, TransactionalStage};

/// rdkafka types callers need (messages, headers) without a direct dependency.
pub use rdkafka;
