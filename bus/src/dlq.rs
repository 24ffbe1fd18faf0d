//! The dead-letter writer. A dead letter keeps the original key and value
//! bytes and carries where it came from and why in headers
//! ([`pitcrew_contract::dlq::headers`]). The write is acknowledged before
//! the caller marks the original processed: a message is dead-lettered or
//! redelivered, never lost.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::{BusError, BusMetrics, Delivered, Producer};
use pitcrew_contract::dlq::{headers as h, DeadLetterContext};
use pitcrew_contract::Timestamp;

/// Writes dead letters to one topic on behalf of one stage.
#[derive(Clone, Debug)]
pub struct DeadLetterWriter {
    producer: Producer,
    topic: String,
    stage: String,
    metrics: BusMetrics,
}

impl DeadLetterWriter {
    pub fn new(producer: Producer, topic: &str, stage: &str, metrics: BusMetrics) -> Self {
        DeadLetterWriter {
            producer,
            topic: topic.to_owned(),
            stage: stage.to_owned(),
            metrics,
        }
    }

    /// Dead-letters `msg` with a reason (words) and a bounded reason label.
    pub async fn send<M: Message>(
        &self,
        msg: &M,
        reason: &str,
        reason_kind: &str,
    ) -> Result<Delivered, BusError> {
        let headers = dead_letter_headers(msg, reason, reason_kind, &self.stage);
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let payload = msg.payload().unwrap_or_default();
        let delivered = self
            .producer
            .send_with_headers(&self.topic, &key, payload, headers)
            .await?;
        self.metrics.emit(crate::metrics::DeadLettered {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            reason,
            reason_kind,
        });
        Ok(delivered)
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// The headers of `msg`'s dead letter: where it came from, why, which
/// stage and when, followed by the original message's own headers.
pub fn dead_letter_headers<M: Message>(
    msg: &M,
    reason: &str,
    reason_kind: &str,
    stage: &str,
) -> OwnedHeaders {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let at = Timestamp::now().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(header(h::REASON, reason))
        .insert(header(h::REASON_KIND, reason_kind))
        .insert(header(h::TOPIC, msg.topic()))
        .insert(header(h::PARTITION, &partition))
        .insert(header(h::OFFSET, &offset))
        .insert(header(h::STAGE, stage))
        .insert(header(h::AT, &at));
    if let Some(original) = msg.headers() {
        for hd in original.iter() {
            headers = headers.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    headers
}

/// Reads the context of a dead letter back from its headers.
pub fn dead_letter_context<M: Message>(msg: &M) -> Option<DeadLetterContext> {
    let headers = msg.headers()?;
    let get = |name: &str| -> Option<String> {
        headers
            .iter()
            .find(|hd| hd.key == name)
            .and_then(|hd| hd.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(DeadLetterContext {
        reason: get(h::REASON)?,
        reason_kind: get(h::REASON_KIND)?,
        topic: get(h::TOPIC)?,
        partition: get(h::PARTITION)?.parse().ok()?,
        offset: get(h::OFFSET)?.parse().ok()?,
        stage: get(h::STAGE)?,
    })
}
