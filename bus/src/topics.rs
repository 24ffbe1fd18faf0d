//! Topic bootstrap: create pitcrew's topics as configured, and report
//! (never silently change) existing topics that differ.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::{BusError, KafkaConfig, TopicSpec, TopicsConfig};

/// What bootstrap found or did for one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicReport {
    pub name: String,
    pub created: bool,
    /// Differences between the existing topic and the config.
    pub warnings: Vec<String>,
}

/// Creates missing topics and checks existing ones.
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    topics: &TopicsConfig,
) -> Result<Vec<TopicReport>, BusError> {
    ensure_topic_specs(cfg, &topics.all(), topics.replication_factor).await
}

/// Creates the given topics where missing and checks the others.
pub async fn ensure_topic_specs(
    cfg: &KafkaConfig,
    specs: &[&TopicSpec],
    replication_factor: i32,
) -> Result<Vec<TopicReport>, BusError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client_config()?
        .create()
        .map_err(BusError::from_client_creation)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let retention: Vec<Option<String>> = specs
        .iter()
        .map(|s| s.retention_ms.map(|r| r.to_string()))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(s, r)| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(replication_factor),
            )
            .set(
                "cleanup.policy",
                if s.compact { "compact" } else { "delete" },
            );
            if let Some(r) = r {
                t = t.set("retention.ms", r);
            }
            t
        })
        .collect();
    let results = admin
        .create_topics(new_topics.iter(), &opts)
        .await
        .map_err(|e| BusError::Topic {
            topic: "*".to_owned(),
            reason: e.to_string(),
        })?;
    let mut reports = Vec::new();
    for (spec, result) in specs.iter().zip(results) {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = spec.partitions, compact = spec.compact, "created topic");
                reports.push(TopicReport {
                    name,
                    created: true,
                    warnings: vec![],
                });
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let warnings = check_existing(&admin, &opts, spec).await?;
                for w in &warnings {
                    tracing::warn!(topic = %name, warning = %w, "existing topic differs from config");
                }
                reports.push(TopicReport {
                    name,
                    created: false,
                    warnings,
                });
            }
            Err((name, code)) => {
                return Err(BusError::Topic {
                    topic: name,
                    reason: format!("create failed: {code}"),
                })
            }
        }
    }
    Ok(reports)
}

async fn check_existing(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    spec: &TopicSpec,
) -> Result<Vec<String>, BusError> {
    let mut warnings = Vec::new();
    let topic_err = |reason: String| BusError::Topic {
        topic: spec.name.clone(),
        reason,
    };
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&spec.name), Duration::from_secs(10))
        .map_err(|e| topic_err(format!("metadata: {e}")))?;
    if let Some(t) = metadata.topics().first() {
        let found = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
        if found != spec.partitions {
            warnings.push(format!(
                "has {found} partitions, config says {}",
                spec.partitions
            ));
        }
    }
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&spec.name)], opts)
        .await
        .map_err(|e| topic_err(format!("describe: {e}")))?;
    if let Some(Ok(resource)) = described.first() {
        let policy = resource
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .unwrap_or_default();
        let compacted = policy.split(',').any(|p| p == "compact");
        if compacted != spec.compact {
            warnings.push(format!(
                "cleanup.policy is `{policy}`, config says {}",
                if spec.compact { "compact" } else { "delete" }
            ));
        }
    }
    Ok(warnings)
}

/// The broker's `cleanup.policy` of a topic (tests and `pitcrew topics`).
pub async fn cleanup_policy(cfg: &KafkaConfig, topic: &str) -> Result<String, BusError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client_config()?
        .create()
        .map_err(BusError::from_client_creation)?;
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .map_err(|e| BusError::Topic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
    match described.first() {
        Some(Ok(r)) => Ok(r
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .unwrap_or_default()),
        Some(Err(code)) => Err(BusError::Topic {
            topic: topic.to_owned(),
            reason: code.to_string(),
        }),
        None => Err(BusError::Topic {
            topic: topic.to_owned(),
            reason: "not described".to_owned(),
        }),
    }
}

/// How many brokers the cluster has (to cap a replication factor).
pub async fn broker_count(cfg: &KafkaConfig) -> Result<i32, BusError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client_config()?
        .create()
        .map_err(BusError::from_client_creation)?;
    let md = tokio::task::spawn_blocking(move || {
        admin.inner().fetch_metadata(None, Duration::from_secs(10))
    })
    .await
    .map_err(|_| BusError::Closed)?
    .map_err(|e| BusError::consume("metadata", &e))?;
    Ok(i32::try_from(md.brokers().len()).unwrap_or(i32::MAX))
}

/// How many partitions `topic` has now (0 when it does not exist).
pub async fn partition_count(cfg: &KafkaConfig, topic: &str) -> Result<i32, BusError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client_config()?
        .create()
        .map_err(BusError::from_client_creation)?;
    let name = topic.to_owned();
    let md = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&name), Duration::from_secs(10))
    })
    .await
    .map_err(|_| BusError::Closed)?
    .map_err(|e| BusError::consume("metadata", &e))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| {
            i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)
        }))
}
