//! The Kafka plumbing against a real Apache Kafka broker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pitcrew_bus::rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use pitcrew_bus::rdkafka::message::{Headers, Message};
use pitcrew_bus::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use pitcrew_bus::{
    cleanup_policy, dead_letter_context, ensure_topics, run_decoded, BusConfig, BusError,
    BusMetrics, Consumer, DeadLetterWriter, Origin, Output, ProcessError, Producer,
    TransactionalStage,
};
use pitcrew_contract::{encode, examples, Event};
use pitcrew_tests::{config, eventually, fresh_consumer, kafka, unique};

async fn setup(name: &str) -> BusConfig {
    let cfg = config(&unique(name));
    ensure_topics(&cfg.kafka, &cfg.topics)
        .await
        .expect("bootstrap topics");
    cfg
}

/// One message as a test reader saw it.
#[derive(Debug)]
struct Seen {
    payload: Vec<u8>,
    headers: HashMap<String, String>,
    key: Vec<u8>,
}

/// Reads `topic` from the start with a fresh consumer until it saw `want`
/// messages (then goes on for a short grace period, so a surplus shows), or
/// for 3 s when `want` is 0 (checking that nothing is there).
fn read_all(topic: &str, isolation: &str, want: usize) -> Vec<Seen> {
    let wait = if want == 0 {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(30)
    };
    let mut grace_until: Option<std::time::Instant> = None;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        if grace_until.is_some_and(|g| std::time::Instant::now() > g) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let mut headers = HashMap::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers.insert(
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(Seen {
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
                key: m.key().unwrap_or_default().to_vec(),
            });
            if want > 0 && out.len() == want {
                grace_until = Some(std::time::Instant::now() + Duration::from_millis(500));
            }
        }
    }
    out
}

fn committed(group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match c.find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_are_created_once_and_state_is_compacted() {
    let cfg = config(&unique("topics"));
    let first = ensure_topics(&cfg.kafka, &cfg.topics).await.unwrap();
    assert_eq!(first.len(), 6);
    assert!(first.iter().all(|r| r.created), "{first:?}");
    assert_eq!(
        cleanup_policy(&cfg.kafka, &cfg.topics.state.name)
            .await
            .unwrap(),
        "compact"
    );
    assert_eq!(
        cleanup_policy(&cfg.kafka, &cfg.topics.events.name)
            .await
            .unwrap(),
        "delete"
    );

    let second = ensure_topics(&cfg.kafka, &cfg.topics).await.unwrap();
    assert!(
        second.iter().all(|r| !r.created && r.warnings.is_empty()),
        "{second:?}"
    );

    // A config that disagrees with what exists is reported, not applied.
    let mut changed = cfg.topics.clone();
    changed.events.partitions = 3;
    changed.state.compact = false;
    let third = ensure_topics(&cfg.kafka, &changed).await.unwrap();
    let events = third
        .iter()
        .find(|r| r.name == changed.events.name)
        .unwrap();
    assert_eq!(events.warnings, ["has 1 partitions, config says 3"]);
    let state = third.iter().find(|r| r.name == changed.state.name).unwrap();
    assert_eq!(
        state.warnings,
        ["cleanup.policy is `compact`, config says delete"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_kind_round_trips_through_kafka() {
    let cfg = setup("roundtrip").await;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    let sent = examples::all_events();
    for ev in &sent {
        producer
            .send_message(&cfg.topics.events.name, ev)
            .await
            .unwrap();
    }
    // Keyed by node (a facility event's node is its device), as the
    // contract says.
    let keys: Vec<Vec<u8>> = read_all(&cfg.topics.events.name, "read_committed", sent.len())
        .into_iter()
        .map(|seen| seen.key)
        .collect();
    let expected: Vec<Vec<u8>> = sent.iter().map(|e| e.node.as_bytes().to_vec()).collect();
    assert_eq!(keys, expected);
    assert!(keys.contains(&b"n17".to_vec()) && keys.contains(&b"ups-1".to_vec()));
    let consumer = fresh_consumer(&cfg.kafka, &cfg.topics.events.name, metrics.clone());
    let dlq = DeadLetterWriter::new(
        producer.clone(),
        &cfg.topics.dlq.name,
        "test",
        metrics.clone(),
    );
    let mut received = Vec::new();
    consume_until(&consumer, &dlq, sent.len(), |ev, _| {
        received.push(ev.clone());
        Ok(())
    })
    .await;
    let expected = sent.len();
    assert_eq!(received, sent);
    // Same key, one partition: order is kept, and every offset committed.
    let topic = &cfg.topics.events.name;
    let metrics_text = {
        let mut reg = prometheus_registry();
        metrics.register(&mut reg);
        encode_registry(&reg)
    };
    assert!(
        metrics_text.contains(&format!(
            "pitcrew_bus_messages_produced_total{{topic=\"{topic}\"}} {expected}"
        )),
        "{metrics_text}"
    );
}

/// Runs [`run_decoded`] until the handler was called `calls` times.
async fn consume_until(
    consumer: &Consumer,
    dlq: &DeadLetterWriter,
    calls: usize,
    mut handler: impl FnMut(&Event, &Origin) -> Result<(), ProcessError> + Send,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let mut n = 0;
    tokio::time::timeout(
        Duration::from_secs(60),
        run_decoded(
            consumer,
            dlq,
            |ev: &Event, origin: &Origin| {
                n += 1;
                if n == calls {
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                }
                handler(ev, origin)
            },
            async move {
                let _ = stop_rx.await;
            },
        ),
    )
    .await
    .expect("the handler was called often enough within 60 s")
    .unwrap();
}

fn prometheus_registry() -> prometheus_client::registry::Registry {
    prometheus_client::registry::Registry::default()
}

fn encode_registry(reg: &prometheus_client::registry::Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_goes_to_the_dead_letter_topic_and_the_consumer_goes_on() {
    let cfg = setup("dlq").await;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    let topic = cfg.topics.events.name.clone();
    let good = encode(&examples::event(pitcrew_contract::EventKind::GpuXid));
    let not_utf8: Vec<u8> = vec![b'{', 0xff, 0xfe, b'}'];
    let missing_field = br#"{"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"gpu.xid","gpu":{"index":0},"data":{}}"#.to_vec();
    let inputs = [
        good.clone(),
        not_utf8.clone(),
        missing_field.clone(),
        good.clone(),
    ];
    for p in &inputs {
        producer.send(&topic, "n1", p).await.unwrap();
    }
    let group = unique("g");
    let consumer = Consumer::new(&cfg.kafka, &group, &[&topic], metrics.clone()).unwrap();
    let dlq = DeadLetterWriter::new(
        producer.clone(),
        &cfg.topics.dlq.name,
        "rules",
        metrics.clone(),
    );
    let mut handled = Vec::new();
    consume_until(&consumer, &dlq, 2, |_, origin| {
        handled.push(origin.offset);
        Ok(())
    })
    .await;
    assert_eq!(handled, [0, 3], "the good messages, around the bad ones");

    let letters = read_all(&cfg.topics.dlq.name, "read_committed", 2);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].payload, not_utf8, "original bytes kept");
    assert_eq!(
        letters[0].headers["pitcrew.dlq.reason"],
        "invalid utf-8 at byte 1"
    );
    assert_eq!(
        letters[0].headers["pitcrew.dlq.reason_kind"],
        "invalid_utf8"
    );
    assert_eq!(letters[0].headers["pitcrew.dlq.topic"], topic);
    assert_eq!(letters[0].headers["pitcrew.dlq.offset"], "1");
    assert_eq!(letters[0].headers["pitcrew.dlq.partition"], "0");
    assert_eq!(letters[0].headers["pitcrew.dlq.stage"], "rules");
    assert_eq!(letters[1].payload, missing_field);
    assert_eq!(
        letters[1].headers["pitcrew.dlq.reason"],
        "missing field `data.code`"
    );
    assert_eq!(letters[1].headers["pitcrew.dlq.offset"], "2");
    // Everything, bad messages included, is committed: nothing is redelivered.
    assert_eq!(committed(&group, &topic), Some(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_context_reads_back() {
    let cfg = setup("dlqctx").await;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    producer
        .send(&cfg.topics.events.name, "n1", b"nope")
        .await
        .unwrap();
    let consumer = fresh_consumer(&cfg.kafka, &cfg.topics.events.name, metrics.clone());
    let msg = consumer.recv().await.unwrap();
    DeadLetterWriter::new(producer, &cfg.topics.dlq.name, "collect", metrics)
        .send(&msg, "because", "test")
        .await
        .unwrap();
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", unique("r"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&cfg.topics.dlq.name]).unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .unwrap()
        .unwrap();
    let ctx = dead_letter_context(&letter).unwrap();
    assert_eq!(ctx.reason, "because");
    assert_eq!(ctx.stage, "collect");
    assert_eq!(ctx.topic, cfg.topics.events.name);
    assert_eq!((ctx.partition, ctx.offset), (0, 0));
    assert_eq!(letter.key(), Some(&b"n1"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_error_that_is_permanent_is_dead_lettered_and_a_retryable_one_is_retried() {
    let cfg = setup("handler").await;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    let topic = cfg.topics.events.name.clone();
    let ev = encode(&examples::event(pitcrew_contract::EventKind::NetLink));
    for _ in 0..2 {
        producer.send(&topic, "n1", &ev).await.unwrap();
    }
    let consumer = fresh_consumer(&cfg.kafka, &topic, metrics.clone());
    let dlq = DeadLetterWriter::new(producer.clone(), &cfg.topics.dlq.name, "t", metrics.clone());
    let mut attempts = Vec::new();
    consume_until(&consumer, &dlq, 4, |_, origin| {
        attempts.push(origin.offset);
        match (origin.offset, attempts.len()) {
            (0, 1 | 2) => Err(ProcessError::retryable("executor down")),
            (0, _) => Ok(()),
            _ => Err(ProcessError::permanent("plan does not exist")),
        }
    })
    .await;
    assert_eq!(attempts, [0, 0, 0, 1]);
    let letters = read_all(&cfg.topics.dlq.name, "read_committed", 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].headers["pitcrew.dlq.reason"],
        "processing failed: plan does not exist"
    );
    assert_eq!(letters[0].headers["pitcrew.dlq.offset"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_size_limit_is_dead_lettered_with_its_headers_and_the_loop_goes_on() {
    let mut cfg = setup("oversize").await;
    cfg.kafka.max_message_bytes = 2_000;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    let topic = cfg.topics.events.name.clone();
    // A valid event, padded past the limit with a label.
    let mut big = examples::event(pitcrew_contract::EventKind::NetLink);
    big.labels.insert("padding".into(), "x".repeat(4_000));
    let headers = pitcrew_bus::rdkafka::message::OwnedHeaders::new().insert(
        pitcrew_bus::rdkafka::message::Header {
            key: "traceparent",
            value: Some("00-big-01"),
        },
    );
    producer
        .send_with_headers(&topic, "n1", &encode(&big), headers)
        .await
        .unwrap();
    let small = encode(&examples::event(pitcrew_contract::EventKind::NetLink));
    producer.send(&topic, "n2", &small).await.unwrap();
    let consumer = fresh_consumer(&cfg.kafka, &topic, metrics.clone());
    let dlq = DeadLetterWriter::new(producer.clone(), &cfg.topics.dlq.name, "t", metrics.clone());
    let mut handled = Vec::new();
    consume_until(&consumer, &dlq, 1, |_, origin| {
        handled.push(origin.offset);
        Ok(())
    })
    .await;
    assert_eq!(handled, [1], "only the event within the limit is handled");
    let letters = read_all(&cfg.topics.dlq.name, "read_committed", 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers["pitcrew.dlq.reason_kind"], "oversize");
    assert_eq!(letters[0].headers["traceparent"], "00-big-01");
    assert_eq!(letters[0].key, b"n1");
    assert_eq!(letters[0].payload, encode(&big));
}

/// Runs the helper consumer process and returns what it printed once it
/// processed a message, and the child.
fn spawn_consumer(topic: &str, group: &str, mode: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew-consume-one"))
        .args([kafka(), topic, group, mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("helper printed").unwrap();
    if mode == "commit" {
        assert_eq!(lines.next().unwrap().unwrap(), "committed");
    }
    (child, line)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_after_processing_but_before_commit_gets_the_message_again() {
    let cfg = setup("redeliver").await;
    let producer = Producer::new(&cfg.kafka, BusMetrics::default()).unwrap();
    let topic = cfg.topics.events.name.clone();
    producer.send(&topic, "n1", b"first").await.unwrap();
    producer.send(&topic, "n1", b"second").await.unwrap();
    let group = unique("g");

    // Processed, offset stored, then SIGKILL before any commit.
    let (mut child, line) = spawn_consumer(&topic, &group, "hang-after-processed");
    assert_eq!(line, "processed offset=0 payload=first");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(committed(&group, &topic), None, "nothing was committed");

    // The next member of the group gets the same message again.
    let commit_one = || {
        let (t, g) = (topic.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            let (child, line) = spawn_consumer(&t, &g, "commit");
            let _ = child.wait_with_output();
            line
        })
    };
    assert_eq!(
        commit_one().await.unwrap(),
        "processed offset=0 payload=first"
    );
    assert_eq!(committed(&group, &topic), Some(1));

    // And once committed, it is not delivered a third time.
    assert_eq!(
        commit_one().await.unwrap(),
        "processed offset=1 payload=second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_transaction_is_invisible_and_commits_no_offsets() {
    let cfg = setup("txn").await;
    let producer = Producer::new(&cfg.kafka, BusMetrics::default()).unwrap();
    let input = cfg.topics.events.name.clone();
    let output = cfg.topics.alerts.name.clone();
    for i in 0..3 {
        producer
            .send(&input, "n1", format!("in-{i}").as_bytes())
            .await
            .unwrap();
    }
    let group = unique("rules");
    let metrics = BusMetrics::default();
    let stage = TransactionalStage::new(
        &cfg.kafka,
        &group,
        &unique("txn"),
        &[&input],
        metrics.clone(),
    )
    .await
    .unwrap();

    let batch = tokio::time::timeout(
        Duration::from_secs(60),
        stage.next_batch(10, Duration::from_millis(500)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(batch.len(), 3);
    let outputs: Vec<Output> = batch
        .iter()
        .map(|m| Output {
            topic: output.clone(),
            key: "k".to_owned(),
            payload: [b"out-".as_slice(), m.payload().unwrap()].concat(),
        })
        .collect();
    let mut txn = stage.begin(&batch).unwrap();
    for o in &outputs {
        txn.produce(o).unwrap();
    }
    txn.flush_outputs().await.unwrap();
    txn.abort().await.unwrap();

    // Written to the log, but invisible to read_committed.
    let uncommitted = read_all(&output, "read_uncommitted", 3);
    assert_eq!(
        uncommitted.len(),
        3,
        "the aborted outputs were really written"
    );
    assert!(read_all(&output, "read_committed", 0).is_empty());
    assert_eq!(committed(&group, &input), None, "no input offset committed");

    // The stage was rewound: the same inputs come again, and this time the
    // transaction commits outputs and offsets together.
    let again = tokio::time::timeout(
        Duration::from_secs(30),
        stage.next_batch(10, Duration::from_millis(500)),
    )
    .await
    .unwrap()
    .unwrap();
    let payloads: Vec<&[u8]> = again.iter().map(|m| m.payload().unwrap()).collect();
    assert_eq!(payloads, [b"in-0".as_slice(), b"in-1", b"in-2"]);
    let mut txn = stage.begin(&again).unwrap();
    for o in &outputs {
        txn.produce(o).unwrap();
    }
    txn.commit().await.unwrap();
    let visible = read_all(&output, "read_committed", 3);
    let visible: Vec<Vec<u8>> = visible.into_iter().map(|seen| seen.payload).collect();
    assert_eq!(
        visible,
        [
            b"out-in-0".to_vec(),
            b"out-in-1".to_vec(),
            b"out-in-2".to_vec()
        ]
    );
    assert_eq!(committed(&group, &input), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_failures_are_returned_not_swallowed() {
    let mut cfg = config(&unique("fail"));
    cfg.kafka.producer.delivery_timeout_ms = 2_000;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    // The broker does not auto-create topics; this one was never created.
    let err = producer
        .send("pitcrew.no-such-topic", "n1", b"x")
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Produce { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("produce to `pitcrew.no-such-topic` failed"),
        "{err}"
    );
    let mut reg = prometheus_registry();
    metrics.register(&mut reg);
    let text = encode_registry(&reg);
    assert!(
        text.contains("pitcrew_bus_produce_errors_total{topic=\"pitcrew.no-such-topic\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_broker_answers_metadata() {
    let found = eventually(Duration::from_secs(30), || async {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka())
            .create()
            .ok()?;
        let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        (!md.brokers().is_empty()).then_some(md.brokers().len())
    })
    .await;
    assert_eq!(found, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_lag_is_measured_per_partition() {
    let cfg = setup("lag").await;
    let metrics = BusMetrics::default();
    let producer = Producer::new(&cfg.kafka, metrics.clone()).unwrap();
    let topic = cfg.topics.events.name.clone();
    for i in 0..5 {
        producer
            .send(&topic, "n1", format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    let consumer = fresh_consumer(&cfg.kafka, &topic, metrics.clone());
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        consumer.processed(&m).unwrap();
    }
    let lag = tokio::task::block_in_place(|| consumer.record_lag(Duration::from_secs(10))).unwrap();
    assert_eq!(lag, [(topic.clone(), 0, 3)]);
    let mut reg = prometheus_registry();
    metrics.register(&mut reg);
    let text = encode_registry(&reg);
    assert!(
        text.contains(&format!(
            "pitcrew_bus_consumer_lag_messages{{topic=\"{topic}\",partition=\"0\"}} 3"
        )),
        "{text}"
    );
}
