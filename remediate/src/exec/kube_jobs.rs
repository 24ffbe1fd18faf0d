//! Training jobs as Kubernetes shows them on a node: which workload a pod
//! belongs to (from the labels its controller sets), whether it reports a
//! saved checkpoint, and what evicting it does to a batch/v1 Job.
//!
//! Workloads, outermost first (a JobSet's pods are also a Job's; a Kubeflow
//! TrainJob runs as a JobSet):
//! - JobSet: `jobset.sigs.k8s.io/jobset-name`
//! - Kubeflow training operator (PyTorchJob, MPIJob, TFJob...):
//!   `training.kubeflow.org/job-name`, kind from
//!   `training.kubeflow.org/operator-name` (`pytorchjob-controller`)
//! - Volcano: `volcano.sh/job-name`
//! - LeaderWorkerSet: `leaderworkerset.sigs.k8s.io/name`
//! - Kueue plain pod groups: `kueue.x-k8s.io/pod-group-name`
//! - batch/v1 Job: `batch.kubernetes.io/job-name` (1.27+) or `job-name`
//! - pitcrew's own `pitcrew.io/job` (a site's job id)
//!
//! A job says it saved a checkpoint with the pod annotation
//! `pitcrew.io/checkpointed-at: <RFC 3339>` (the training loop patches its
//! own pod after each save); a deferred drain takes a checkpoint saved
//! after the fault as its boundary.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use pitcrew_contract::Timestamp;

use super::kube::{classify, code, still_there, Kube};
use super::{ExecError, JobOnNode};

/// The annotation a training job sets on its pods after a checkpoint.
pub const ANNOTATION_CHECKPOINTED_AT: &str = "pitcrew.io/checkpointed-at";

/// The workload a pod belongs to: (kind, name), outermost first.
pub fn workload_of(pod: &Pod) -> Option<(String, String)> {
    let labels = pod.metadata.labels.as_ref()?;
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(n) = get("jobset.sigs.k8s.io/jobset-name") {
        return Some(("jobset".into(), n));
    }
    if let Some(n) = get("training.kubeflow.org/job-name") {
        let kind = get("training.kubeflow.org/operator-name")
            .map(|o| o.trim_end_matches("-controller").to_owned())
            .unwrap_or_else(|| "kubeflow".into());
        return Some((kind, n));
    }
    if let Some(n) = get("volcano.sh/job-name") {
        return Some(("volcano".into(), n));
    }
    if let Some(n) = get("leaderworkerset.sigs.k8s.io/name") {
        return Some(("leaderworkerset".into(), n));
    }
    if let Some(n) = get("kueue.x-k8s.io/pod-group-name") {
        return Some(("kueue-pod-group".into(), n));
    }
    if let Some(n) = get("batch.kubernetes.io/job-name").or_else(|| get("job-name")) {
        return Some(("job".into(), n));
    }
    get("pitcrew.io/job").map(|n| ("job".into(), n))
}

/// When the pod says its job last saved a checkpoint.
pub fn checkpoint_of(pod: &Pod) -> Option<Timestamp> {
    let v = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CHECKPOINTED_AT)?;
    let t: k8s_openapi::jiff::Timestamp = v.trim().parse().ok()?;
    Some(Timestamp::from_unix_millis(t.as_millisecond()))
}

/// What evicting `evicted` of a batch/v1 Job's pods does to it.
pub fn eviction_effect(job: &Job, evicted: usize) -> String {
    let spec = job.spec.as_ref();
    let mut notes = Vec::new();
    if spec.and_then(|s| s.completion_mode.as_deref()) == Some("Indexed") {
        notes.push("indexed: the evicted indexes are recreated".to_owned());
    }
    // An eviction gives the pod the DisruptionTarget condition; the first
    // rule that matches it decides.
    let rule = spec
        .and_then(|s| s.pod_failure_policy.as_ref())
        .and_then(|p| {
            p.rules.iter().find(|r| {
                r.on_pod_conditions.as_ref().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "DisruptionTarget"
                            && c.status.as_deref().unwrap_or("True") == "True"
                    })
                })
            })
        });
    match rule.map(|r| r.action.as_str()) {
        Some("Ignore") => notes
            .push("podFailurePolicy ignores disruptions: not counted against backoffLimit".into()),
        Some("FailJob") => notes.push(
            "podFailurePolicy fails the Job on a disruption: evicting ends the whole Job".into(),
        ),
        Some("FailIndex") => {
            notes.push("podFailurePolicy fails the evicted indexes on a disruption".into());
        }
        _ => {
            let limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6);
            let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
            let after = i64::from(failed) + i64::try_from(evicted).unwrap_or(i64::MAX);
            if after > i64::from(limit) {
                notes.push(format!(
                    "counted against backoffLimit {limit} ({failed} failed before): evicting fails the Job"
                ));
            } else {
                notes.push(format!(
                    "counted against backoffLimit ({after} of {limit} after the eviction)"
                ));
            }
        }
    }
    notes.join("; ")
}

impl Kube {
    /// The training jobs with unfinished pods on the node, with their last
    /// checkpoint and, for batch/v1 Jobs, what an eviction does to them.
    pub(super) async fn jobs_on_node(&self, node: &str) -> Result<Vec<JobOnNode>, ExecError> {
        let pods: Api<Pod> = Api::all(self.client());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| classify("list pods", e))?;
        let mut by_job: BTreeMap<(String, String, String), JobOnNode> = BTreeMap::new();
        for p in list.items.iter().filter(|p| still_there(p)) {
            let Some((kind, name)) = workload_of(p) else {
                continue;
            };
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let entry = by_job
                .entry((kind.clone(), ns.clone(), name.clone()))
                .or_insert_with(|| JobOnNode {
                    job: format!("{kind}/{ns}/{name}"),
                    pods: 0,
                    checkpointed_at: None,
                    eviction: None,
                });
            entry.pods += 1;
            // The job has saved when every one of its pods here has: the
            // oldest of their checkpoints counts.
            let saved = checkpoint_of(p);
            entry.checkpointed_at = if entry.pods == 1 {
                saved
            } else {
                entry.checkpointed_at.zip(saved).map(|(a, b)| a.min(b))
            };
        }
        for ((kind, ns, name), j) in &mut by_job {
            if kind != "job" {
                continue;
            }
            let api: Api<Job> = Api::namespaced(self.client(), ns);
            match api.get(name).await {
                Ok(job) => j.eviction = Some(eviction_effect(&job, j.pods)),
                // A `pitcrew.io/job` id need not be a Job object.
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => return Err(classify("get job", e)),
            }
        }
        Ok(by_job.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ml", "labels": labels, "annotations": annotations}
        }))
        .unwrap()
    }

    #[test]
    fn the_outermost_workload_names_a_pod() {
        let cases = [
            (
                serde_json::json!({"jobset.sigs.k8s.io/jobset-name": "llama",
                    "batch.kubernetes.io/job-name": "llama-workers-0"}),
                Some(("jobset", "llama")),
            ),
            (
                serde_json::json!({"training.kubeflow.org/job-name": "bert",
                    "training.kubeflow.org/operator-name": "pytorchjob-controller",
                    "training.kubeflow.org/replica-type": "worker"}),
                Some(("pytorchjob", "bert")),
            ),
            (
                serde_json::json!({"volcano.sh/job-name": "resnet", "volcano.sh/task-spec": "worker"}),
                Some(("volcano", "resnet")),
            ),
            (
                serde_json::json!({"kueue.x-k8s.io/pod-group-name": "g1"}),
                Some(("kueue-pod-group", "g1")),
            ),
            (
                serde_json::json!({"job-name": "train", "controller-uid": "x"}),
                Some(("job", "train")),
            ),
            (serde_json::json!({"app": "web"}), None),
        ];
        for (labels, want) in cases {
            let got = workload_of(&pod(labels.clone(), serde_json::json!({})));
            assert_eq!(
                got,
                want.map(|(k, n)| (k.to_owned(), n.to_owned())),
                "{labels}"
            );
        }
    }

    #[test]
    fn a_checkpoint_annotation_is_read_and_a_bad_one_ignored() {
        let p = pod(
            serde_json::json!({}),
            serde_json::json!({ANNOTATION_CHECKPOINTED_AT: "2026-12-03T15:04:05Z"}),
        );
        assert_eq!(
            checkpoint_of(&p).map(Timestamp::unix_millis),
            Some(1_796_310_245_000)
        );
        let p = pod(
            serde_json::json!({}),
            serde_json::json!({ANNOTATION_CHECKPOINTED_AT: "yesterday"}),
        );
        assert_eq!(checkpoint_of(&p), None);
    }

    #[test]
    fn what_an_eviction_does_to_a_batch_job() {
        let job = |spec: serde_json::Value, failed: i32| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "train"},
                "spec": spec,
                "status": {"failed": failed}
            }))
            .unwrap()
        };
        let template = serde_json::json!({"spec": {"containers": []}});
        let ignore = job(
            serde_json::json!({"template": template, "completionMode": "Indexed",
                "podFailurePolicy": {"rules": [{"action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
            0,
        );
        assert_eq!(
            eviction_effect(&ignore, 1),
            "indexed: the evicted indexes are recreated; podFailurePolicy ignores disruptions: not counted against backoffLimit"
        );
        let fail = job(
            serde_json::json!({"template": template,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
                    {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}}),
            0,
        );
        assert!(eviction_effect(&fail, 1).contains("evicting ends the whole Job"));
        let last_try = job(
            serde_json::json!({"template": template, "backoffLimit": 2}),
            2,
        );
        assert!(
            eviction_effect(&last_try, 1).contains("evicting fails the Job"),
            "{}",
            eviction_effect(&last_try, 1)
        );
        let room = job(serde_json::json!({"template": template}), 0);
        assert_eq!(
            eviction_effect(&room, 1),
            "counted against backoffLimit (1 of 6 after the eviction)"
        );
    }
}
