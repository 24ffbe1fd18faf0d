//! Kubernetes node conditions as events: `Ready` and the conditions
//! node-problem-detector sets (`KernelDeadlock`, `GpuProblem`...), read
//! from the API server through kube-rs (read-only: a GET of this node's
//! object, [`NodeReader`]).
//!
//! Which events a read gives (`node.condition`):
//! - on the first read, the conditions that say something is wrong:
//!   `Ready` not `True`, and any other condition that is `True` (problem
//!   conditions are phrased so that `True` is bad);
//! - afterwards, every change of a condition's status or reason.
//!
//! The token: a token file (the kubelet rotates a projected service-account
//! token in place) is read when the client is built, trimmed as client-go
//! trims it (kube-rs would send a trailing newline and fail), and the client
//! is built again, reading the file again, once it is a minute old (as
//! kube-rs and client-go refresh) and at once when a read is refused with
//! 401. Neither the token nor the client's configuration is in a Debug or
//! an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use pitcrew_contract::{
    deterministic_id, ConditionStatus, Event, EventData, NodeCondition, Source, Timestamp,
};

/// Why the API server could not be read (retryable: it may be restarting).
#[derive(Debug, thiserror::Error)]
#[error("kubernetes api {what}: {reason}")]
pub struct K8sError {
    pub what: String,
    pub reason: String,
    /// The server refused the token (HTTP 401).
    pub unauthorized: bool,
}

fn err(what: &str, reason: impl ToString) -> K8sError {
    K8sError {
        what: what.to_owned(),
        reason: reason.to_string(),
        unauthorized: false,
    }
}

/// An error with its causes, for messages (a transport error's own says
/// little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// How to reach the API server: a kube-rs client configuration.
#[derive(Clone)]
pub struct KubeAccess {
    config: kube::Config,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("cluster_url", &self.config.cluster_url.to_string())
            .finish_non_exhaustive()
    }
}

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum BearerToken {
    /// A token given once (a static setup, tests).
    Fixed(crate::ipmi::Secret),
    /// A file the token is read from, and read again as it rotates.
    File(PathBuf),
}

impl KubeAccess {
    /// The pod's own service account (the agent as a DaemonSet):
    /// `KUBERNETES_SERVICE_HOST`/`PORT`, the mounted CA and token file.
    pub fn in_cluster() -> Result<KubeAccess, K8sError> {
        kube::Config::incluster()
            .map(|config| KubeAccess { config })
            .map_err(|e| err("in-cluster config", chain(&e)))
    }

    /// An API server at `url` (`https://host:port`) whose certificate is
    /// checked against every certificate in `ca_file`.
    pub fn new(url: &str, token: BearerToken, ca_file: &Path) -> Result<KubeAccess, K8sError> {
        let uri = url.parse::<http::Uri>().map_err(|e| err("url", e))?;
        let mut config = kube::Config::new(uri);
        let pem = std::fs::read(ca_file).map_err(|e| err("ca file", e.kind()))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| err("ca file", e))?;
        let der = certs
            .iter()
            .map(|c| c.to_der().map_err(|e| err("ca file", e)))
            .collect::<Result<Vec<_>, _>>()?;
        config.root_cert = Some(der);
        match token {
            BearerToken::Fixed(t) => {
                config.auth_info.token = Some(secrecy::SecretString::from(t.expose().to_owned()));
            }
            BearerToken::File(path) => {
                config.auth_info.token_file = Some(path.to_string_lossy().into_owned());
            }
        }
        Ok(KubeAccess { config })
    }
}

/// Reads one Node object through kube-rs: GET, nothing else. The collector
/// loop is synchronous, so the reader drives its client on a runtime of
/// its own (one thread: the caller's).
pub struct NodeReader {
    access: KubeAccess,
    runtime: tokio::runtime::Runtime,
    /// The client and when it was built.
    client: Option<(kube::Client, Instant)>,
}

/// How old a client built from a token file may get before it is built
/// again with the file read again.
const TOKEN_FILE_REFRESH: Duration = Duration::from_secs(60);

impl std::fmt::Debug for NodeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeReader")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl NodeReader {
    /// A reader whose client is built now: a token file that cannot be
    /// read is said at start, not at the first read.
    pub fn new(access: KubeAccess) -> Result<NodeReader, K8sError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err("runtime", e))?;
        let mut reader = NodeReader {
            access,
            runtime,
            client: None,
        };
        reader.client()?;
        Ok(reader)
    }

    fn client(&mut self) -> Result<kube::Client, K8sError> {
        let from_file = self.access.config.auth_info.token_file.is_some();
        if let Some((c, built)) = &self.client {
            if !from_file || built.elapsed() < TOKEN_FILE_REFRESH {
                return Ok(c.clone());
            }
        }
        let mut config = self.access.config.clone();
        if let Some(file) = config.auth_info.token_file.take() {
            let token = std::fs::read_to_string(&file)
                .map_err(|e| err("token file", format!("{file}: {}", e.kind())))?;
            config.auth_info.token = Some(secrecy::SecretString::from(token.trim().to_owned()));
        }
        // The client's request buffer is a task on this runtime.
        let _in_runtime = self.runtime.enter();
        let client = kube::Client::try_from(config).map_err(|e| err("client", chain(&e)))?;
        self.client = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// The Node object `name`, as JSON. Refused with 401 (the token
    /// rotated since the client read it), the client is built again, which
    /// reads the token file again, and the read is tried once more.
    pub fn node(&mut self, name: &str, timeout: Duration) -> Result<serde_json::Value, K8sError> {
        match self.get(name, timeout) {
            Err(e) if e.unauthorized => {
                self.client = None;
                self.get(name, timeout)
            }
            read => read,
        }
    }

    fn get(&mut self, name: &str, timeout: Duration) -> Result<serde_json::Value, K8sError> {
        let client = self.client()?;
        let what = format!("GET node {name}");
        let nodes: Api<Node> = Api::all(client);
        let read = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, nodes.get(name)).await });
        let node = match read {
            Err(_) => return Err(err(&what, format!("no answer in {} s", timeout.as_secs()))),
            Ok(Err(kube::Error::Api(status))) => {
                return Err(K8sError {
                    unauthorized: status.code == 401,
                    ..err(&what, format!("{} {}", status.code, status.reason))
                })
            }
            Ok(Err(e)) => return Err(err(&what, chain(&e))),
            Ok(Ok(node)) => node,
        };
        serde_json::to_value(&node).map_err(|e| err("node object", e))
    }
}

/// Node condition tracking for one node.
#[derive(Debug)]
pub struct NodeConditions {
    node: String,
    last: HashMap<String, (String, Option<String>)>,
}

impl NodeConditions {
    pub fn new(node: &str) -> NodeConditions {
        NodeConditions {
            node: node.to_owned(),
            last: HashMap::new(),
        }
    }

    /// Events for one read of the Node object (JSON).
    pub fn events(&mut self, v: &serde_json::Value, now: Timestamp) -> Vec<Event> {
        let conditions = v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for c in conditions {
            let Some(kind) = c["type"].as_str() else {
                continue;
            };
            let status_text = c["status"].as_str().unwrap_or("Unknown").to_owned();
            let reason = c["reason"].as_str().map(str::to_owned);
            let status = match status_text.as_str() {
                "True" => ConditionStatus::True,
                "False" => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            let previous = self
                .last
                .insert(kind.to_owned(), (status_text.clone(), reason.clone()));
            let news = match previous {
                Some(p) => p != (status_text.clone(), reason.clone()),
                None => {
                    if kind == "Ready" {
                        status != ConditionStatus::True
                    } else {
                        status == ConditionStatus::True
                    }
                }
            };
            if !news {
                continue;
            }
            let transition = c["lastTransitionTime"].as_str().unwrap_or("");
            out.push(Event {
                id: deterministic_id(
                    "k8s",
                    &[
                        &self.node,
                        kind,
                        &status_text,
                        reason.as_deref().unwrap_or(""),
                        transition,
                    ],
                ),
                node: self.node.clone(),
                time: Timestamp::parse_rfc3339(transition).unwrap_or(now),
                source: Source::K8s,
                gpu: None,
                count: 1,
                labels: Default::default(),
                data: EventData::NodeCondition(NodeCondition {
                    condition: kind.to_owned(),
                    status,
                    reason,
                    message: c["message"].as_str().map(|m| m.chars().take(512).collect()),
                }),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: &str) -> serde_json::Value {
        serde_json::from_str(&format!(
            r#"{{"kind":"Node","metadata":{{"name":"n17"}},"status":{{"conditions":[{conditions}]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn first_read_reports_problems_then_changes() {
        let mut c = NodeConditions::new("n17");
        let healthy = r#"{"type":"Ready","status":"True","reason":"KubeletReady","lastTransitionTime":"2026-11-24T16:00:00Z"},{"type":"MemoryPressure","status":"False"}"#;
        assert!(c.events(&node(healthy), Timestamp::EPOCH).is_empty());
        let down = r#"{"type":"Ready","status":"False","reason":"KubeletNotReady","lastTransitionTime":"2026-11-24T16:05:00Z"},{"type":"MemoryPressure","status":"False"}"#;
        let ev = c.events(&node(down), Timestamp::EPOCH);
        assert_eq!(ev.len(), 1);
        match &ev[0].data {
            EventData::NodeCondition(n) => {
                assert_eq!(
                    (n.condition.as_str(), n.status, n.reason.as_deref()),
                    ("Ready", ConditionStatus::False, Some("KubeletNotReady"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ev[0].time,
            Timestamp::parse_rfc3339("2026-11-24T16:05:00Z").unwrap()
        );
        assert!(c.events(&node(down), Timestamp::EPOCH).is_empty());
    }

    #[test]
    fn problem_conditions_that_are_true_on_first_read() {
        let mut c = NodeConditions::new("n17");
        let ev = c.events(&node(r#"{"type":"Ready","status":"True"},{"type":"KernelDeadlock","status":"True","reason":"DockerHung"}"#), Timestamp::EPOCH);
        assert_eq!(ev.len(), 1);
        // An object without conditions says nothing.
        assert!(c
            .events(&serde_json::json!({"kind": "Node"}), Timestamp::EPOCH)
            .is_empty());
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        config.auth_info.token = Some(secrecy::SecretString::from("sekrit-token".to_owned()));
        let a = KubeAccess { config };
        let shown = format!("{a:?}");
        assert!(shown.contains("127.0.0.1:6443"), "{shown}");
        assert!(!shown.contains("sekrit"), "{shown}");
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let e = KubeAccess::new(
            "https://127.0.0.1:6443",
            BearerToken::Fixed(crate::ipmi::Secret::new("t")),
            Path::new("/nonexistent/ca.crt"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("kubernetes api ca file"), "{e}");
    }
}
