//! A producer for batches that must land together: the collector's spool
//! drainer sends a batch, waits for every acknowledgement, and only then
//! marks it sent. No polling thread and no future per message: delivery
//! reports are counted in the producer context while `send_batch` flushes,
//! so an idle agent costs nothing here (rdkafka's `FutureProducer` polls on
//! a thread every 100 ms, which on an otherwise idle node is most of the
//! agent's CPU).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};

use crate::{BusError, BusMetrics, KafkaConfig};

/// Counts the delivery reports of the current batch.
#[derive(Debug, Default)]
pub(crate) struct BatchContext {
    batch: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<RDKafkaErrorCode>>,
    quiet: crate::ratelimit::LogLimiter,
}

/// A node agent waits out Kafka outages; librdkafka reports every failed
/// reconnect. One line per kind of problem every 30 s says as much.
impl ClientContext for BatchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(
            level,
            RDKafkaLogLevel::Debug | RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice
        ) {
            return;
        }
        if let Some(suppressed) = self.quiet.allow(fac) {
            tracing::warn!(target: "librdkafka", facility = fac, suppressed, "{log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let key = error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
        if let Some(suppressed) = self.quiet.allow(&key) {
            tracing::warn!(target: "librdkafka", error = %error, suppressed, "{reason}");
        }
    }
}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        // Late reports of an earlier batch (one that timed out) are ignored:
        // that batch was already reported failed and will be sent again.
        if batch as u64 != self.batch.load(Ordering::Acquire) {
            return;
        }
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::AcqRel);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail));
                }
            }
        }
    }
}

/// Idempotent, `acks=all`, batch-at-a-time producer.
pub struct BatchProducer {
    inner: BaseProducer<BatchContext>,
    serial: Mutex<u64>,
    metrics: BusMetrics,
}

impl std::fmt::Debug for BatchProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProducer").finish_non_exhaustive()
    }
}

impl BatchProducer {
    pub fn new(cfg: &KafkaConfig, metrics: BusMetrics) -> Result<BatchProducer, BusError> {
        let inner: BaseProducer<BatchContext> = crate::producer::producer_config(cfg)?
            .create_with_context(BatchContext::default())
            .map_err(BusError::from_client_creation)?;
        Ok(BatchProducer {
            inner,
            serial: Mutex::new(0),
            metrics,
        })
    }

    /// Sends every payload to `topic` under `key` and blocks until all are
    /// acknowledged (Ok) or any failed or `timeout` passed (Err, retryable
    /// when Kafka said so). Some of a failed batch may have landed: callers
    /// resend the whole batch and consumers drop duplicates by event id.
    pub fn send_batch(
        &self,
        topic: &str,
        key: &str,
        payloads: &[&[u8]],
        timeout: Duration,
    ) -> Result<(), BusError> {
        let records: Vec<(&str, &[u8])> = payloads.iter().map(|p| (key, *p)).collect();
        self.send_keyed(topic, &records, timeout)
    }

    /// `send_batch` with a key per payload (a fleet simulator's batch
    /// spans many nodes, each keyed by its node).
    pub fn send_keyed(
        &self,
        topic: &str,
        records: &[(&str, &[u8])],
        timeout: Duration,
    ) -> Result<(), BusError> {
        let mut serial = self.serial.lock().map_err(|_| BusError::Closed)?;
        *serial += 1;
        let batch = *serial;
        let ctx = self.inner.context();
        ctx.batch.store(batch, Ordering::Release);
        ctx.delivered.store(0, Ordering::Release);
        ctx.failed.store(0, Ordering::Release);
        if let Ok(mut first) = ctx.first_error.lock() {
            *first = None;
        }
        let deadline = Instant::now() + timeout;
        let label = BusMetrics::topic(topic);
        for (key, payload) in records {
            let mut record = BaseRecord::with_opaque_to(topic, batch as usize)
                .key(*key)
                .payload(*payload);
            loop {
                match self.inner.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.inner.poll(Duration::from_millis(5));
                        if Instant::now() > deadline {
                            return Err(BusError::Produce {
                                topic: topic.to_owned(),
                                code: RDKafkaErrorCode::QueueFull,
                            });
                        }
                    }
                    Err((e, _)) => {
                        self.metrics.produce_errors.get_or_create(&label).inc();
                        return Err(BusError::Produce {
                            topic: topic.to_owned(),
                            code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                        });
                    }
                }
            }
        }
        let expected = records.len() as u64;
        // flush() polls, which runs the delivery callbacks.
        let _ = self
            .inner
            .flush(deadline.saturating_duration_since(Instant::now()));
        let delivered = ctx.delivered.load(Ordering::Acquire);
        let failed = ctx.failed.load(Ordering::Acquire);
        self.metrics
            .produced
            .get_or_create(&label)
            .inc_by(delivered);
        if failed > 0 || delivered < expected {
            self.metrics
                .produce_errors
                .get_or_create(&label)
                .inc_by(expected - delivered);
            let code = ctx
                .first_error
                .lock()
                .ok()
                .and_then(|f| *f)
                .unwrap_or(RDKafkaErrorCode::MessageTimedOut);
            return Err(BusError::Produce {
                topic: topic.to_owned(),
                code,
            });
        }
        Ok(())
    }
}
