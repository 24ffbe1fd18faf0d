//! The harness's Kubernetes control plane is a real one: KWOK's Nodes turn
//! Ready, the scheduler places a Job's pod, KWOK runs it, a deleted pod
//! terminates when its grace period is up (not at once), and the Job
//! controller replaces it on a schedulable node, never the cordoned one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use pitcrew_harness::cluster::KubeCluster;
use serde_json::json;

#[test]
fn a_jobs_pod_is_scheduled_run_terminated_gracefully_and_replaced_elsewhere() {
    let started = Instant::now();
    let c = KubeCluster::start().unwrap();
    eprintln!(
        "control plane up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let nodes: Vec<String> = (1..=3).map(|i| format!("kw-{i}")).collect();
    c.add_nodes(&nodes, &[("pitcrew.dev/pool", "gpu")]).unwrap();
    c.wait_nodes_ready(&nodes, Duration::from_secs(60)).unwrap();

    // A training Job: one pod with a 3 s grace period to checkpoint in.
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {
                    "labels": {"app": "train"},
                    // Runs until stopped (KWOK completes a Job's pod within
                    // seconds otherwise) and, deleted, takes its whole
                    // grace period to go (a checkpoint being written).
                    "annotations": {
                        "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                        "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h",
                        "pod-delete.stage.kwok.x-k8s.io/delay": "3s",
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 3,
                    "nodeSelector": {"pitcrew.dev/pool": "gpu"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "trainer", "image": "trainer:1"}],
                },
            },
        },
    });
    c.create("/apis/batch/v1/namespaces/default/jobs", &job)
        .unwrap();
    let (name, node) = c
        .wait_running("app=train", Duration::from_secs(60))
        .unwrap();

    // Cordon its node, then delete the pod as an eviction would.
    c.api()
        .request(
            "PATCH",
            &format!("/api/v1/nodes/{node}"),
            Some(r#"{"spec":{"unschedulable":true}}"#),
        )
        .unwrap();
    let deleted_at = Instant::now();
    c.api()
        .request(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )
        .unwrap();
    c.wait_for("the pod gone", Duration::from_secs(30), |c| {
        c.get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .is_err()
    })
    .unwrap();
    let took = deleted_at.elapsed();
    // The grace period ends at the deletion timestamp, which has whole
    // seconds: 2 to 3 s after the deletion.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "the pod terminates at the end of its grace period, not at once ({took:?})"
    );

    c.wait_for("a replacement running", Duration::from_secs(60), |c| {
        c.running_pods("app=train").iter().any(|(p, _)| *p != name)
    })
    .unwrap();
    let (_, moved_to) = c
        .running_pods("app=train")
        .into_iter()
        .find(|(p, _)| *p != name)
        .unwrap();
    assert_ne!(moved_to, node, "never onto the cordoned node");
    eprintln!(
        "pod {name} on {node}: gone {:.1} s after its deletion (grace 3 s); replacement running on {moved_to} {:.1} s after the deletion",
        took.as_secs_f64(),
        deleted_at.elapsed().as_secs_f64()
    );
}
