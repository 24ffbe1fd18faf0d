//! Kubernetes through kube-rs: cordon, taint, evict, uncordon.
//!
//! Reconciler rules: read the Node first; a node already unschedulable was
//! cordoned by someone else and pitcrew does not claim it (so it will not
//! uncordon it later); the taint is pitcrew's own key, added in the same
//! merge patch as `unschedulable`, guarded by the `resourceVersion` it was
//! read at (409: read again); a Node that is gone is a permanent error
//! (escalated, not retried); 5xx, 429 and transport errors are retryable;
//! evictions go through the Eviction API so PodDisruptionBudgets hold (429:
//! back off and try again until the deadline, then report which pods are
//! blocked).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

use pitcrew_contract::Timestamp;

use super::{
    BoxFuture, Cluster, CordonResult, ExecError, JobOnNode, NodeEvent, NodeMark, PodLeft, PodsLeft,
};

/// The taint pitcrew adds and removes (and no other).
pub const TAINT_KEY: &str = "pitcrew.io/remediation";
/// The Node condition that says pitcrew has the node out, and why.
pub const CONDITION_TYPE: &str = "PitcrewRemediation";
pub const ANNOTATION_INCIDENT: &str = "pitcrew.io/incident";
pub const ANNOTATION_RULE: &str = "pitcrew.io/rule";
pub const ANNOTATION_ACTION: &str = "pitcrew.io/action";
/// Events' `reportingController`.
pub const REPORTING_CONTROLLER: &str = "pitcrew.io/remediate";

/// `gpu-fallen-off-bus` as a condition reason: `GpuFallenOffBus`.
pub fn camel(rule: &str) -> String {
    rule.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A taint value from a rule name: at most 63 characters of letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn taint_value(rule: &str) -> String {
    let v: String = rule
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[derive(Clone)]
pub struct Kube {
    client: Client,
    /// Events' `reportingInstance` (`remediate@host`).
    pub instance: String,
    /// The taint pitcrew adds and removes (and no other): its key
    /// ([`TAINT_KEY`] unless configured) and effect (`NoSchedule` unless
    /// configured; `NoExecute` also evicts what does not tolerate it).
    pub taint_key: String,
    pub taint_effect: String,
    /// First wait after a 429 or a conflict; doubles up to 5 s.
    pub backoff: Duration,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube").finish_non_exhaustive()
    }
}

pub(super) fn classify(what: &str, e: kube::Error) -> ExecError {
    match &e {
        kube::Error::Api(s) => {
            let msg = format!("{what}: {} {}", s.code, s.message);
            if s.code == 429 || s.code == 409 || s.code >= 500 {
                ExecError::retryable("kubernetes", msg)
            } else {
                ExecError::permanent("kubernetes", msg)
            }
        }
        // Transport errors: the API server may be restarting.
        _ => ExecError::retryable("kubernetes", format!("{what}: {e}")),
    }
}

pub(super) fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Kube {
    pub fn new(client: Client) -> Kube {
        Kube {
            client,
            instance: "remediate".to_owned(),
            taint_key: TAINT_KEY.to_owned(),
            taint_effect: "NoSchedule".to_owned(),
            backoff: Duration::from_millis(200),
        }
    }

    /// The client, for the other Kubernetes executors (the node check).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// From a kubeconfig file, or (None) the usual inference: in-cluster
    /// service account, then `$KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Kube, String> {
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("kubernetes config: {e}"))?,
        };
        let mut config = config;
        // kube-client retries 429 by itself, for minutes: a PDB-blocked
        // eviction must come back here, to the drain's own deadline.
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
        Ok(Kube::new(client))
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Reads the Node; one that is gone is said so (permanent: a node
    /// deleted from the cluster is not retried, it is escalated).
    async fn node(&self, node: &str) -> Result<Node, ExecError> {
        self.nodes().get(node).await.map_err(|e| match code(&e) {
            Some(404) => ExecError::permanent(
                "kubernetes",
                format!("node {node} not found: deleted from the cluster?"),
            ),
            _ => classify("get node", e),
        })
    }

    /// A JSON merge patch of the node's taints (and `unschedulable`),
    /// guarded by the `resourceVersion` they were read at: a write that
    /// raced another gets a 409 and is read and decided again. Merge patch
    /// replaces the taint list whole, which is why the guard matters.
    async fn patch_guarded(
        &self,
        node: &str,
        read: &Node,
        unschedulable: Option<bool>,
        taints: &[Taint],
    ) -> Result<(), kube::Error> {
        let mut spec = serde_json::json!({ "taints": taints });
        if let Some(u) = unschedulable {
            spec["unschedulable"] = serde_json::json!(u);
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": read.metadata.resource_version},
            "spec": spec,
        });
        self.nodes()
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    /// Sets `unschedulable` and adds pitcrew's taint in one patch guarded
    /// by `resourceVersion` (409: read again), so a cordon is two requests
    /// and a node is never left cordoned without the taint that says why.
    /// Each flag says what this write changed: a node someone else had
    /// already cordoned is not claimed.
    async fn cordon_and_taint(&self, node: &str, action: &str) -> Result<CordonResult, ExecError> {
        let mut wait = self.backoff;
        for _ in 0..8 {
            let n = self.node(node).await?;
            let spec = n.spec.clone().unwrap_or_default();
            let cordoned = !spec.unschedulable.unwrap_or(false);
            let mut taints = spec.taints.unwrap_or_default();
            let tainted = !taints.iter().any(|t| t.key == self.taint_key);
            if !cordoned && !tainted {
                return Ok(CordonResult::default());
            }
            if tainted {
                taints.push(Taint {
                    key: self.taint_key.clone(),
                    value: Some(action.chars().take(63).collect()),
                    effect: self.taint_effect.clone(),
                    time_added: None,
                });
            }
            match self.patch_guarded(node, &n, Some(true), &taints).await {
                Ok(()) => return Ok(CordonResult { cordoned, tainted }),
                Err(e) if code(&e) == Some(409) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(classify("cordon node", e)),
            }
        }
        Err(ExecError::retryable(
            "kubernetes",
            "cordon node: conflicts kept coming",
        ))
    }

    async fn remove_taint(&self, node: &str) -> Result<(), ExecError> {
        let mut wait = self.backoff;
        for _ in 0..8 {
            let n = self.node(node).await?;
            let mut taints = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let before = taints.len();
            taints.retain(|t| t.key != self.taint_key);
            if taints.len() == before {
                return Ok(());
            }
            match self.patch_guarded(node, &n, None, &taints).await {
                Ok(()) => return Ok(()),
                Err(e) if code(&e) == Some(409) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(classify("untaint node", e)),
            }
        }
        Err(ExecError::retryable(
            "kubernetes",
            "untaint node: conflicts kept coming",
        ))
    }
}

/// Pods a drain leaves alone: DaemonSet pods (they would come straight
/// back) and mirror pods (the kubelet owns them).
fn left_alone(p: &Pod) -> bool {
    let m = &p.metadata;
    m.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
        || m.owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"))
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Pods a drain evicts: not left alone, not finished, not already going.
fn evictable(p: &Pod) -> bool {
    !left_alone(p) && p.metadata.deletion_timestamp.is_none() && !finished(p)
}

/// Pods a drain waits for: what it evicts, and what is going but not gone.
/// A terminating pod counts whatever its phase (the Job controller marks
/// a terminating pod Failed while its containers may still be writing).
pub(super) fn still_there(p: &Pod) -> bool {
    !left_alone(p) && (p.metadata.deletion_timestamp.is_some() || !finished(p))
}

fn belongs_to_job(p: &Pod, job: &str) -> bool {
    p.metadata.labels.as_ref().is_some_and(|l| {
        ["pitcrew.io/job", "job-name", "batch.kubernetes.io/job-name"]
            .iter()
            .any(|k| l.get(*k).is_some_and(|v| v == job))
    })
}

impl Cluster for Kube {
    fn cordon<'a>(
        &'a self,
        node: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, Result<CordonResult, ExecError>> {
        Box::pin(self.cordon_and_taint(node, action))
    }

    fn evict<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
        deadline: Duration,
    ) -> BoxFuture<'a, Result<usize, ExecError>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::all(self.client.clone());
            let list = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .map_err(|e| classify("list pods", e))?;
            let mut todo: Vec<(String, String)> = list
                .items
                .iter()
                .filter(|p| evictable(p) && job.is_none_or(|j| belongs_to_job(p, j)))
                .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
                .collect();
            let started = tokio::time::Instant::now();
            let mut evicted = 0;
            let mut wait = self.backoff;
            loop {
                let mut blocked = Vec::new();
                for (ns, name) in todo {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                    match api.evict(&name, &EvictParams::default()).await {
                        Ok(_) => evicted += 1,
                        // Already gone: the goal is met.
                        Err(e) if code(&e) == Some(404) => {}
                        Err(e) if code(&e) == Some(429) => blocked.push((ns, name)),
                        Err(e) => return Err(classify(&format!("evict {ns}/{name}"), e)),
                    }
                }
                if blocked.is_empty() {
                    return Ok(evicted);
                }
                if started.elapsed() + wait > deadline {
                    let names: Vec<String> =
                        blocked.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
                    return Err(ExecError::permanent(
                        "kubernetes",
                        format!(
                            "eviction blocked by a PodDisruptionBudget for {} s: {}",
                            deadline.as_secs(),
                            names.join(", ")
                        ),
                    ));
                }
                tracing::debug!(
                    node,
                    blocked = blocked.len(),
                    wait_ms = wait.as_millis() as u64,
                    "eviction blocked by a pdb, retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                todo = blocked;
            }
        })
    }

    fn pods_left<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PodsLeft, ExecError>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::all(self.client.clone());
            let list = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .map_err(|e| classify("list pods", e))?;
            let left = list
                .items
                .iter()
                .filter(|p| still_there(p) && job.is_none_or(|j| belongs_to_job(p, j)))
                .filter_map(|p| {
                    Some(PodLeft {
                        name: format!(
                            "{}/{}",
                            p.metadata.namespace.as_deref()?,
                            p.metadata.name.as_deref()?
                        ),
                        grace_ends: p
                            .metadata
                            .deletion_timestamp
                            .as_ref()
                            .map(|t| Timestamp::from_unix_millis(t.0.as_millisecond())),
                    })
                })
                .collect();
            let node_ready = match self.nodes().get(node).await {
                Ok(n) => n
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                // A Node that is gone has no kubelet to wait for.
                Err(e) if code(&e) == Some(404) => false,
                Err(e) => return Err(classify("get node", e)),
            };
            Ok(PodsLeft {
                node_ready,
                pods: left,
            })
        })
    }

    fn jobs_on<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<JobOnNode>, ExecError>> {
        Box::pin(self.jobs_on_node(node))
    }

    fn mark<'a>(
        &'a self,
        node: &'a str,
        mark: Option<&'a NodeMark>,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            // Out: why, and which incident and action; back: nothing of
            // pitcrew's left but the condition saying so.
            let (status, reason, message, annotations) = match mark {
                Some(m) => (
                    "True",
                    camel(m.rule.as_deref().unwrap_or("remediation")),
                    m.summary.chars().take(1024).collect::<String>(),
                    serde_json::json!({
                        ANNOTATION_INCIDENT: m.incident,
                        ANNOTATION_RULE: m.rule,
                        ANNOTATION_ACTION: m.action,
                    }),
                ),
                None => (
                    "False",
                    "Returned".to_owned(),
                    "returned to service by pitcrew".to_owned(),
                    serde_json::json!({
                        ANNOTATION_INCIDENT: null,
                        ANNOTATION_RULE: null,
                        ANNOTATION_ACTION: null,
                    }),
                ),
            };
            let condition = serde_json::json!({
                "type": CONDITION_TYPE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            });
            let api = self.nodes();
            // Strategic merge: conditions merge by type, so the kubelet's
            // own are left as they are.
            api.patch_status(
                node,
                &PatchParams::default(),
                &Patch::Strategic(serde_json::json!({"status": {"conditions": [condition]}})),
            )
            .await
            .map_err(|e| classify("node condition", e))?;
            api.patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .map_err(|e| classify("node annotations", e))?;
            Ok(())
        })
    }

    fn event<'a>(
        &'a self,
        node: &'a str,
        event: &'a NodeEvent,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            let now = k8s_openapi::jiff::Timestamp::now();
            let body = serde_json::json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {
                    "name": format!("{node}.pitcrew.{:x}", now.as_nanosecond()),
                    "namespace": "default",
                },
                "eventTime": now.to_string(),
                "regarding": {"apiVersion": "v1", "kind": "Node", "name": node},
                "reason": event.reason.chars().take(128).collect::<String>(),
                "note": event.note.chars().take(1024).collect::<String>(),
                "action": event.action.chars().take(128).collect::<String>(),
                "type": if event.warning { "Warning" } else { "Normal" },
                "reportingController": REPORTING_CONTROLLER,
                "reportingInstance": self.instance.chars().take(128).collect::<String>(),
            });
            let event: Event = serde_json::from_value(body)
                .map_err(|e| ExecError::permanent("kubernetes", e.to_string()))?;
            let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
            events
                .create(&PostParams::default(), &event)
                .await
                .map_err(|e| classify("node event", e))?;
            Ok(())
        })
    }

    fn uncordon<'a>(
        &'a self,
        node: &'a str,
        cordoned: bool,
        tainted: bool,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            if tainted {
                self.remove_taint(node).await?;
            }
            if cordoned {
                self.nodes()
                    .uncordon(node)
                    .await
                    .map_err(|e| classify("uncordon", e))?;
            }
            Ok(())
        })
    }
}
