//! Reading one partition's recent past without joining a group: how a
//! stateful stage rebuilds its state for a partition it just got.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::{BusError, KafkaConfig};

/// A consumer that is assigned partitions by hand, commits nothing, reads
/// only committed transactions and says when it reached a partition's end.
/// The end of a partition is how a range read knows it is done, not an
/// error: librdkafka's default context would log each one at error level.
struct RangeContext;

impl ClientContext for RangeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(target: "librdkafka", error = %error, "{reason}");
        }
    }
}

impl ConsumerContext for RangeContext {}

fn reader(cfg: &KafkaConfig, group: &str) -> Result<BaseConsumer<RangeContext>, BusError> {
    let mut cc = cfg.client_config()?;
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    cc.create_with_context(RangeContext)
        .map_err(BusError::from_client_creation)
}

/// Reads `topic`/`partition` from the first offset whose timestamp is at
/// or after `from_ms` (milliseconds since the epoch) up to, not including,
/// `until_offset`, calling `f` with each committed message's payload.
/// Returns how many messages it read.
pub fn read_partition_range(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    from_ms: i64,
    until_offset: i64,
    timeout: Duration,
    mut f: impl FnMut(&[u8]),
) -> Result<u64, BusError> {
    let consumer = reader(cfg, "pitcrew-range-reader")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from_ms.max(0)))
        .map_err(|e| BusError::consume("range", &e))?;
    let start = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(|e| BusError::consume("offsets for times", &e))?;
    let start_offset = start
        .find_partition(topic, partition)
        .map(|e| e.offset())
        .unwrap_or(Offset::End);
    let start_offset = match start_offset {
        Offset::Offset(o) if o < until_offset => o,
        // Nothing at or after the time before `until_offset`.
        _ => return Ok(0),
    };
    let mut assign = TopicPartitionList::new();
    assign
        .add_partition_offset(topic, partition, Offset::Offset(start_offset))
        .map_err(|e| BusError::consume("range", &e))?;
    consumer
        .assign(&assign)
        .map_err(|e| BusError::consume("assign", &e))?;
    let deadline = Instant::now() + timeout;
    let mut read = 0;
    loop {
        if Instant::now() > deadline {
            return Err(BusError::Consume(
                format!("range read of {topic}/{partition} timed out"),
                Some(rdkafka::types::RDKafkaErrorCode::RequestTimedOut),
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.offset() >= until_offset {
                    break;
                }
                f(m.payload().unwrap_or_default());
                read += 1;
                if m.offset() + 1 >= until_offset {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(BusError::consume("range read", &e)),
            None => {}
        }
    }
    Ok(read)
}

/// Reads every partition of `topic` from `from_ms` (milliseconds since the
/// epoch; the first offset at or after it) to the end each partition had
/// when the read began, merged in timestamp order across partitions, and
/// calls `f` with each message's payload whose timestamp is at most
/// `to_ms`. Partitions that run ahead are paused, so memory stays bounded.
/// `progress` is called with (messages read, partitions finished, total).
pub fn read_topic_merged(
    cfg: &KafkaConfig,
    topic: &str,
    from_ms: i64,
    to_ms: Option<i64>,
    timeout: Duration,
    mut f: impl FnMut(&[u8]),
    mut progress: impl FnMut(u64, usize, usize),
) -> Result<u64, BusError> {
    use std::collections::VecDeque;
    const HIGH: usize = 20_000;
    let consumer = reader(cfg, &format!("pitcrew-replay-{}", std::process::id()))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::consume("metadata", &e))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(BusError::Topic {
            topic: topic.to_owned(),
            reason: "no such topic, or it has no partitions".to_owned(),
        });
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(from_ms.max(0)))
            .map_err(|e| BusError::consume("replay", &e))?;
    }
    let starts = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(|e| BusError::consume("offsets for times", &e))?;
    let n = partitions.len();
    let mut ends = vec![0i64; n];
    let mut done = vec![false; n];
    let mut assign = TopicPartitionList::new();
    for (i, &p) in partitions.iter().enumerate() {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| BusError::consume("watermarks", &e))?;
        ends[i] = high;
        match starts.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o < high => {
                assign
                    .add_partition_offset(topic, p, Offset::Offset(o))
                    .map_err(|e| BusError::consume("replay", &e))?;
            }
            _ => done[i] = true,
        }
    }
    consumer
        .assign(&assign)
        .map_err(|e| BusError::consume("assign", &e))?;
    let index = |p: i32| partitions.iter().position(|&x| x == p);
    let mut buffers: Vec<VecDeque<(i64, Vec<u8>)>> = (0..n).map(|_| VecDeque::new()).collect();
    let mut paused = vec![false; n];
    let mut read = 0u64;
    let mut idle_since = Instant::now();
    loop {
        // Need a head from every partition still going before merging.
        let waiting = (0..n).any(|i| !done[i] && buffers[i].is_empty());
        if waiting {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    idle_since = Instant::now();
                    let Some(i) = index(m.partition()) else {
                        continue;
                    };
                    if m.offset() + 1 >= ends[i] {
                        done[i] = true;
                    }
                    if m.offset() < ends[i] {
                        let ts = m.timestamp().to_millis().unwrap_or(0);
                        buffers[i].push_back((ts, m.payload().unwrap_or_default().to_vec()));
                    }
                    if buffers[i].len() >= HIGH && !paused[i] {
                        let mut one = TopicPartitionList::new();
                        one.add_partition(topic, m.partition());
                        let _ = consumer.pause(&one);
                        paused[i] = true;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    if let Some(i) = index(p) {
                        done[i] = true;
                    }
                }
                Some(Err(e)) => return Err(BusError::consume("replay read", &e)),
                None => {
                    if idle_since.elapsed() > timeout {
                        return Err(BusError::Consume(
                            format!("replay of {topic} stalled for {timeout:?}"),
                            Some(rdkafka::types::RDKafkaErrorCode::RequestTimedOut),
                        ));
                    }
                }
            }
            continue;
        }
        // Every live partition has a head: emit the oldest.
        let next = (0..n)
            .filter(|&i| !buffers[i].is_empty())
            .min_by_key(|&i| buffers[i].front().map(|(ts, _)| *ts));
        let Some(i) = next else { break };
        if let Some((ts, payload)) = buffers[i].pop_front() {
            if to_ms.is_some_and(|t| ts > t) {
                // Everything after this in the partition is later still.
                buffers[i].clear();
                done[i] = true;
            } else {
                f(&payload);
                read += 1;
                if read.is_multiple_of(100_000) {
                    progress(read, done.iter().filter(|d| **d).count(), n);
                }
            }
        }
        if paused[i] && buffers[i].len() < HIGH / 4 && !done[i] {
            let mut one = TopicPartitionList::new();
            one.add_partition(topic, partitions[i]);
            let _ = consumer.resume(&one);
            paused[i] = false;
        }
    }
    progress(read, n, n);
    Ok(read)
}
