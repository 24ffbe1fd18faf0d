//! Dead letters. A DLQ message keeps the ORIGINAL key and value bytes
//! untouched (they may not even be UTF-8) and carries the context in Kafka
//! headers, the convention Kafka Connect uses, so a fixed message can be
//! re-produced as it was.

/// Header names on a `pitcrew.dlq` message.
pub mod headers {
    /// Why it was dead-lettered, in words (a [`crate::DecodeError`] display).
    pub const REASON: &str = "pitcrew.dlq.reason";
    /// A bounded label (`syntax`, `missing_field`...), for metrics.
    pub const REASON_KIND: &str = "pitcrew.dlq.reason_kind";
    pub const TOPIC: &str = "pitcrew.dlq.topic";
    pub const PARTITION: &str = "pitcrew.dlq.partition";
    pub const OFFSET: &str = "pitcrew.dlq.offset";
    /// The stage that gave up on it.
    pub const STAGE: &str = "pitcrew.dlq.stage";
    /// RFC 3339 time it was dead-lettered.
    pub const AT: &str = "pitcrew.dlq.at";
}

/// Where a dead letter came from and why, as read back from headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterContext {
    pub reason: String,
    pub reason_kind: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub stage: String,
}
