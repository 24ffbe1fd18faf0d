//! Errors of the Kafka plumbing. Whether an error is worth retrying is part
//! of the type: [`BusError::is_retryable`].

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// An error from the Kafka plumbing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration is wrong; retrying will not help. Values of
    /// settings are never included (they may be secrets).
    #[error("kafka config: {0}")]
    Config(String),
    /// A secret (SASL password, key password) could not be read.
    #[error("kafka secret `{}`: {}", .0.name, .0.reason)]
    Secret(#[from] pitcrew_config::SecretError),
    /// The broker did not take a message.
    #[error("produce to `{topic}` failed: {code}")]
    Produce {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// A consumer-side failure (poll, commit, seek, offsets).
    #[error("consume: {0}")]
    Consume(String, Option<RDKafkaErrorCode>),
    /// A transaction could not be completed; it was aborted, its output is
    /// invisible and its input offsets are not committed.
    #[error("transaction aborted: {reason}")]
    TransactionAborted { reason: String, retryable: bool },
    /// The transactional producer is fenced or hit a fatal error: it must
    /// be recreated.
    #[error("transactional producer unusable: {0}")]
    TransactionFatal(String),
    /// Topic administration failed.
    #[error("topic `{topic}`: {reason}")]
    Topic { topic: String, reason: String },
    /// The client was shut down while an operation was pending.
    #[error("kafka client closed")]
    Closed,
}

impl BusError {
    /// Worth trying again (broker down, timeouts, leader moves, full queue).
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Produce { code, .. } => code_is_retryable(*code),
            BusError::Consume(_, code) => code.is_some_and(code_is_retryable),
            BusError::TransactionAborted { retryable, .. } => *retryable,
            BusError::Config(_)
            | BusError::Secret(_)
            | BusError::TransactionFatal(_)
            | BusError::Topic { .. }
            | BusError::Closed => false,
        }
    }

    pub(crate) fn consume(what: &str, e: &KafkaError) -> BusError {
        BusError::Consume(format!("{what}: {e}"), e.rdkafka_error_code())
    }

    /// Builds a config error from a client-creation failure without the
    /// setting's value (rdkafka's own message includes it).
    pub(crate) fn from_client_creation(e: KafkaError) -> BusError {
        match e {
            KafkaError::ClientConfig(_, desc, key, _value) => {
                BusError::Config(format!("setting `{key}`: {desc}"))
            }
            other => BusError::Config(other.to_string()),
        }
    }
}

/// librdkafka error codes that are transient.
pub fn code_is_retryable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::QueueFull
            | C::MessageTimedOut
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::UnknownTopicOrPartition
            | C::Retry
    )
}
