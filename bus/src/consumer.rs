//! The at-least-once consumer.
//!
//! Contract: an offset is committed only after the message at it was
//! processed. The consumer runs with `enable.auto.offset.store=false`;
//! [`Consumer::processed`] stores the offset once the handler is done, and
//! librdkafka commits stored offsets in the background (and
//! [`Consumer::commit`] does at shutdown). A process killed between
//! processing and storing gets the message again: handlers must be
//! idempotent, which the contract's deterministic ids make easy.
//!
//! [`run_consumer`] is the loop every at-least-once stage uses: it hands
//! each message to the handler as a [`Delivery`], whose
//! [`Delivery::decode`] honours the configured `max_message_bytes`;
//! retryable handler errors are retried, permanent ones and what does not
//! decode are dead-lettered (with the reason and the original headers, the
//! write itself retried), and only then is the offset stored.
//! [`run_decoded`] is the same loop for a stage that reads one type.

use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use serde::de::DeserializeOwned;

use crate::{BusError, BusMetrics, DeadLetterWriter, KafkaConfig};

/// A consumer in a group, committing only processed offsets.
pub struct Consumer {
    inner: StreamConsumer,
    metrics: BusMetrics,
    max_message_bytes: usize,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// Joins `group_id` and subscribes to `topics`.
    pub fn new(
        cfg: &KafkaConfig,
        group_id: &str,
        topics: &[&str],
        metrics: BusMetrics,
    ) -> Result<Consumer, BusError> {
        let mut c = cfg.group_consumer_config(group_id)?;
        // Commit in the background, but only offsets stored after processing.
        c.set("enable.auto.commit", "true").set(
            "auto.commit.interval.ms",
            cfg.consumer.commit_interval_ms.to_string(),
        );
        let inner: StreamConsumer = c.create().map_err(BusError::from_client_creation)?;
        inner
            .subscribe(topics)
            .map_err(|e| BusError::consume("subscribe", &e))?;
        Ok(Consumer {
            inner,
            metrics,
            max_message_bytes: cfg.max_message_bytes,
        })
    }

    /// The next message.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, BusError> {
        let msg = self
            .inner
            .recv()
            .await
            .map_err(|e| BusError::consume("receive", &e))?;
        self.metrics
            .consumed
            .get_or_create(&BusMetrics::topic(msg.topic()))
            .inc();
        Ok(msg)
    }

    /// Marks `msg` processed: its offset will be committed.
    pub fn processed(&self, msg: &BorrowedMessage<'_>) -> Result<(), BusError> {
        self.inner
            .store_offset_from_message(msg)
            .map_err(|e| BusError::consume("store offset", &e))
    }

    /// Commits every processed offset now, synchronously (at shutdown).
    pub fn commit(&self) -> Result<(), BusError> {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) =>
            {
                Ok(())
            }
            Err(e) => Err(BusError::consume("commit", &e)),
        }
    }

    /// Lag per assigned partition (messages between the position and the
    /// partition's end), also published as `pitcrew_bus_consumer_lag_messages`.
    /// Blocking (a metadata round trip per partition): call it from a
    /// periodic task, not per message.
    pub fn record_lag(&self, timeout: Duration) -> Result<Vec<(String, i32, i64)>, BusError> {
        record_lag(&self.inner, &self.metrics, timeout)
    }

    /// The underlying rdkafka consumer (offsets, positions, lag).
    pub fn raw(&self) -> &StreamConsumer {
        &self.inner
    }
}

/// What a handler says about a message it could not process.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    pub message: String,
    /// Retry the same message (a dependency is down) instead of
    /// dead-lettering it (the message itself is bad).
    pub retryable: bool,
    /// The dead letter's bounded reason label.
    pub reason_kind: &'static str,
}

impl ProcessError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
            retryable: true,
            reason_kind: "processing",
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
            retryable: false,
            reason_kind: "processing",
        }
    }
}

impl From<pitcrew_contract::DecodeError> for ProcessError {
    /// The message itself is bad: dead-letter it with the decoder's reason.
    fn from(e: pitcrew_contract::DecodeError) -> Self {
        ProcessError {
            message: e.to_string(),
            retryable: false,
            reason_kind: e.reason_label(),
        }
    }
}

/// Where a message came from, for handlers that need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One message handed to a [`run_consumer`] handler.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub origin: Origin,
    payload: &'a [u8],
    max_message_bytes: usize,
}

impl Delivery<'_> {
    /// Decodes the payload, refusing one over the configured size.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, pitcrew_contract::DecodeError> {
        pitcrew_contract::decode_with_limit(self.payload, self.max_message_bytes)
    }

    pub fn payload(&self) -> &[u8] {
        self.payload
    }
}

/// What a [`run_consumer`] loop calls for each message. A trait rather
/// than an async closure so the loop's future is `Send` (a spawned stage).
pub trait Handler {
    /// Handles one message: `Ok` marks it processed; a retryable error has
    /// it handed over again; a permanent one (or a [`DecodeError`]
    /// converted by `?`) dead-letters it.
    ///
    /// [`DecodeError`]: pitcrew_contract::DecodeError
    fn handle(
        &mut self,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// Consumes until `shutdown` resolves: hands each message to `handler`,
/// retries it while the handler says the failure is retryable,
/// dead-letters it when the failure is permanent (a payload that does not
/// decode among them), and marks each message processed only after it was
/// handled or dead-lettered. Commits on the way out.
pub async fn run_consumer<H, S>(
    consumer: &Consumer,
    dead_letters: &DeadLetterWriter,
    mut handler: H,
    shutdown: S,
) -> Result<(), BusError>
where
    H: Handler,
    S: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        let msg = tokio::select! {
            biased;
            () = &mut shutdown => break,
            msg = consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "consumer error, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let delivery = Delivery {
            origin: Origin {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
            payload: msg.payload().unwrap_or_default(),
            max_message_bytes: consumer.max_message_bytes,
        };
        handle_with_retry(&mut handler, &delivery, &msg, dead_letters).await?;
        consumer.processed(&msg)?;
    }
    consumer.commit()
}

/// [`run_consumer`] for a stage that reads one type and handles it at
/// once: what does not decode as `T` is dead-lettered, the rest goes to
/// `handler`.
pub async fn run_decoded<T, F, S>(
    consumer: &Consumer,
    dead_letters: &DeadLetterWriter,
    handler: F,
    shutdown: S,
) -> Result<(), BusError>
where
    T: DeserializeOwned,
    F: FnMut(&T, &Origin) -> Result<(), ProcessError> + Send,
    S: Future<Output = ()>,
{
    let decoded = Decoded {
        handler,
        _type: std::marker::PhantomData::<fn() -> T>,
    };
    run_consumer(consumer, dead_letters, decoded, shutdown).await
}

struct Decoded<T, F> {
    handler: F,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> Handler for Decoded<T, F>
where
    T: DeserializeOwned,
    F: FnMut(&T, &Origin) -> Result<(), ProcessError> + Send,
{
    fn handle(
        &mut self,
        delivery: &Delivery<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        let result = delivery
            .decode::<T>()
            .map_err(ProcessError::from)
            .and_then(|value| (self.handler)(&value, &delivery.origin));
        std::future::ready(result)
    }
}

async fn handle_with_retry<H: Handler>(
    handler: &mut H,
    delivery: &Delivery<'_>,
    msg: &BorrowedMessage<'_>,
    dead_letters: &DeadLetterWriter,
) -> Result<(), BusError> {
    let origin = &delivery.origin;
    let mut backoff = Duration::from_millis(50);
    loop {
        match handler.handle(delivery).await {
            Ok(()) => return Ok(()),
            Err(e) if e.retryable => {
                tracing::warn!(
                    topic = %origin.topic,
                    partition = origin.partition,
                    offset = origin.offset,
                    error = %e,
                    "handler failed, retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                let reason = if e.reason_kind == "processing" {
                    format!("processing failed: {e}")
                } else {
                    e.message
                };
                return dead_letter_with_retry(dead_letters, msg, &reason, e.reason_kind).await;
            }
        }
    }
}

/// Dead-letter writes are retried while Kafka says the failure is
/// transient; only then does the loop give up (without marking the message
/// processed, so it is redelivered, not lost).
async fn dead_letter_with_retry(
    dead_letters: &DeadLetterWriter,
    msg: &BorrowedMessage<'_>,
    reason: &str,
    reason_kind: &str,
) -> Result<(), BusError> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match dead_letters.send(msg, reason, reason_kind).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < DEAD_LETTER_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "dead-letter write failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

const DEAD_LETTER_ATTEMPTS: u32 = 10;

/// Lag per assigned partition of any consumer (position to the partition's
/// end), published as `pitcrew_bus_consumer_lag_messages`. Blocking: a
/// watermark round trip per partition.
pub(crate) fn record_lag<
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
>(
    consumer: &C,
    metrics: &BusMetrics,
    timeout: Duration,
) -> Result<Vec<(String, i32, i64)>, BusError> {
    let positions = consumer
        .position()
        .map_err(|e| BusError::consume("position", &e))?;
    let mut out = Vec::new();
    for elem in positions.elements() {
        let (low, high) = consumer
            .fetch_watermarks(elem.topic(), elem.partition(), timeout)
            .map_err(|e| BusError::consume("watermarks", &e))?;
        let from = match elem.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => low,
        };
        let lag = (high - from).max(0);
        metrics
            .consumer_lag
            .get_or_create(&crate::metrics::PartitionLabels {
                topic: elem.topic().to_owned(),
                partition: elem.partition(),
            })
            .set(lag);
        out.push((elem.topic().to_owned(), elem.partition(), lag));
    }
    Ok(out)
}
