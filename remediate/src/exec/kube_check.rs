//! A node check as a Kubernetes Job pinned to the node.
//!
//! The Job's pod names its node (`spec.nodeName`: the scheduler, which
//! would keep it off a cordoned node, is not asked) and tolerates pitcrew's
//! taint and the cordon's, so it runs on exactly the node pitcrew holds
//! out. One Job per action, named from the action id: a check cut off by a
//! restart finds its Job and waits for it (or reads the verdict it already
//! has) instead of starting a second one. The verdict is the Job's: its
//! pod's exit code, with the pod's termination message and the end of its
//! log as the output.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::Client;

use super::check::{for_the_audit, CheckNode, CheckOutcome, NodeCheck};
use super::kube::{classify, code};
use super::{BoxFuture, ExecError};

/// Labels every check Job carries.
pub const LABEL_CHECK: &str = "pitcrew.io/node-check";

#[derive(Clone)]
pub struct KubeJobCheck {
    pub client: Client,
    pub namespace: String,
    pub image: String,
    pub command: Vec<String>,
    /// For the whole check: the Job's `activeDeadlineSeconds` too.
    pub timeout: Duration,
    /// pitcrew's taint key (tolerated).
    pub taint_key: String,
    /// An extended resource the pod requests all of the node's GPUs of
    /// (`nvidia.com/gpu`), so the device plugin gives it every GPU.
    pub gpu_resource: Option<String>,
    /// The node's GPU count from the inventory, by node.
    pub gpus: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub poll: Duration,
}

impl std::fmt::Debug for KubeJobCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeJobCheck")
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// The Job's name for an action: `pitcrew-check-` and a digest of the
/// action id (ids are longer than a label value may be).
pub fn job_name(action: &str) -> String {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in action.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pitcrew-check-{h:016x}")
}

/// Where a check Job is.
#[derive(Debug, PartialEq, Eq)]
enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

fn job_state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let is = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is("Complete") || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    if is("Failed") || status.and_then(|s| s.failed).unwrap_or(0) > 0 {
        let why = conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .map(|c| {
                format!(
                    "{} {}",
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or("")
                )
                .trim()
                .to_owned()
            })
            .unwrap_or_default();
        return JobState::Failed(why);
    }
    JobState::Running
}

impl KubeJobCheck {
    fn body(&self, name: &str, node: &str, k8s: &str) -> Result<Job, ExecError> {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_CHECK.to_owned(), node.to_owned());
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "pitcrew".to_owned(),
        );
        let resources = match (&self.gpu_resource, self.gpus.get(node)) {
            (Some(r), Some(n)) => serde_json::json!({"limits": {r: n.to_string()}}),
            _ => serde_json::json!({}),
        };
        let deadline = self.timeout.as_secs().max(1);
        let body = serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                // Kept a while for people to read, then collected.
                "ttlSecondsAfterFinished": 3600,
                "template": {
                    "metadata": {"labels": labels, "annotations": self.annotations},
                    "spec": {
                        "nodeName": k8s,
                        "restartPolicy": "Never",
                        "serviceAccountName": self.service_account,
                        "automountServiceAccountToken": self.service_account.is_some(),
                        "tolerations": [
                            {"key": self.taint_key, "operator": "Exists"},
                            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}
                        ],
                        "containers": [{
                            "name": "check",
                            "image": self.image,
                            "command": self.command,
                            "resources": resources,
                            "terminationMessagePolicy": "FallbackToLogsOnError"
                        }]
                    }
                }
            }
        });
        serde_json::from_value(body).map_err(|e| ExecError::permanent("node_check", e.to_string()))
    }

    /// What the check's pod said: its exit code, termination message, and
    /// the end of its log where the kubelet serves one.
    async fn pod_output(&self, name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
        else {
            return String::new();
        };
        let mut out = Vec::new();
        for p in &list.items {
            let statuses = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or(&[]);
            for cs in statuses {
                if let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    out.push(format!(
                        "exit {} {}{}",
                        t.exit_code,
                        t.reason.as_deref().unwrap_or(""),
                        t.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ));
                }
            }
            let Some(pod) = p.metadata.name.as_deref() else {
                continue;
            };
            let params = LogParams {
                tail_lines: Some(40),
                ..LogParams::default()
            };
            let logs = pods.logs(pod, &params);
            // A node without a kubelet log endpoint (KWOK's) has none.
            if let Ok(Ok(log)) = tokio::time::timeout(Duration::from_secs(10), logs).await {
                out.push(log);
            }
        }
        out.join("\n")
    }

    async fn check(&self, node: CheckNode<'_>) -> Result<CheckOutcome, ExecError> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = job_name(node.action);
        let started = tokio::time::Instant::now();
        match jobs
            .get_opt(&name)
            .await
            .map_err(|e| classify("get check job", e))?
        {
            Some(_) => tracing::info!(node = node.k8s, job = %name, "node check already running"),
            None => {
                let body = self.body(&name, node.node, node.k8s)?;
                match jobs.create(&PostParams::default(), &body).await {
                    Ok(_) => {}
                    Err(e) if code(&e) == Some(409) => {}
                    Err(e) => return Err(classify("create check job", e)),
                }
            }
        }
        loop {
            let job = jobs
                .get_opt(&name)
                .await
                .map_err(|e| classify("get check job", e))?
                .ok_or_else(|| {
                    ExecError::retryable("node_check", format!("job {name} vanished"))
                })?;
            let state = job_state(&job);
            if state != JobState::Running {
                let output = self.pod_output(&name).await;
                let passed = state == JobState::Succeeded;
                let verdict = match state {
                    JobState::Failed(why) => format!("[job {name} failed: {why}]"),
                    _ => format!("[job {name} complete]"),
                };
                return Ok(CheckOutcome {
                    passed,
                    output: for_the_audit(&format!("{output}\n{verdict}")),
                });
            }
            if started.elapsed() >= self.timeout + self.poll {
                let _ = jobs
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map_err(|e| classify("delete check job", e));
                return Ok(CheckOutcome {
                    passed: false,
                    output: format!(
                        "[job {name} did not finish in {} s]",
                        self.timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

impl NodeCheck for KubeJobCheck {
    fn run<'a>(&'a self, node: CheckNode<'a>) -> BoxFuture<'a, Result<CheckOutcome, ExecError>> {
        Box::pin(self.check(node))
    }

    fn describe(&self) -> String {
        format!(
            "kubernetes job ({}): {}",
            self.image,
            self.command.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_stable_short_and_valid() {
        let a = job_name("act-2026-12-03T15:00:00Z-gpu-fallen-off-bus-node-a017");
        assert_eq!(
            a,
            job_name("act-2026-12-03T15:00:00Z-gpu-fallen-off-bus-node-a017")
        );
        assert_ne!(a, job_name("act-2"));
        assert!(a.len() <= 63);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn a_jobs_state_comes_from_its_conditions_or_counts() {
        let job = |status: serde_json::Value| -> Job {
            serde_json::from_value(serde_json::json!({"metadata": {}, "status": status})).unwrap()
        };
        assert_eq!(
            job_state(&job(serde_json::json!({"active": 1}))),
            JobState::Running
        );
        assert_eq!(
            job_state(&job(serde_json::json!({"succeeded": 1}))),
            JobState::Succeeded
        );
        assert_eq!(
            job_state(&job(serde_json::json!({"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}
            ]}))),
            JobState::Failed(
                "BackoffLimitExceeded Job has reached the specified backoff limit".into()
            )
        );
    }
}
