//! Shared helpers of the integration tests.
//!
//! [`kafka`] gives the bootstrap address of a real Apache Kafka: the one
//! `cargo xtask test` started (`PITCREW_TEST_KAFKA`), or, when a test
//! binary runs alone, one this process starts through the harness. Tests
//! that need Kafka never skip: without either, they fail with the reason.

use std::sync::OnceLock;
use std::time::Duration;

use pitcrew_bus::{BusConfig, BusMetrics, Consumer, KafkaConfig, TopicsConfig};
use pitcrew_harness::kafka::KafkaBroker;

/// Environment variable naming an already running broker.
pub const KAFKA_ENV: &str = "PITCREW_TEST_KAFKA";
/// Environment variable naming that broker's SASL_PLAINTEXT listener.
pub const KAFKA_SASL_ENV: &str = "PITCREW_TEST_KAFKA_SASL";

struct Shared {
    bootstrap: String,
    sasl_bootstrap: String,
    // Kept for the life of the process; the harness's supervisor stops the
    // broker when the process exits.
    _owned: Option<KafkaBroker>,
}

/// The bootstrap address of the test broker.
pub fn kafka() -> &'static str {
    &shared().bootstrap
}

/// The test broker's SASL_PLAINTEXT listener (PLAIN; user and password in
/// [`pitcrew_harness::kafka`]).
pub fn kafka_sasl() -> &'static str {
    &shared().sasl_bootstrap
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        match (std::env::var(KAFKA_ENV), std::env::var(KAFKA_SASL_ENV)) {
            (Ok(b), Ok(s)) if !b.is_empty() && !s.is_empty() => Shared {
                bootstrap: b,
                sasl_bootstrap: s,
                _owned: None,
            },
            _ => {
                #[allow(clippy::panic)] // a test helper: failing loudly is the point
                let broker = KafkaBroker::start().unwrap_or_else(|e| {
                    panic!(
                        "no {KAFKA_ENV} and starting a broker failed (run `cargo xtask test`): {e}"
                    )
                });
                Shared {
                    bootstrap: broker.bootstrap().to_owned(),
                    sasl_bootstrap: broker.sasl_bootstrap().to_owned(),
                    _owned: Some(broker),
                }
            }
        }
    })
}

/// A prefix no other test (or run) uses, for topic and group names.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "t{}-{name}-{}-",
        nanos % 1_000_000_000_000,
        std::process::id()
    )
}

/// A bus config pointing at the test broker, with single-replica topics
/// named with `prefix`.
pub fn config(prefix: &str) -> BusConfig {
    let mut c = BusConfig {
        kafka: KafkaConfig {
            brokers: kafka().to_owned(),
            ..KafkaConfig::default()
        },
        ..BusConfig::default()
    };
    c.kafka.consumer.session_timeout_ms = 6_000;
    c.kafka.consumer.commit_interval_ms = 200;
    c.kafka.producer.linger_ms = 1;
    c.topics = TopicsConfig::default().with_prefix(prefix).single_broker();
    c
}

/// A consumer of `topic` in a group of its own.
/// A pitcrew config file (TOML) for `cfg`'s broker and topics, for tests
/// that run the binary: single-broker topics, short sessions, little linger.
pub fn config_file_text(cfg: &BusConfig) -> String {
    let t = &cfg.topics;
    format!(
        "[kafka]\nbrokers = \"{}\"\n[kafka.consumer]\nsession_timeout_ms = 6000\n[kafka.producer]\nlinger_ms = 1\n\
         [topics]\nreplication_factor = 1\n[topics.events]\nname = \"{}\"\npartitions = {}\n[topics.alerts]\nname = \"{}\"\n\
         [topics.actions]\nname = \"{}\"\n[topics.audit]\nname = \"{}\"\n[topics.state]\nname = \"{}\"\ncompact = true\n[topics.dlq]\nname = \"{}\"\n",
        cfg.kafka.brokers,
        t.events.name,
        t.events.partitions,
        t.alerts.name,
        t.actions.name,
        t.audit.name,
        t.state.name,
        t.dlq.name
    )
}

pub fn fresh_consumer(kafka: &KafkaConfig, topic: &str, metrics: BusMetrics) -> Consumer {
    #[allow(clippy::expect_used)] // a test helper: failing loudly is the point
    Consumer::new(kafka, &unique("g"), &[topic], metrics).expect("consumer")
}

/// Retries `f` until it returns Some or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
