//! The facility poller's Kafka side: each poll's events, keyed by the
//! device, to the events topic. A device's events stay in order on one
//! partition; the rules stage re-keys them by rack.
//!
//! Contract: a batch is retried with backoff until Kafka takes it, so the
//! poller's readings are delivered at least once (ids deduplicate); a full
//! channel slows the poller rather than dropping readings.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pitcrew_bus::BatchProducer;
use pitcrew_contract::{encode, Event};

/// Moves polls' events to Kafka.
pub struct FacilitySink {
    pub producer: Arc<BatchProducer>,
    pub topic: String,
    pub delivery_timeout: Duration,
    /// When Kafka last took a batch (for `/healthz`).
    pub last_delivery: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for FacilitySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacilitySink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl FacilitySink {
    /// Sends until the channel closes.
    pub async fn run(self, mut rx: tokio::sync::mpsc::Receiver<Vec<Event>>) {
        while let Some(events) = rx.recv().await {
            let Some(first) = events.first() else {
                continue;
            };
            let key = first.node.clone();
            let payloads: Vec<Vec<u8>> = events.iter().map(encode).collect();
            let mut backoff = Duration::from_millis(200);
            loop {
                let batch = payloads.clone();
                let (producer, topic, k) =
                    (Arc::clone(&self.producer), self.topic.clone(), key.clone());
                let timeout = self.delivery_timeout;
                let sent = tokio::task::spawn_blocking(move || {
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    producer.send_batch(&topic, &k, &refs, timeout)
                })
                .await;
                match sent {
                    Ok(Ok(())) => {
                        if let Ok(mut t) = self.last_delivery.lock() {
                            *t = Instant::now();
                        }
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, device = %key, events = payloads.len(), "delivery failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
