//! Kubernetes node conditions as events: `Ready` and the conditions
//! node-problem-detector sets (`KernelDeadlock`, `GpuProblem`...), read
//! from the API server (read-only: GET of this node's object).
//!
//! Which events a read gives (`node.condition`):
//! - on the first read, the conditions that say something is wrong:
//!   `Ready` not `True`, and any other condition that is `True` (problem
//!   conditions are phrased so that `True` is bad);
//! - afterwards, every change of a condition's status or reason.
//!
//! The token is held in [`KubeAccess`], whose Debug hides it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pitcrew_contract::{
    deterministic_id, ConditionStatus, Event, EventData, NodeCondition, Source, Timestamp,
};

/// Why the API server could not be read (retryable: it may be restarting).
#[derive(Debug, thiserror::Error)]
#[error("kubernetes api {what}: {reason}")]
pub struct K8sError {
    pub what: String,
    pub reason: String,
}

fn err(what: &str, reason: impl ToString) -> K8sError {
    K8sError {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// An error with its causes, for messages (reqwest's own says only
/// "error sending request").
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

/// How to reach the API server.
#[derive(Clone, Debug)]
pub struct KubeAccess {
    /// `host:port`
    pub address: String,
    pub token: BearerToken,
    pub ca_file: PathBuf,
}

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum BearerToken {
    /// A token given once (a static kubeconfig, tests).
    Fixed(crate::ipmi::Secret),
    /// A file read before every request: the kubelet rotates a projected
    /// service-account token in place (an hour's lifetime by default), so a
    /// token read once stops working.
    File(PathBuf),
}

impl BearerToken {
    /// The token to send now.
    pub fn current(&self) -> Result<crate::ipmi::Secret, K8sError> {
        match self {
            BearerToken::Fixed(t) => Ok(t.clone()),
            BearerToken::File(path) => {
                crate::ipmi::Secret::from_file("service account token", path)
                    .map_err(|e| err("service account token", e))
            }
        }
    }
}

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl KubeAccess {
    /// The pod's own service account (the agent as a DaemonSet).
    pub fn in_cluster() -> Result<KubeAccess, K8sError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            err(
                "config",
                "KUBERNETES_SERVICE_HOST is not set (not in a pod)",
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let token = BearerToken::File(PathBuf::from(format!("{SERVICE_ACCOUNT}/token")));
        // Readable now, or say so now rather than at the first read.
        token.current()?;
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(KubeAccess {
            address,
            token,
            ca_file: PathBuf::from(format!("{SERVICE_ACCOUNT}/ca.crt")),
        })
    }

    /// GETs `path` and returns the body: HTTPS with the server's
    /// certificate checked against `ca_file`, the bearer token as it is now.
    pub fn get(&self, path: &str, timeout: Duration) -> Result<String, K8sError> {
        let token = self.token.current()?;
        let ca = std::fs::read(&self.ca_file).map_err(|e| err("ca file", e.kind()))?;
        // A CA file may hold a chain: trust every certificate in it.
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| err("ca file", e))? {
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| err("tls", e))?;
        let url = format!("https://{}{path}", self.address);
        let response = client
            .get(&url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .map_err(|e| err(&format!("GET {path}"), chain(&e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            return Err(err(&format!("GET {path}"), status));
        }
        response
            .text()
            .map_err(|e| err(&format!("GET {path}"), e.without_url()))
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

    /// The API path of the node's object.
    pub fn path(k8s_node_name: &str) -> String {
        format!("/api/v1/nodes/{k8s_node_name}")
    }

    /// Events for one read of the Node object (JSON).
    pub fn events(&mut self, node_json: &str, now: Timestamp) -> Result<Vec<Event>, K8sError> {
        let v: serde_json::Value =
            serde_json::from_str(node_json).map_err(|e| err("node object", e))?;
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
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: &str) -> String {
        format!(
            r#"{{"kind":"Node","metadata":{{"name":"n17"}},"status":{{"conditions":[{conditions}]}}}}"#
        )
    }

    #[test]
    fn first_read_reports_problems_then_changes() {
        let mut c = NodeConditions::new("n17");
        let healthy = r#"{"type":"Ready","status":"True","reason":"KubeletReady","lastTransitionTime":"2026-11-24T16:00:00Z"},{"type":"MemoryPressure","status":"False"}"#;
        assert!(c
            .events(&node(healthy), Timestamp::EPOCH)
            .unwrap()
            .is_empty());
        let down = r#"{"type":"Ready","status":"False","reason":"KubeletNotReady","lastTransitionTime":"2026-11-24T16:05:00Z"},{"type":"MemoryPressure","status":"False"}"#;
        let ev = c.events(&node(down), Timestamp::EPOCH).unwrap();
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
        assert!(c.events(&node(down), Timestamp::EPOCH).unwrap().is_empty());
    }

    #[test]
    fn problem_conditions_that_are_true_on_first_read() {
        let mut c = NodeConditions::new("n17");
        let ev = c
            .events(&node(r#"{"type":"Ready","status":"True"},{"type":"KernelDeadlock","status":"True","reason":"DockerHung"}"#), Timestamp::EPOCH)
            .unwrap();
        assert_eq!(ev.len(), 1);
        assert!(c.events("not json", Timestamp::EPOCH).is_err());
    }

    #[test]
    fn the_token_stays_out_of_debug() {
        let a = KubeAccess {
            address: "127.0.0.1:6443".to_owned(),
            token: BearerToken::Fixed(crate::ipmi::Secret::new("sekrit-token")),
            ca_file: "/ca".into(),
        };
        assert!(!format!("{a:?}").contains("sekrit"));
    }

    #[test]
    fn a_token_file_is_read_again_for_every_request() {
        let dir = std::env::temp_dir().join(format!("pitcrew-k8s-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "first\n").unwrap();
        let t = BearerToken::File(file.clone());
        assert_eq!(t.current().unwrap().expose(), "first");
        // The kubelet rotated it.
        std::fs::write(&file, "second\n").unwrap();
        assert_eq!(t.current().unwrap().expose(), "second");
        std::fs::remove_file(&file).unwrap();
        let e = t.current().unwrap_err().to_string();
        assert!(e.contains("service account token"), "{e}");
    }
}
