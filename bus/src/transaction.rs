//! Consume-transform-produce in Kafka transactions: the rules stage writes
//! its outputs (incidents, actions) and the input offsets in one
//! transaction, so either both happen or neither does.
//!
//! Contract: after [`Transaction::commit`] returns Ok, every output is
//! visible to `read_committed` consumers and the inputs' offsets are
//! committed for the group. After [`Transaction::abort`] (or a failed
//! commit, which aborts), no output is visible, no offset is committed, and
//! the consumer is rewound to the batch's first offsets so the same inputs
//! come again.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::OutcomeLabel;
use crate::{BusError, BusMetrics, KafkaConfig};

/// One output message of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Counts rebalances, so a stateful stage knows when the partitions it
/// holds state for may have been processed elsewhere in between.
#[derive(Debug, Default)]
pub(crate) struct RebalanceCounter {
    epoch: Arc<AtomicU64>,
}

impl ClientContext for RebalanceCounter {}

impl ConsumerContext for RebalanceCounter {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// A consumer and a transactional producer working as one stage.
pub struct TransactionalStage {
    consumer: StreamConsumer<RebalanceCounter>,
    epoch: Arc<AtomicU64>,
    producer: FutureProducer,
    metrics: BusMetrics,
    timeout: Duration,
}

impl std::fmt::Debug for TransactionalStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalStage").finish_non_exhaustive()
    }
}

/// How long a transaction may stay open before the broker aborts it.
const TRANSACTION_TIMEOUT_MS: u32 = 60_000;

impl TransactionalStage {
    /// Joins `group_id`, subscribes to `topics` and initialises the
    /// producer's transactions under `transactional_id` (which fences any
    /// older instance with the same id).
    pub async fn new(
        cfg: &KafkaConfig,
        group_id: &str,
        transactional_id: &str,
        topics: &[&str],
        metrics: BusMetrics,
    ) -> Result<TransactionalStage, BusError> {
        let mut cc = cfg.group_consumer_config(group_id)?;
        // Offsets are committed by the transaction, never by the consumer.
        cc.set("enable.auto.commit", "false");
        let counter = RebalanceCounter::default();
        let epoch = Arc::clone(&counter.epoch);
        let consumer: StreamConsumer<RebalanceCounter> = cc
            .create_with_context(counter)
            .map_err(BusError::from_client_creation)?;
        consumer
            .subscribe(topics)
            .map_err(|e| BusError::consume("subscribe", &e))?;

        let mut pc = cfg.client_config()?;
        pc.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
            .set("linger.ms", cfg.producer.linger_ms.to_string())
            .set(
                "message.timeout.ms",
                cfg.producer
                    .delivery_timeout_ms
                    .min(TRANSACTION_TIMEOUT_MS)
                    .to_string(),
            );
        let producer: FutureProducer = pc.create().map_err(BusError::from_client_creation)?;
        let timeout = Duration::from_secs(30);
        blocking(|| producer.init_transactions(timeout))
            .map_err(|e| BusError::TransactionFatal(format!("init transactions: {e}")))?;
        Ok(TransactionalStage {
            consumer,
            epoch,
            producer,
            metrics,
            timeout,
        })
    }

    /// Waits for one message, then takes whatever else is ready, up to
    /// `max` messages or until `linger` passes.
    pub async fn next_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<OwnedMessage>, BusError> {
        loop {
            let batch = self
                .next_batch_within(max, linger, Duration::from_secs(3600))
                .await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// How many rebalances (assignments and revocations) this stage has
    /// seen: state kept for a partition across a change of this number may
    /// be stale.
    pub fn rebalance_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Lag per assigned partition (messages between the position and the
    /// partition's end), published as `pitcrew_bus_consumer_lag_messages`.
    /// Blocking (a round trip per partition): call it from periodic work.
    pub fn record_lag(&self, timeout: Duration) -> Result<i64, BusError> {
        let lags =
            blocking(|| crate::consumer::record_lag(&self.consumer, &self.metrics, timeout))?;
        Ok(lags.iter().map(|(_, _, lag)| lag).sum())
    }

    /// The partitions this stage's consumer holds now (topic, partition).
    pub fn assignment(&self) -> Result<Vec<(String, i32)>, BusError> {
        let tpl = self
            .consumer
            .assignment()
            .map_err(|e| BusError::consume("assignment", &e))?;
        Ok(tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect())
    }

    /// Like [`next_batch`](Self::next_batch), but gives up waiting for the
    /// first message after `wait` and returns an empty batch, so a stage can
    /// do timed work between batches without cancelling a batch half-read.
    pub async fn next_batch_within(
        &self,
        max: usize,
        linger: Duration,
        wait: Duration,
    ) -> Result<Vec<OwnedMessage>, BusError> {
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(r) => r.map_err(|e| BusError::consume("receive", &e))?.detach(),
        };
        let mut batch = vec![first];
        // One timer for the whole linger, not one per message.
        let linger_end = tokio::time::sleep(linger);
        tokio::pin!(linger_end);
        while batch.len() < max {
            tokio::select! {
                biased;
                m = self.consumer.recv() => match m {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => return Err(BusError::consume("receive", &e)),
                },
                () = &mut linger_end => break,
            }
        }
        self.count_consumed(&batch);
        Ok(batch)
    }

    fn count_consumed(&self, batch: &[OwnedMessage]) {
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for m in batch {
            match counts.iter_mut().find(|(t, _)| *t == m.topic()) {
                Some((_, n)) => *n += 1,
                None => counts.push((m.topic(), 1)),
            }
        }
        for (topic, n) in counts {
            self.metrics
                .consumed
                .get_or_create(&BusMetrics::topic(topic))
                .inc_by(n);
        }
    }

    /// Opens a transaction for `batch`.
    pub fn begin<'a>(&'a self, batch: &[OwnedMessage]) -> Result<Transaction<'a>, BusError> {
        self.producer
            .begin_transaction()
            .map_err(|e| BusError::TransactionFatal(format!("begin: {e}")))?;
        // Per partition: first offset (to rewind to) and last (to commit).
        let mut ranges: Vec<(String, i32, i64, i64)> = Vec::new();
        for m in batch {
            match ranges
                .iter_mut()
                .find(|(t, p, _, _)| t == m.topic() && *p == m.partition())
            {
                Some(r) => {
                    r.2 = r.2.min(m.offset());
                    r.3 = r.3.max(m.offset());
                }
                None => ranges.push((m.topic().to_owned(), m.partition(), m.offset(), m.offset())),
            }
        }
        Ok(Transaction {
            stage: self,
            ranges,
            pending: Vec::new(),
            done: false,
        })
    }
}

/// An open transaction. Dropping it without [`commit`](Transaction::commit)
/// or [`abort`](Transaction::abort) aborts it.
pub struct Transaction<'a> {
    stage: &'a TransactionalStage,
    ranges: Vec<(String, i32, i64, i64)>,
    pending: Vec<(String, DeliveryFuture)>,
    done: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    /// Adds an output to the transaction.
    pub fn produce(&mut self, out: &Output) -> Result<(), BusError> {
        self.produce_with_headers(out, &[])
    }

    /// Adds an output with headers (a dead letter's context) to the
    /// transaction.
    pub fn produce_with_headers(
        &mut self,
        out: &Output,
        headers: &[(&str, &str)],
    ) -> Result<(), BusError> {
        let mut hs = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(rdkafka::message::Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&out.topic)
            .key(out.key.as_bytes())
            .payload(out.payload.as_slice());
        if !headers.is_empty() {
            record = record.headers(hs);
        }
        self.send(&out.topic, record)
    }

    /// Adds `msg`'s dead letter to the transaction: its original key, bytes
    /// and headers, with the context headers of
    /// [`crate::dead_letter_headers`] in front. It becomes visible with the
    /// batch's other outputs and offsets, or not at all.
    pub fn dead_letter<M: Message>(
        &mut self,
        dlq_topic: &str,
        msg: &M,
        reason: &str,
        reason_kind: &str,
        stage: &str,
    ) -> Result<(), BusError> {
        let headers = crate::dead_letter_headers(msg, reason, reason_kind, stage);
        let record = FutureRecord::to(dlq_topic)
            .key(msg.key().unwrap_or_default())
            .payload(msg.payload().unwrap_or_default())
            .headers(headers);
        self.send(dlq_topic, record)?;
        self.stage.metrics.emit(crate::metrics::DeadLettered {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            reason,
            reason_kind,
        });
        Ok(())
    }

    fn send(&mut self, topic: &str, record: FutureRecord<'_, [u8], [u8]>) -> Result<(), BusError> {
        match self.stage.producer.send_result(record) {
            Ok(f) => {
                self.pending.push((topic.to_owned(), f));
                Ok(())
            }
            Err((e, _)) => Err(BusError::Produce {
                topic: topic.to_owned(),
                code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
            }),
        }
    }

    /// Waits for every output's delivery report (written, not yet visible).
    pub async fn flush_outputs(&mut self) -> Result<(), BusError> {
        for (topic, f) in self.pending.drain(..) {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(BusError::Produce {
                        topic,
                        code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                    })
                }
                Err(_) => return Err(BusError::Closed),
            }
        }
        Ok(())
    }

    /// Commits outputs and input offsets together. On failure the
    /// transaction is aborted and the consumer rewound.
    pub async fn commit(mut self) -> Result<(), BusError> {
        let result = self.try_commit().await;
        self.done = true;
        match result {
            Ok(()) => {
                self.stage
                    .metrics
                    .transactions
                    .get_or_create(&outcome("committed"))
                    .inc();
                Ok(())
            }
            Err(e) => {
                let fatal = matches!(e, BusError::TransactionFatal(_));
                let abort = self.abort_and_rewind();
                if fatal {
                    return Err(e);
                }
                abort?;
                Err(BusError::TransactionAborted {
                    reason: e.to_string(),
                    retryable: true,
                })
            }
        }
    }

    async fn try_commit(&mut self) -> Result<(), BusError> {
        self.flush_outputs().await?;
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, _, last) in &self.ranges {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(last + 1))
                .map_err(|e| BusError::consume("offsets", &e))?;
        }
        let stage = self.stage;
        // A transaction without inputs (outputs of timers) commits no offsets.
        if offsets.count() > 0 {
            let group = stage.consumer.group_metadata().ok_or_else(|| {
                BusError::TransactionFatal("consumer has no group metadata".to_owned())
            })?;
            blocking(|| {
                stage
                    .producer
                    .send_offsets_to_transaction(&offsets, &group, stage.timeout)
            })
            .map_err(txn_error)?;
        }
        blocking(|| stage.producer.commit_transaction(stage.timeout)).map_err(txn_error)
    }

    /// Aborts: outputs are discarded and the consumer rewinds to the
    /// batch's first offsets.
    pub async fn abort(mut self) -> Result<(), BusError> {
        self.done = true;
        let r = self.abort_and_rewind();
        self.stage
            .metrics
            .transactions
            .get_or_create(&outcome("aborted"))
            .inc();
        r
    }

    fn abort_and_rewind(&mut self) -> Result<(), BusError> {
        let stage = self.stage;
        // Outstanding delivery futures are resolved by the abort itself.
        self.pending.clear();
        blocking(|| stage.producer.abort_transaction(stage.timeout))
            .map_err(|e| BusError::TransactionFatal(format!("abort: {e}")))?;
        for (topic, partition, first, _) in &self.ranges {
            stage
                .consumer
                .seek(topic, *partition, Offset::Offset(*first), stage.timeout)
                .map_err(|e| BusError::consume("rewind", &e))?;
        }
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.abort_and_rewind() {
                tracing::error!(error = %e, "abort of dropped transaction failed");
            }
        }
    }
}

fn outcome(o: &str) -> OutcomeLabel {
    OutcomeLabel {
        outcome: o.to_owned(),
    }
}

fn txn_error(e: KafkaError) -> BusError {
    match &e {
        KafkaError::Transaction(rd) if rd.is_fatal() => BusError::TransactionFatal(e.to_string()),
        KafkaError::Transaction(rd) => BusError::TransactionAborted {
            reason: e.to_string(),
            retryable: rd.is_retriable() || rd.txn_requires_abort(),
        },
        _ => BusError::TransactionAborted {
            reason: e.to_string(),
            retryable: true,
        },
    }
}

/// Runs a blocking librdkafka call without stalling the async runtime's
/// other tasks (needs the multi-threaded runtime).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
