//! TLS/SASL settings reach librdkafka, and secrets stay out of errors: a
//! real broker's SASL_PLAINTEXT listener (mechanism PLAIN).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_bus::rdkafka::message::Message;
use pitcrew_bus::{broker_count, BusConfig, BusMetrics, Producer};
use pitcrew_harness::kafka::{SASL_PASSWORD, SASL_USER};
use pitcrew_tests::{config, fresh_consumer, kafka_sasl, unique};

/// A config for the SASL listener with the password in a file, as an
/// operator would mount a Secret.
fn sasl_config(prefix: &str, password: &str) -> (BusConfig, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{prefix}secret"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kafka-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"{}\"\n[kafka.security]\nprotocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"{SASL_USER}\"\nsasl_password_file = \"{}\"\n[kafka.producer]\ndelivery_timeout_ms = 5000\n",
        kafka_sasl(),
        file.display()
    );
    let mut cfg = BusConfig::from_toml(&text, "<test>", Vec::new()).unwrap();
    cfg.topics = config(prefix).topics;
    (cfg, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_with_a_password_file_produces_and_consumes() {
    let prefix = unique("sasl");
    let (cfg, dir) = sasl_config(&prefix, SASL_PASSWORD);
    pitcrew_bus::ensure_topics(&cfg.kafka, &cfg.topics)
        .await
        .unwrap();
    assert_eq!(broker_count(&cfg.kafka).await.unwrap(), 1);
    let producer = Producer::new(&cfg.kafka, BusMetrics::default()).unwrap();
    producer
        .send(&cfg.topics.events.name, "n1", b"over sasl")
        .await
        .unwrap();
    let consumer = fresh_consumer(&cfg.kafka, &cfg.topics.events.name, BusMetrics::default());
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload(), Some(&b"over sasl"[..]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_without_showing_it() {
    let prefix = unique("saslbad");
    let wrong = "not-the-password-7f3a";
    let (cfg, dir) = sasl_config(&prefix, wrong);
    let err = broker_count(&cfg.kafka).await.unwrap_err().to_string();
    assert!(!err.contains(wrong), "{err}");
    let producer = Producer::new(&cfg.kafka, BusMetrics::default()).unwrap();
    let err = producer
        .send("pitcrew.whatever", "n1", b"x")
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!format!("{:?}", cfg.kafka).contains(wrong));
    std::fs::remove_dir_all(dir).unwrap();
}
