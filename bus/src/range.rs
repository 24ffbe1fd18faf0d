//! Reading one partition's recent past without joining a group: how a
//! stateful stage rebuilds its state for a partition it just got.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::{BusError, KafkaConfig};

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
    let mut cc = cfg.client_config()?;
    cc.set("group.id", "pitcrew-range-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = cc.create().map_err(BusError::from_client_creation)?;
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
