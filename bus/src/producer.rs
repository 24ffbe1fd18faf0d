//! The producer: idempotent, `acks=all`, keyed, bounded in flight.
//!
//! Contract: [`Producer::send`] returns only when Kafka acknowledged the
//! message or definitely failed it; a failure is returned (and counted),
//! never swallowed. [`Producer::enqueue`] waits while `max_in_flight`
//! messages are unacknowledged, so a slow broker slows the caller instead
//! of growing memory.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{BusError, BusMetrics, KafkaConfig};

/// Where Kafka stored a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// An idempotent producer. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    in_flight: Arc<Semaphore>,
    metrics: BusMetrics,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("available_slots", &self.in_flight.available_permits())
            .finish_non_exhaustive()
    }
}

/// A message enqueued in the producer, not yet acknowledged.
pub struct PendingDelivery {
    future: DeliveryFuture,
    topic: String,
    _permit: OwnedSemaphorePermit,
    metrics: BusMetrics,
}

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PendingDelivery {
    /// Waits for Kafka's answer.
    pub async fn wait(self) -> Result<Delivered, BusError> {
        let result = self.future.await;
        self.metrics.in_flight.dec();
        match result {
            Ok(Ok(d)) => {
                self.metrics
                    .produced
                    .get_or_create(&BusMetrics::topic(&self.topic))
                    .inc();
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((e, _msg))) => {
                self.metrics
                    .produce_errors
                    .get_or_create(&BusMetrics::topic(&self.topic))
                    .inc();
                tracing::warn!(topic = %self.topic, error = %e, "delivery failed");
                Err(BusError::Produce {
                    topic: self.topic,
                    code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                })
            }
            Err(_canceled) => Err(BusError::Closed),
        }
    }
}

/// Settings every pitcrew producer has, whatever the config says: these
/// are what make delivery safe.
pub(crate) fn producer_config(cfg: &KafkaConfig) -> Result<rdkafka::ClientConfig, BusError> {
    let mut c = cfg.client_config()?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", cfg.producer.linger_ms.to_string())
        .set(
            "message.timeout.ms",
            cfg.producer.delivery_timeout_ms.to_string(),
        )
        .set("compression.type", &cfg.producer.compression)
        .set(
            "queue.buffering.max.messages",
            cfg.producer.max_in_flight.clamp(1, 10_000_000).to_string(),
        );
    Ok(c)
}

impl Producer {
    pub fn new(cfg: &KafkaConfig, metrics: BusMetrics) -> Result<Producer, BusError> {
        let inner: FutureProducer = producer_config(cfg)?
            .create()
            .map_err(BusError::from_client_creation)?;
        Ok(Producer {
            inner,
            in_flight: Arc::new(Semaphore::new(cfg.producer.max_in_flight.max(1))),
            metrics,
        })
    }

    /// Enqueues a message, waiting for room when `max_in_flight` are
    /// pending. The returned [`PendingDelivery`] resolves on Kafka's answer.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<PendingDelivery, BusError> {
        let permit = Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .map_err(|_| BusError::Closed)?;
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.inner.send_result(record) {
                Ok(future) => {
                    self.metrics.in_flight.inc();
                    return Ok(PendingDelivery {
                        future,
                        topic: topic.to_owned(),
                        _permit: permit,
                        metrics: self.metrics.clone(),
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full (its bound is the same
                    // as ours, but its accounting lags by a callback).
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    self.metrics
                        .produce_errors
                        .get_or_create(&BusMetrics::topic(topic))
                        .inc();
                    return Err(BusError::Produce {
                        topic: topic.to_owned(),
                        code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                    });
                }
            }
        }
    }

    /// Sends one message and waits until Kafka acknowledged it.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<Delivered, BusError> {
        self.enqueue(topic, key, payload, None).await?.wait().await
    }

    /// Encodes a contract message and sends it under its contract key
    /// (events by node, actions, audit and state by target, incidents by
    /// id), waiting for the acknowledgement.
    pub async fn send_message<M>(&self, topic: &str, message: &M) -> Result<Delivered, BusError>
    where
        M: pitcrew_contract::Keyed + serde::Serialize,
    {
        let payload = pitcrew_contract::encode(message);
        self.send(topic, &message.key(), &payload).await
    }

    /// Sends with headers and waits.
    pub async fn send_with_headers(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivered, BusError> {
        self.enqueue(topic, key, payload, Some(headers))
            .await?
            .wait()
            .await
    }

    /// Waits until everything enqueued is acknowledged or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush(timeout))
            .await
            .map_err(|_| BusError::Closed)?
            .map_err(|e| BusError::Produce {
                topic: "*".to_owned(),
                code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
            })
    }
}
