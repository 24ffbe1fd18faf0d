//! The node agent's Kafka side: drains the collectors' on-disk spool into
//! the events topic.
//!
//! Contract: an event leaves the spool only after Kafka acknowledged it
//! (`acks=all`); a failed batch stays spooled and is sent again after a
//! backoff, so consumers may see it twice and drop the duplicate by its id.
//! The collectors themselves (`pitcrew_ingest`) know nothing of Kafka.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pitcrew_bus::BatchProducer;
use pitcrew_ingest::spool::Spool;
use tokio::sync::Notify;

use crate::http::Health;

/// How long a spool may go without a delivery, while holding events,
/// before health says so: spooling through an outage is by design, a
/// spool that has not moved for minutes is worth a look.
const STUCK_AFTER: Duration = Duration::from_secs(300);

/// Moves spooled events to Kafka, keyed by the node.
pub struct SpoolDrain {
    pub spool: Arc<Mutex<Spool>>,
    pub producer: Arc<BatchProducer>,
    pub topic: String,
    pub node: String,
    /// How long one batch may wait for Kafka's acknowledgement.
    pub delivery_timeout: Duration,
    /// Notified when the collectors spool something.
    pub spooled: Arc<Notify>,
    /// Set to stop once the spool is empty (or Kafka refuses).
    pub stop: Arc<AtomicBool>,
    /// When Kafka last took a batch.
    pub last_delivery: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for SpoolDrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolDrain")
            .field("topic", &self.topic)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SpoolDrain {
    /// Health for `/healthz`: failing when events have waited in the spool
    /// with no delivery for minutes.
    pub fn health(&self) -> Health {
        let spool = Arc::clone(&self.spool);
        let last = Arc::clone(&self.last_delivery);
        Arc::new(move || {
            let pending = spool.lock().map(|s| s.pending_bytes()).unwrap_or(0);
            let since = last.lock().map(|t| t.elapsed()).unwrap_or_default();
            if pending > 0 && since > STUCK_AFTER {
                Err(format!(
                    "kafka has taken nothing for {} s; {pending} bytes spooled",
                    since.as_secs()
                ))
            } else {
                Ok(())
            }
        })
    }

    /// Drains until stopped.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let batch = match self.spool.lock().map(|s| s.peek(500)) {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "spool read failed");
                    Vec::new()
                }
                Err(_) => return,
            };
            if batch.is_empty() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), self.spooled.notified()).await;
                continue;
            }
            let producer = Arc::clone(&self.producer);
            let (topic, node) = (self.topic.clone(), self.node.clone());
            let timeout = self.delivery_timeout;
            let payloads: Vec<Vec<u8>> = batch.iter().map(|e| e.payload.clone()).collect();
            let sent = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                producer.send_batch(&topic, &node, &refs, timeout)
            })
            .await;
            let ok = match sent {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, events = batch.len(), "delivery failed; events stay spooled");
                    false
                }
                Err(_) => false,
            };
            if ok {
                if let (Some(last), Ok(mut s)) = (batch.last(), self.spool.lock()) {
                    if let Err(e) = s.ack(last, batch.len() as u64) {
                        tracing::error!(error = %e, "spool ack failed");
                    }
                }
                if let Ok(mut t) = self.last_delivery.lock() {
                    *t = Instant::now();
                }
                backoff = Duration::from_millis(200);
            } else {
                // Unacknowledged events are sent again: consumers drop the
                // duplicates by event id.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    }
}
