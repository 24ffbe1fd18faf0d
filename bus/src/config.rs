//! Kafka configuration: TOML, then environment overrides.
//!
//! ```toml
//! [kafka]
//! brokers = "kafka-0:9092,kafka-1:9092"
//!
//! [kafka.security]
//! protocol = "sasl_ssl"
//! ca_file = "/etc/pitcrew/kafka-ca.pem"
//! sasl_mechanism = "SCRAM-SHA-512"
//! sasl_username = "pitcrew"
//! sasl_password_file = "/run/secrets/kafka-password"
//!
//! [kafka.librdkafka]           # passed through as-is
//! "socket.keepalive.enable" = "true"
//! ```
//!
//! Any setting can be overridden from the environment with
//! `PITCREW__<SECTION>__<KEY>` (double underscores separate the path, case
//! is ignored): `PITCREW__KAFKA__BROKERS=127.0.0.1:9092`. Secrets are never
//! values in the file or the environment override itself: the file or
//! environment names a *file* or an *environment variable* that holds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::BusError;
pub use pitcrew_config::Secret;

/// The whole `[kafka]` and `[topics]` part of a pitcrew config file. Other
/// sections belong to the stages and are ignored here.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BusConfig {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
}

/// Connection and client settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    pub client_id: String,
    /// Messages larger than this are dead-lettered, not decoded.
    pub max_message_bytes: usize,
    pub security: Security,
    pub producer: ProducerConfig,
    pub consumer: ConsumerConfig,
    /// Raw librdkafka properties, applied last. Numbers and booleans are
    /// taken as their text (`linger.ms = 5` is `"5"`).
    #[serde(deserialize_with = "scalars_as_strings")]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            client_id: "pitcrew".to_owned(),
            max_message_bytes: pitcrew_contract::DEFAULT_MAX_MESSAGE_BYTES,
            security: Security::default(),
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

/// TLS and SASL, mapped onto librdkafka's `security.protocol`, `ssl.*` and
/// `sasl.*` properties.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Password of `key_file`, read from this file.
    pub key_password_file: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`...
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// Read the SASL password from this file (a mounted Secret)...
    pub sasl_password_file: Option<PathBuf>,
    /// ...or from this environment variable.
    pub sasl_password_env: Option<String>,
}

/// Producer tuning.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// Messages enqueued but not yet acknowledged, at most. Senders wait
    /// when it is reached, so memory stays bounded when Kafka is slow.
    pub max_in_flight: usize,
    pub linger_ms: u32,
    /// Give up on a message after this long and report it as failed.
    pub delivery_timeout_ms: u32,
    /// `none`, `gzip`, `snappy`, `lz4`, `zstd` (as built).
    pub compression: String,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_in_flight: 100_000,
            linger_ms: 5,
            delivery_timeout_ms: 30_000,
            compression: "none".to_owned(),
        }
    }
}

/// Consumer tuning.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    pub session_timeout_ms: u32,
    /// Processed offsets are committed at this interval (and at shutdown).
    pub commit_interval_ms: u32,
    /// `earliest` or `latest`, for a group with no committed offset.
    pub auto_offset_reset: String,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            session_timeout_ms: 10_000,
            commit_interval_ms: 1_000,
            auto_offset_reset: "earliest".to_owned(),
        }
    }
}

/// One topic's name and creation settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `None`: the broker's default.
    pub retention_ms: Option<i64>,
    /// Log compaction (`cleanup.policy=compact`): the state topic.
    pub compact: bool,
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec {
            name: String::new(),
            partitions: 12,
            retention_ms: None,
            compact: false,
        }
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// pitcrew's topics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    pub replication_factor: i32,
    pub events: TopicSpec,
    pub alerts: TopicSpec,
    pub actions: TopicSpec,
    pub audit: TopicSpec,
    pub state: TopicSpec,
    pub dlq: TopicSpec,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        let spec = |name: &str, partitions, days: Option<i64>, compact| TopicSpec {
            name: name.to_owned(),
            partitions,
            retention_ms: days.map(|d| d * DAY_MS),
            compact,
        };
        TopicsConfig {
            replication_factor: 3,
            events: spec("pitcrew.events", 12, Some(7), false),
            alerts: spec("pitcrew.alerts", 6, Some(30), false),
            actions: spec("pitcrew.actions", 6, Some(30), false),
            audit: spec("pitcrew.audit", 6, Some(365), false),
            state: spec("pitcrew.state", 6, None, true),
            dlq: spec("pitcrew.dlq", 3, Some(14), false),
        }
    }
}

impl TopicsConfig {
    /// Every topic, in a fixed order.
    pub fn all(&self) -> [&TopicSpec; 6] {
        [
            &self.events,
            &self.alerts,
            &self.actions,
            &self.audit,
            &self.state,
            &self.dlq,
        ]
    }

    /// The same topics for a single broker: one replica and one partition
    /// each (local development, tests, the demo).
    pub fn single_broker(&self) -> TopicsConfig {
        let mut t = self.clone();
        t.replication_factor = 1;
        for spec in t.all_mut() {
            spec.partitions = 1;
        }
        t
    }

    /// The same topics with `prefix` in front of every name (tests use a
    /// fresh prefix per test so they never see each other's data).
    pub fn with_prefix(&self, prefix: &str) -> TopicsConfig {
        let mut t = self.clone();
        for spec in t.all_mut() {
            spec.name = format!("{prefix}{}", spec.name);
        }
        t
    }

    fn all_mut(&mut self) -> [&mut TopicSpec; 6] {
        [
            &mut self.events,
            &mut self.alerts,
            &mut self.actions,
            &mut self.audit,
            &mut self.state,
            &mut self.dlq,
        ]
    }
}

impl BusConfig {
    /// Parses TOML text, then applies `PITCREW__...` overrides from `env`.
    /// `origin` names the text in errors (a path, or `<embedded>`).
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BusConfig, BusError> {
        let located = |e: &toml::de::Error| {
            BusError::Config(pitcrew_config::ConfigError::from_toml(origin, text, e).to_string())
        };
        let file: toml::Table = toml::from_str(text).map_err(|e| located(&e))?;
        // The file alone first: a wrong type or unknown key is reported at
        // its line and column.
        toml::from_str::<BusConfig>(text).map_err(|e| located(&e))?;
        // Layer file and environment over the defaults, so a partial table
        // (`[topics.events] partitions = 48`) keeps the other defaults of
        // that table (its name). Other stages' sections are theirs.
        let mut doc = toml::Table::try_from(BusConfig::default())
            .map_err(|e| BusError::Config(format!("defaults: {e}")))?;
        pitcrew_config::merge(&mut doc, file);
        let applied = pitcrew_config::apply_env_overrides(&mut doc, env, &["kafka", "topics"])
            .map_err(|e| BusError::Config(e.to_string()))?;
        BusConfig::deserialize(toml::Value::Table(doc)).map_err(|e| {
            BusError::Config(format!(
                "{origin} with the environment overrides {}: {}",
                applied.join(", "),
                e.message()
            ))
        })
    }

    /// Reads a config file (or only the environment when `path` is None).
    pub fn load(path: Option<&Path>) -> Result<BusConfig, BusError> {
        let (text, origin) =
            pitcrew_config::read(path).map_err(|e| BusError::Config(e.to_string()))?;
        BusConfig::from_toml(&text, &origin, std::env::vars())
    }
}

/// Prefix of environment overrides.
pub use pitcrew_config::ENV_PREFIX;

fn scalars_as_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            toml::Value::Integer(i) => Ok((k, i.to_string())),
            toml::Value::Float(f) => Ok((k, f.to_string())),
            toml::Value::Boolean(b) => Ok((k, b.to_string())),
            _ => Err(serde::de::Error::custom(format_args!(
                "kafka.librdkafka.{k}: expected a string, number or boolean"
            ))),
        })
        .collect()
}

impl KafkaConfig {
    /// The librdkafka properties every client shares: brokers, client id,
    /// security. Never log the result: it holds secrets.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, BusError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set(
                "message.max.bytes",
                (self.max_message_bytes.max(1_000_000) + 1024).to_string(),
            )
            .set("log_level", "4");
        let s = &self.security;
        if let Some(p) = &s.protocol {
            let p = p.to_ascii_lowercase();
            if !matches!(
                p.as_str(),
                "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
            ) {
                return Err(BusError::Config(format!(
                    "kafka.security.protocol `{p}`: expected plaintext, ssl, sasl_plaintext or sasl_ssl"
                )));
            }
            c.set("security.protocol", p);
        }
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(p) = &s.ca_file {
            c.set("ssl.ca.location", path(p));
        }
        if let Some(p) = &s.cert_file {
            c.set("ssl.certificate.location", path(p));
        }
        if let Some(p) = &s.key_file {
            c.set("ssl.key.location", path(p));
        }
        if let Some(p) = &s.key_password_file {
            c.set(
                "ssl.key.password",
                Secret::from_file("ssl key password", p)?.expose(),
            );
        }
        if let Some(m) = &s.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &s.sasl_username {
            c.set("sasl.username", u);
        }
        let password = match (&s.sasl_password_file, &s.sasl_password_env) {
            (Some(_), Some(_)) => {
                return Err(BusError::Config(
                    "kafka.security: set sasl_password_file or sasl_password_env, not both"
                        .to_owned(),
                ))
            }
            (Some(p), None) => Some(Secret::from_file("sasl password", p)?),
            (None, Some(v)) => Some(Secret::from_env("sasl password", v)?),
            (None, None) => None,
        };
        if let Some(pw) = password {
            c.set("sasl.password", pw.expose());
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v);
        }
        Ok(c)
    }
}

impl KafkaConfig {
    /// A consumer in `group_id` that reads only committed transactions and
    /// never stores an offset by itself: callers store after processing.
    pub(crate) fn group_consumer_config(&self, group_id: &str) -> Result<ClientConfig, BusError> {
        let mut c = self.client_config()?;
        c.set("group.id", group_id)
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set(
                "session.timeout.ms",
                self.consumer.session_timeout_ms.to_string(),
            )
            .set("auto.offset.reset", &self.consumer.auto_offset_reset)
            .set("enable.partition.eof", "false");
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_name_every_topic_and_compact_state() {
        let c = BusConfig::from_toml("", "<test>", env(&[])).unwrap();
        let names: Vec<_> = c.topics.all().iter().map(|t| t.name.clone()).collect();
        assert_eq!(
            names,
            [
                "pitcrew.events",
                "pitcrew.alerts",
                "pitcrew.actions",
                "pitcrew.audit",
                "pitcrew.state",
                "pitcrew.dlq"
            ]
        );
        assert!(c.topics.state.compact);
        assert!(!c.topics.events.compact);
    }

    #[test]
    fn env_overrides_file_values() {
        let text = "[kafka]\nbrokers = \"a:1\"\n[kafka.producer]\nlinger_ms = 5\n";
        let c = BusConfig::from_toml(
            text,
            "<test>",
            env(&[
                ("PITCREW__KAFKA__BROKERS", "b:2"),
                ("PITCREW__KAFKA__PRODUCER__LINGER_MS", "0"),
                ("PITCREW__TOPICS__EVENTS__PARTITIONS", "48"),
                (
                    "PITCREW__KAFKA__LIBRDKAFKA__socket.keepalive.enable",
                    "true",
                ),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.producer.linger_ms, 0);
        assert_eq!(c.topics.events.partitions, 48);
        assert_eq!(c.topics.events.name, "pitcrew.events");
        assert_eq!(
            c.kafka
                .librdkafka
                .get("socket.keepalive.enable")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn a_partial_table_keeps_the_other_defaults() {
        let c =
            BusConfig::from_toml("[topics.state]\npartitions = 48\n", "<test>", env(&[])).unwrap();
        assert_eq!(c.topics.state.partitions, 48);
        assert_eq!(c.topics.state.name, "pitcrew.state");
        assert!(c.topics.state.compact);
    }

    #[test]
    fn unknown_settings_are_errors_with_origin() {
        let err = BusConfig::from_toml("[kafka]\nbrokerz = \"x\"\n", "pitcrew.toml", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pitcrew.toml") && err.contains("brokerz"),
            "{err}"
        );
    }

    #[test]
    fn security_maps_to_librdkafka_and_secret_stays_hidden() {
        let dir = std::env::temp_dir().join(format!("pitcrew-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let text = format!(
            "[kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password_file = \"{}\"\nca_file = \"/ca.pem\"\n",
            pw.display()
        );
        let c = BusConfig::from_toml(&text, "<test>", env(&[])).unwrap();
        let rd = c.kafka.client_config().unwrap();
        assert_eq!(rd.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(rd.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(rd.get("sasl.password"), Some("hunter2"));
        assert_eq!(rd.get("ssl.ca.location"), Some("/ca.pem"));
        let shown = format!("{:?}", c.kafka);
        assert!(!shown.contains("hunter2"));
        let secret = Secret::from_file("x", &pw).unwrap();
        assert_eq!(format!("{secret:?} {secret}"), "Secret(***) ***");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_secret_is_a_clear_error() {
        let text = "[kafka.security]\nsasl_password_env = \"PITCREW_TEST_SURELY_UNSET\"\n";
        let c = BusConfig::from_toml(text, "<test>", env(&[])).unwrap();
        let err = c.kafka.client_config().unwrap_err().to_string();
        assert_eq!(
            err,
            "kafka secret `sasl password`: environment variable PITCREW_TEST_SURELY_UNSET is not set"
        );
    }

    /// The example file documents the defaults: keep the two equal.
    #[test]
    fn example_file_parses_and_matches_the_defaults() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/pitcrew.example.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let c = BusConfig::from_toml(&text, path, env(&[])).unwrap();
        let d = BusConfig::default();
        assert_eq!(c.topics.all(), d.topics.all());
        assert_eq!(c.topics.replication_factor, d.topics.replication_factor);
        assert_eq!(c.kafka.brokers, d.kafka.brokers);
        assert_eq!(c.kafka.max_message_bytes, d.kafka.max_message_bytes);
        assert_eq!(
            c.kafka.producer.max_in_flight,
            d.kafka.producer.max_in_flight
        );
        assert_eq!(c.kafka.producer.linger_ms, d.kafka.producer.linger_ms);
        assert_eq!(
            c.kafka.producer.delivery_timeout_ms,
            d.kafka.producer.delivery_timeout_ms
        );
        assert_eq!(
            c.kafka.consumer.commit_interval_ms,
            d.kafka.consumer.commit_interval_ms
        );
        assert_eq!(
            c.kafka.consumer.session_timeout_ms,
            d.kafka.consumer.session_timeout_ms
        );
    }

    #[test]
    fn bad_protocol_is_rejected() {
        let c = BusConfig::from_toml("[kafka.security]\nprotocol = \"tls\"\n", "<t>", env(&[]))
            .unwrap();
        assert!(c.kafka.client_config().is_err());
    }

    #[test]
    fn a_problem_in_the_file_is_reported_at_its_line_and_column() {
        let e = BusConfig::from_toml(
            "[kafka]\nbrokers = \"b:9092\"\nlinger = 3\n",
            "pitcrew.toml",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pitcrew.toml:3:1: unknown field `linger`"),
            "{e}"
        );
        let e = BusConfig::from_toml(
            "",
            "pitcrew.toml",
            env(&[("PITCREW__KAFKA__CLIENT_ID", "[")]),
        )
        .map(|c| c.kafka.client_id);
        assert_eq!(
            e.unwrap(),
            "[",
            "an override is a string where it is no other scalar"
        );
    }
}
