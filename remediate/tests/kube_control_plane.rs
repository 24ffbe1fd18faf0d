//! Remediation against a real Kubernetes control plane (kube-apiserver,
//! controller-manager, scheduler; KWOK's kubelets), from the harness: a
//! drain evicts a training Job's pod and goes on only once the pod is gone
//! (it takes its whole grace period, as a checkpoint would), and the Job
//! controller's replacement runs on another node, never the cordoned one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pitcrew_contract::{ActionRequest, AuditEntry, Phase, Target, Timestamp, V1};
use pitcrew_harness::cluster::KubeCluster;
use pitcrew_remediate::exec::kube::Kube;
use pitcrew_remediate::exec::page::Paging;
use pitcrew_remediate::exec::Executors;
use pitcrew_remediate::governor::GovernorConfig;
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::plan::{OnFailure, Plan, PlanBook, Step, StepKind};
use pitcrew_remediate::{Governor, MemoryJournal, Worker, WorkerConfig};
use pitcrew_rules::{Inventory, NodeInfo};
use serde_json::{json, Value};

const GRACE_S: u64 = 5;

fn training_job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    // Runs until stopped; deleted, it takes its whole grace
                    // period to go (a checkpoint being written).
                    "annotations": {
                        "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                        "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h",
                        "pod-delete.stage.kwok.x-k8s.io/delay": format!("{GRACE_S}s"),
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": GRACE_S,
                    "containers": [{"name": "trainer", "image": "trainer:1"}],
                },
            },
        },
    })
}

fn request_for(target: &Target) -> ActionRequest {
    ActionRequest {
        v: V1,
        id: ActionRequest::make_id("inc-1", target, "evacuate", 0),
        incident: "inc-1".into(),
        rule: Some("gpu-fallen-off-bus".into()),
        target: target.clone(),
        plan: "evacuate".into(),
        params: BTreeMap::new(),
        requested_at: Timestamp::now(),
        reason: "Xid 79".into(),
        events: vec!["ev-1".into()],
        dry_run: false,
    }
}

/// A worker with the cluster as its only executor and two plans:
/// `evacuate` (cordon, drain) and `return` (uncordon); it looks at a
/// drain's pods every 200 ms.
fn worker_for(kube: Kube, nodes: &[String]) -> (Worker, Arc<MemoryJournal>) {
    worker_polling(kube, nodes, Duration::from_millis(200))
}

/// [`worker_for`], looking at a drain's pods every `poll` (at most 1 s).
fn worker_polling(kube: Kube, nodes: &[String], poll: Duration) -> (Worker, Arc<MemoryJournal>) {
    let inventory = Arc::new(Inventory::new(
        nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.clone(),
                ..NodeInfo::default()
            })
            .collect(),
    ));
    let mut plans = PlanBook::builtin();
    plans.insert(Plan {
        name: "return".into(),
        steps: vec![Step::new(StepKind::Uncordon)],
        on_failure: OnFailure::Escalate,
        retries: 1,
        approval: false,
        dry_run: false,
    });
    plans.insert(Plan {
        name: "evacuate".into(),
        steps: vec![Step::new(StepKind::Cordon), Step::new(StepKind::Drain)],
        on_failure: OnFailure::Escalate,
        retries: 1,
        approval: false,
        dry_run: false,
    });
    let journal = Arc::new(MemoryJournal::default());
    let worker = Worker::new(
        WorkerConfig {
            actor: "remediate@test".into(),
            verify_poll: poll,
            ..WorkerConfig::default()
        },
        plans,
        Executors {
            cluster: Some(Arc::new(kube)),
            scheduler: None,
            power: None,
            gpu_reset: None,
            heartbeats: None,
            node_check: None,
            pager: Arc::new(Paging::default()),
        },
        journal.clone(),
        Governor::new(
            GovernorConfig {
                max_out_of_service: nodes.len().max(10),
                max_out_of_service_percent: 100.0,
                ..GovernorConfig::default()
            },
            Arc::clone(&inventory),
        ),
        inventory,
        RemediateMetrics::default(),
    );
    (worker, journal)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_waits_for_the_evicted_pod_to_checkpoint_and_the_job_runs_again_elsewhere() {
    let (c, nodes) = KubeCluster::with_ready_nodes("gpu-", 3, Duration::from_secs(60)).unwrap();
    c.create(
        "/apis/batch/v1/namespaces/default/jobs",
        &training_job("train"),
    )
    .unwrap();
    let (pod, node) = c
        .wait_running("app=train", Duration::from_secs(60))
        .unwrap();

    let mut kube = Kube::connect(Some(c.kubeconfig())).await.unwrap();
    // A site's own taint key (`[kubernetes] taint_key`).
    kube.taint_key = "example.com/gpu-health".into();
    let (worker, journal) = worker_for(kube, &nodes);
    let target = Target::node(&node);
    let request = request_for(&target);
    let asked = Instant::now();
    worker.submit(request).await.unwrap();
    assert!(
        worker.wait_idle(Duration::from_secs(60)).await,
        "the plan ends"
    );
    let drained = asked.elapsed();
    let state = worker.state(&target).unwrap();
    assert_eq!(
        state.phase,
        Phase::Escalated,
        "{:?}",
        journal.timeline(&target)
    );
    assert!(
        state.owned.k8s_cordon,
        "the node stays out, cordoned by pitcrew"
    );
    let detail = journal
        .audits()
        .into_iter()
        .find_map(|a| match a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail,
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", journal.timeline(&target)));
    assert!(
        detail.starts_with("kubernetes: 1 pods evicted, gone after"),
        "{detail}"
    );
    assert!(
        c.get(&format!("/api/v1/namespaces/default/pods/{pod}"))
            .is_err(),
        "the pod is gone when the drain says so"
    );
    // Deletion timestamps have whole seconds: the grace period ends 4 to
    // 5 s after the eviction.
    assert!(
        drained >= Duration::from_secs(GRACE_S - 1),
        "the drain did not wait for the pod: {drained:?} ({detail})"
    );

    if let Err(e) = c.wait_for("the replacement running", Duration::from_secs(60), |c| {
        c.running_pods("app=train").iter().any(|(p, _)| *p != pod)
    }) {
        let pods = c.get("/api/v1/namespaces/default/pods").unwrap();
        let job = c
            .get("/apis/batch/v1/namespaces/default/jobs/train")
            .unwrap();
        panic!(
            "{e}\npods: {:#}\njob status: {:#}",
            pods["items"]
                .as_array()
                .map(|ps| ps
                    .iter()
                    .map(|p| json!({
                        "name": p["metadata"]["name"],
                        "node": p["spec"]["nodeName"],
                        "phase": p["status"]["phase"],
                        "conditions": p["status"]["conditions"],
                    }))
                    .collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            job["status"]
        );
    }
    let replaced = asked.elapsed();
    let (_, moved_to) = c
        .running_pods("app=train")
        .into_iter()
        .find(|(p, _)| *p != pod)
        .unwrap();
    assert_ne!(moved_to, node, "never onto the cordoned node");

    // Why the node is out, where kubectl shows it: the taint's value, the
    // condition, the annotations, an Event per step with the action id.
    let n = c.get(&format!("/api/v1/nodes/{node}")).unwrap();
    let taint = n["spec"]["taints"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["key"] == "example.com/gpu-health"))
        .cloned()
        .unwrap_or_else(|| panic!("{n:#}"));
    assert_eq!(taint["value"], "gpu-fallen-off-bus");
    let condition = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "PitcrewRemediation"))
            .cloned()
            .unwrap_or_else(|| panic!("{n:#}"))
    };
    let cond = condition(&n);
    assert_eq!(
        (&cond["status"], &cond["reason"], &cond["message"]),
        (&json!("True"), &json!("GpuFallenOffBus"), &json!("Xid 79"))
    );
    assert_eq!(n["metadata"]["annotations"]["pitcrew.io/incident"], "inc-1");
    assert_eq!(
        n["metadata"]["annotations"]["pitcrew.io/rule"],
        "gpu-fallen-off-bus"
    );
    let action_id = ActionRequest::make_id("inc-1", &target, "evacuate", 0);
    let events = |c: &KubeCluster| -> Vec<(String, String)> {
        c.get("/apis/events.k8s.io/v1/namespaces/default/events")
            .unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["regarding"]["name"] == node.as_str())
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    c.wait_for("the steps' events", Duration::from_secs(10), |c| {
        let ev = events(c);
        [
            "CordonStarted",
            "CordonSucceeded",
            "DrainStarted",
            "DrainSucceeded",
        ]
        .iter()
        .all(|r| {
            ev.iter()
                .any(|(reason, note)| reason == r && note.contains(&action_id))
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", events(&c)));

    // Back in service: the condition says so, the annotations are gone.
    let back = ActionRequest {
        id: ActionRequest::make_id("inc-1", &target, "return", 0),
        plan: "return".into(),
        ..request_for(&target)
    };
    worker.submit(back).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(30)).await);
    let n = c.get(&format!("/api/v1/nodes/{node}")).unwrap();
    let cond = condition(&n);
    assert_eq!(
        (&cond["status"], &cond["reason"]),
        (&json!("False"), &json!("Returned"))
    );
    assert!(
        n["metadata"]["annotations"]["pitcrew.io/incident"].is_null(),
        "{n:#}"
    );
    assert!(n["spec"]["unschedulable"].is_null() || n["spec"]["unschedulable"] == false);
    assert!(
        n["spec"]["taints"]
            .as_array()
            .is_none_or(|ts| ts.iter().all(|t| t["key"] != "example.com/gpu-health")),
        "its own taint removed: {n:#}"
    );
    c.wait_for("the return's event", Duration::from_secs(10), |c| {
        events(c).iter().any(|(reason, _)| reason == "Returned")
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", events(&c)));
    eprintln!(
        "request -> drained (pod {pod} gone from {node}, grace {GRACE_S} s): {:.1} s; -> replacement running on {moved_to}: {:.1} s",
        drained.as_secs_f64(),
        replaced.as_secs_f64()
    );
}

/// The node check as a Job pinned to the cordoned node: KWOK's kubelet runs
/// it, succeeding or (scripted through the pod's annotations) failing.
#[tokio::test]
async fn a_node_check_job_runs_on_the_cordoned_node_and_reports_its_verdict() {
    use pitcrew_remediate::exec::check::{CheckNode, NodeCheck};
    use pitcrew_remediate::exec::kube_check::{job_name, KubeJobCheck};
    use pitcrew_remediate::exec::Cluster;

    let (c, _) = KubeCluster::with_ready_nodes("gpu-", 2, Duration::from_secs(60)).unwrap();
    let mut kube = Kube::connect(Some(c.kubeconfig())).await.unwrap();
    // NoExecute: a pod that did not tolerate it could not stay on the node.
    kube.taint_effect = "NoExecute".into();
    kube.cordon("gpu-1", "gpu-fallen-off-bus").await.unwrap();
    let check = |annotations: &[(&str, &str)]| KubeJobCheck {
        client: kube.client(),
        namespace: "default".into(),
        image: "nvcr.io/nvidia/cloud-native/dcgm:4.2.3-1-ubuntu22.04".into(),
        command: vec!["dcgmi".into(), "diag".into(), "-r".into(), "2".into()],
        timeout: Duration::from_secs(60),
        taint_key: kube.taint_key.clone(),
        gpu_resource: None,
        gpus: BTreeMap::new(),
        labels: BTreeMap::new(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        service_account: None,
        poll: Duration::from_millis(300),
    };
    let on = |action| CheckNode {
        node: "gpu-1",
        k8s: "gpu-1",
        slurm: "gpu-1",
        action,
    };
    let pod_of = |job: &str| -> Value {
        let pods = c
            .get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector=job-name%3D{job}"
            ))
            .unwrap();
        pods["items"][0].clone()
    };

    let ok = check(&[]).run(on("act-pass")).await.unwrap();
    assert!(ok.passed, "{ok:?}");
    assert!(ok.output.contains("exit 0 Completed"), "{}", ok.output);
    let pod = pod_of(&job_name("act-pass"));
    assert_eq!(pod["spec"]["nodeName"], "gpu-1", "pinned to the node");
    assert_eq!(pod["status"]["phase"], "Succeeded");

    let failing = [
        ("pitcrew.test/exit-code", "4"),
        (
            "pitcrew.test/message",
            "GPU 3: Memory: Fail (bmc password=hunter2)",
        ),
        ("pod-complete.stage.kwok.x-k8s.io/weight", "0"),
    ];
    let bad = check(&failing).run(on("act-fail")).await.unwrap();
    assert!(!bad.passed, "{bad:?}");
    assert!(
        bad.output.contains("exit 4 Error: GPU 3: Memory: Fail"),
        "{}",
        bad.output
    );
    assert!(!bad.output.contains("hunter2"), "{}", bad.output);
    assert!(bad.output.contains("failed"), "{}", bad.output);

    // Run again for the same action (a restart mid-check): the same Job's
    // verdict, no second Job.
    let again = check(&failing).run(on("act-fail")).await.unwrap();
    assert_eq!(again.passed, bad.passed);
    let jobs = c
        .get("/apis/batch/v1/namespaces/default/jobs?labelSelector=pitcrew.io%2Fnode-check%3Dgpu-1")
        .unwrap();
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(2), "{jobs:#}");
}

/// A deferred drain on Kubernetes: the node is cordoned at once, its
/// training job runs on until it reports a checkpoint saved since the
/// fault, and only then are its pods evicted; the drain's audit says what
/// the eviction does to the Job (indexed, its pod failure policy).
#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_drain_waits_for_the_jobs_checkpoint_then_evicts() {
    let (c, nodes) = KubeCluster::with_ready_nodes("gpu-", 2, Duration::from_secs(60)).unwrap();
    let mut job = training_job("ckpt");
    job["spec"]["completionMode"] = json!("Indexed");
    job["spec"]["completions"] = json!(1);
    job["spec"]["podFailurePolicy"] = json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    ]});
    c.create("/apis/batch/v1/namespaces/default/jobs", &job)
        .unwrap();
    let (pod, node) = c.wait_running("app=ckpt", Duration::from_secs(60)).unwrap();
    let kube = Kube::connect(Some(c.kubeconfig())).await.unwrap();
    let (worker, journal) = worker_for(kube, &nodes);
    let target = Target::node(&node);
    let mut request = request_for(&target);
    request.params.insert("at".into(), json!("checkpoint"));
    worker.submit(request).await.unwrap();

    c.wait_for("the cordon", Duration::from_secs(20), |c| {
        c.get(&format!("/api/v1/nodes/{node}"))
            .is_ok_and(|n| n["spec"]["unschedulable"] == true)
    })
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = c
        .get(&format!("/api/v1/namespaces/default/pods/{pod}"))
        .unwrap();
    assert!(
        p["metadata"]["deletionTimestamp"].is_null(),
        "evicted before its checkpoint: {p:#}"
    );
    assert!(worker.busy(), "the drain waits for the job boundary");

    // The training loop saves and says so on its pod.
    let saved = k8s_openapi::jiff::Timestamp::now().to_string();
    c.api()
        .request(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{pod}"),
            Some(
                &json!({"metadata": {"annotations": {"pitcrew.io/checkpointed-at": saved}}})
                    .to_string(),
            ),
        )
        .unwrap();
    assert!(worker.wait_idle(Duration::from_secs(60)).await);
    let detail = journal
        .audits()
        .into_iter()
        .find_map(|a| match a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail,
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:#?}", journal.audits()));
    assert!(
        detail.contains("job/default/ckpt checkpointed at"),
        "{detail}"
    );
    assert!(
        detail.contains("kubernetes: 1 pods evicted, gone after"),
        "{detail}"
    );
    assert!(
        detail.contains(
            "job/default/ckpt (1 pods): indexed: the evicted indexes are recreated; \
             podFailurePolicy ignores disruptions"
        ),
        "{detail}"
    );
    assert!(
        c.get(&format!("/api/v1/namespaces/default/pods/{pod}"))
            .is_err(),
        "the pod is gone"
    );
    // Its index comes back elsewhere, and the disruption did not count
    // against the Job's backoffLimit.
    c.wait_for("index 0 running again", Duration::from_secs(60), |c| {
        c.running_pods("app=ckpt")
            .iter()
            .any(|(p, n)| *p != pod && *n != node)
    })
    .unwrap();
    let status = c
        .get("/apis/batch/v1/namespaces/default/jobs/ckpt")
        .unwrap()["status"]
        .clone();
    assert!(
        status["failed"].as_i64().unwrap_or(0) == 0,
        "the eviction was counted as a failure: {status:#}"
    );
}

/// A pod of `app` pinned to `node` (no scheduler), going `GRACE` after its
/// deletion, as KWOK's stages run it.
fn pod_on(name: &str, app: &str, node: &str, grace_s: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": app},
            "annotations": {"pod-delete.stage.kwok.x-k8s.io/delay": format!("{grace_s}s")},
        },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": grace_s,
            "containers": [{"name": "main", "image": "app:1"}],
        },
    })
}

/// The PodDisruptionBudget path with the real disruption controller: a
/// 3-replica Deployment under `minAvailable: 2`, two of its nodes drained
/// at once. The controller allows one disruption; the other drain's
/// eviction gets 429s until the first pod's replacement is Ready elsewhere
/// and the controller allows the next; then it goes on. Both drains end
/// with their pods gone, and the budget was never broken.
#[tokio::test(flavor = "multi_thread")]
async fn drains_under_a_pdb_wait_for_the_disruption_controller_and_never_break_it() {
    let (c, nodes) = KubeCluster::with_ready_nodes("gpu-", 5, Duration::from_secs(60)).unwrap();
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "serve"}},
            "template": {
                "metadata": {
                    "labels": {"app": "serve"},
                    "annotations": {"pod-delete.stage.kwok.x-k8s.io/delay": "2s"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "serve"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }]}},
                    "containers": [{"name": "serve", "image": "serve:1"}],
                },
            },
        },
    });
    c.create("/apis/apps/v1/namespaces/default/deployments", &deployment)
        .unwrap();
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "serve"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "serve"}}},
    });
    c.create(
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        &pdb,
    )
    .unwrap();
    let pdb_status = |c: &KubeCluster| {
        c.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/serve")
            .map(|p| p["status"].clone())
            .unwrap_or_default()
    };
    c.wait_for(
        "3 replicas and the budget computed",
        Duration::from_secs(60),
        |c| c.running_pods("app=serve").len() == 3 && pdb_status(c)["disruptionsAllowed"] == 1,
    )
    .unwrap_or_else(|e| panic!("{e}: {:#}", pdb_status(&c)));
    let before = c.running_pods("app=serve");
    let drained: Vec<String> = before.iter().take(2).map(|(_, n)| n.clone()).collect();

    let kube = Kube::connect(Some(c.kubeconfig())).await.unwrap();
    let (worker, journal) = worker_for(kube, &nodes);
    for n in &drained {
        worker.submit(request_for(&Target::node(n))).await.unwrap();
    }
    // While the drains run, the budget is watched: never fewer than two
    // healthy replicas.
    let started = Instant::now();
    let mut least_healthy = i64::MAX;
    let mut saw_blocked = false;
    while worker.busy() && started.elapsed() < Duration::from_secs(90) {
        let st = pdb_status(&c);
        if let Some(h) = st["currentHealthy"].as_i64() {
            least_healthy = least_healthy.min(h);
        }
        saw_blocked |= st["disruptionsAllowed"] == 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!worker.busy(), "the drains did not end");
    assert!(
        least_healthy >= 2,
        "the budget was broken: {least_healthy} healthy"
    );
    assert!(saw_blocked, "the disruption controller never said no");
    let details: Vec<String> = journal
        .audits()
        .into_iter()
        .filter_map(|a| match a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail,
            _ => None,
        })
        .collect();
    assert_eq!(details.len(), 2, "{:#?}", journal.audits());
    for d in &details {
        assert!(
            d.starts_with("kubernetes: 1 pods evicted, gone after"),
            "{d}"
        );
    }
    c.wait_for("the second replacement", Duration::from_secs(30), |c| {
        c.running_pods("app=serve").len() == 3
    })
    .unwrap();
    let after = c.running_pods("app=serve");
    assert!(
        after.iter().all(|(_, n)| !drained.contains(n)),
        "a replica on a drained node: {after:?}"
    );
    eprintln!(
        "two drains under minAvailable 2: both done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// 150 nodes with a pod each drained at once (the scale of NVSentinel's
/// KWOK test): request -> pods gone, per node and in all. A benchmark: run
/// it with `--ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run it with --ignored"]
async fn bench_150_nodes_drained_pods_gone() {
    const N: usize = 150;
    const GRACE: u64 = 1;
    let (c, nodes) = KubeCluster::with_ready_nodes("gpu-", N, Duration::from_secs(180)).unwrap();
    for n in &nodes {
        c.create(
            "/api/v1/namespaces/default/pods",
            &pod_on(&format!("train-{n}"), "train", n, GRACE),
        )
        .unwrap();
    }
    c.wait_for("150 pods running", Duration::from_secs(180), |c| {
        c.running_pods("app=train").len() == N
    })
    .unwrap();
    let kube = Kube::connect(Some(c.kubeconfig())).await.unwrap();
    // The default poll: 150 drains looking every 200 ms would be 1,500
    // requests a second to an API server sharing 2 cores.
    let (worker, journal) = worker_polling(kube, &nodes, Duration::from_secs(1));
    let asked = Timestamp::now();
    let started = Instant::now();
    for n in &nodes {
        worker.submit(request_for(&Target::node(n))).await.unwrap();
    }
    assert!(worker.wait_idle(Duration::from_secs(300)).await);
    let wall = started.elapsed();
    let at = |pick: &dyn Fn(&AuditEntry) -> bool| -> Vec<f64> {
        let mut v: Vec<f64> = journal
            .audits()
            .into_iter()
            .filter(|a| pick(&a.entry))
            .map(|a| (a.at.unix_nanos() - asked.unix_nanos()) as f64 / 1e9)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let cordoned = at(&|e| matches!(e, AuditEntry::StepSucceeded { step, .. } if step == "cordon"));
    let drain_started = at(&|e| matches!(e, AuditEntry::StepStarted { step } if step == "drain"));
    eprintln!(
        "cordoned p50 {:.2} s max {:.2} s; drain started p50 {:.2} s max {:.2} s",
        cordoned[cordoned.len() / 2],
        cordoned[cordoned.len() - 1],
        drain_started[drain_started.len() / 2],
        drain_started[drain_started.len() - 1]
    );
    let mut per_node =
        at(&|e| matches!(e, AuditEntry::StepSucceeded { step, .. } if step == "drain"));
    assert_eq!(per_node.len(), N, "every node drained");
    assert!(c.running_pods("app=train").is_empty(), "pods left");
    per_node.sort_by(f64::total_cmp);
    let pct = |p: f64| per_node[((per_node.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "{N} nodes drained at once (grace {GRACE} s): request -> pods gone p50 {:.2} s, p99 {:.2} s, max {:.2} s; all {N} in {:.2} s",
        pct(0.5),
        pct(0.99),
        per_node[per_node.len() - 1],
        wall.as_secs_f64()
    );
}
