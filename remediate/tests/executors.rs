//! Each executor against the real thing, started by the harness: OpenIPMI
//! `ipmi_sim` BMCs, a Slurm cluster (slurmctld + slurmd per node),
//! kube-apiserver with etcd, and a local webhook receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use pitcrew_contract::Timestamp;
use pitcrew_harness::ipmi::{SimulatedBmc, PASSWORD, USER};
use pitcrew_harness::kube::KubeApiserver;
use pitcrew_harness::slurm::SlurmCluster;
use pitcrew_harness::webhook::WebhookReceiver;
use pitcrew_remediate::exec::check::{CheckNode, NodeCheck};
use pitcrew_remediate::exec::ipmi::Ipmi;
use pitcrew_remediate::exec::kube::{Kube, TAINT_KEY};
use pitcrew_remediate::exec::page::{
    sign, Page, PageEvent, PageSeverity, Paging, Receiver, ReceiverKind, Retry, Secret,
};
use pitcrew_remediate::exec::slurm::{parse_node_line, Slurm, SlurmCheck};
use pitcrew_remediate::exec::{
    Cluster, CordonResult, DrainResult, Power, PowerOp, PowerState, Scheduler,
};

fn ipmi_for(bmc: &SimulatedBmc, password: &str) -> Ipmi {
    Ipmi {
        addresses: HashMap::from([("n1".to_owned(), bmc.address())]),
        username: USER.into(),
        password: Secret::new(password),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn ipmi_reads_and_cycles_chassis_power_on_a_simulated_bmc() {
    let bmc = SimulatedBmc::start().unwrap();
    let ipmi = ipmi_for(&bmc, PASSWORD);
    assert_eq!(ipmi.status("n1").await.unwrap(), PowerState::On);
    ipmi.control("n1", PowerOp::Cycle).await.unwrap();
    // ipmi_sim's cycle is off, then on about a second later; its chassis
    // script logs the command before it writes the state file, so under
    // load the two are read a moment apart: wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (bmc.power_events().len() < 2 || !bmc.powered_on()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bmc.power_events(), vec!["set power 0", "set power 1"]);
    assert!(bmc.powered_on());
    ipmi.control("n1", PowerOp::Off).await.unwrap();
    assert_eq!(ipmi.status("n1").await.unwrap(), PowerState::Off);
    ipmi.control("n1", PowerOp::On).await.unwrap();
    assert_eq!(ipmi.status("n1").await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn ipmi_failures_are_retryable_and_never_carry_the_password() {
    let bmc = SimulatedBmc::start().unwrap();
    let wrong = ipmi_for(&bmc, "not-the-Secret-pw");
    let err = wrong.status("n1").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = format!("{err} {err:?} {wrong:?}");
    assert!(!text.contains("not-the-Secret-pw"), "{text}");
    assert!(text.contains("cannot open a session"), "{text}");
    assert!(bmc.power_events().is_empty(), "nothing was done");
    // A BMC that does not answer at all.
    let port = pitcrew_harness::free_port().unwrap();
    let gone = Ipmi {
        addresses: HashMap::from([("n1".to_owned(), format!("127.0.0.1:{port}"))]),
        ..ipmi_for(&bmc, PASSWORD)
    };
    let err = gone.control("n1", PowerOp::Cycle).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn slurm_drains_requeues_and_resumes_only_its_own() {
    let cluster = SlurmCluster::start(&["n1", "n2", "n3"]).unwrap();
    let slurm = Slurm {
        conf: Some(cluster.conf().to_path_buf()),
        bin_dir: None,
        timeout: Duration::from_secs(20),
    };
    let job = cluster.submit_on("n1").unwrap();
    // Wait for the job to run on n1.
    let deadline = Instant::now() + Duration::from_secs(30);
    while slurm.jobs_on("n1").await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        slurm.drain("n1", "act-1 Xid 79 on GPU 3").await.unwrap(),
        DrainResult::Drained
    );
    let line = cluster.node_line("n1").unwrap();
    let view = parse_node_line(&line).unwrap();
    assert!(view.drained(), "{line}");
    assert_eq!(
        view.reason.as_deref(),
        Some("pitcrew: act-1 Xid 79 on GPU 3")
    );
    // Draining again is a replay, not a second drain.
    assert_eq!(
        slurm.drain("n1", "again").await.unwrap(),
        DrainResult::AlreadyOurs
    );

    let requeued = slurm.requeue("n1", None).await.unwrap();
    assert_eq!(requeued, vec![job.clone()]);
    let line = cluster.job_line(&job).unwrap();
    assert!(line.contains("Restarts=1"), "{line}");
    assert!(slurm.jobs_on("n1").await.unwrap().is_empty());

    assert!(slurm.resume("n1").await.unwrap());
    let view = parse_node_line(&cluster.node_line("n1").unwrap()).unwrap();
    assert!(!view.drained());

    // An operator's drain is theirs: not claimed, not resumed.
    cluster
        .run(
            "scontrol",
            &["update", "nodename=n2", "state=drain", "reason=bios update"],
        )
        .unwrap();
    assert_eq!(
        slurm.drain("n2", "x").await.unwrap(),
        DrainResult::AlreadyTheirs
    );
    assert!(!slurm.resume("n2").await.unwrap());
    let view = parse_node_line(&cluster.node_line("n2").unwrap()).unwrap();
    assert!(view.drained());
    assert_eq!(view.reason.as_deref(), Some("bios update"));
    // A node Slurm does not know is a permanent error.
    let err = slurm.drain("nope", "x").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_node_check_runs_through_slurm_on_the_drained_node_and_leaves_it_drained() {
    let cluster = SlurmCluster::start(&["n1", "n2"]).unwrap();
    let slurm = Slurm {
        conf: Some(cluster.conf().to_path_buf()),
        bin_dir: None,
        timeout: Duration::from_secs(20),
    };
    let check = |command: &str, timeout: u64| SlurmCheck {
        slurm: slurm.clone(),
        command: vec!["sh".into(), "-c".into(), command.into()],
        timeout: Duration::from_secs(timeout),
        user: None,
    };
    let node = |n| CheckNode {
        node: n,
        k8s: n,
        slurm: n,
        action: "act-1",
    };
    assert_eq!(
        slurm.drain("n1", "act-1 Xid 79 on GPU 3").await.unwrap(),
        DrainResult::Drained
    );
    let drained_as_before = || {
        let view = parse_node_line(&cluster.node_line("n1").unwrap()).unwrap();
        assert!(view.drained(), "{view:?}");
        assert_eq!(
            view.reason.as_deref(),
            Some("pitcrew: act-1 Xid 79 on GPU 3")
        );
        let resv = cluster.run("scontrol", &["show", "reservation"]).unwrap();
        assert!(
            !resv.contains("pitcrew-check-n1"),
            "reservation left: {resv}"
        );
    };

    // Passes: srun ran on n1 itself (SLURMD_NODENAME is slurmd's name).
    let ok = check("echo \"node $SLURMD_NODENAME: 8 GPUs pass\"", 60)
        .run(node("n1"))
        .await
        .unwrap();
    assert!(ok.passed, "{ok:?}");
    assert!(ok.output.contains("node n1: 8 GPUs pass"), "{}", ok.output);
    drained_as_before();

    // Fails: the verdict, with what it printed and its exit status.
    let bad = check("echo 'GPU 3: Memory: Fail token=abc123'; exit 3", 60)
        .run(node("n1"))
        .await
        .unwrap();
    assert!(!bad.passed);
    assert!(bad.output.contains("GPU 3: Memory: Fail"), "{}", bad.output);
    assert!(!bad.output.contains("abc123"), "{}", bad.output);
    assert!(bad.output.contains("exit"), "{}", bad.output);
    drained_as_before();

    // Hangs: a failed check, the step cancelled, the node drained again.
    let hung = check("sleep 120", 5).run(node("n1")).await.unwrap();
    assert!(!hung.passed);
    assert!(
        hung.output.contains("did not finish in 5 s"),
        "{}",
        hung.output
    );
    drained_as_before();
    let left = cluster
        .run("squeue", &["-h", "-w", "n1", "-o", "%A %T"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = left;
    while !left.trim().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = cluster
            .run("squeue", &["-h", "-w", "n1", "-o", "%A %T"])
            .unwrap();
    }
    assert!(left.trim().is_empty(), "the hung check still runs: {left}");

    // A node that is not drained stays so.
    let ok = check("true", 60).run(node("n2")).await.unwrap();
    assert!(ok.passed, "{ok:?}");
    assert!(!parse_node_line(&cluster.node_line("n2").unwrap())
        .unwrap()
        .drained());
}

fn kubeconfig(api: &KubeApiserver) -> tempfile_path::Path {
    let dir = pitcrew_harness::run_dir("kubeconfig").unwrap();
    let path = dir.join("config");
    api.write_kubeconfig(&path).unwrap();
    tempfile_path::Path(path)
}

mod tempfile_path {
    /// A file removed on drop.
    pub(crate) struct Path(pub(crate) std::path::PathBuf);
    impl Drop for Path {
        fn drop(&mut self) {
            if let Some(d) = self.0.parent() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

fn create_node(api: &KubeApiserver, name: &str, unschedulable: bool) {
    api.request(
        "POST",
        "/api/v1/nodes",
        Some(&format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}},"spec":{{"unschedulable":{unschedulable}}}}}"#
        )),
    )
    .unwrap();
}

fn create_pod(api: &KubeApiserver, name: &str, node: &str, app: &str) {
    api.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"{app}"}}}},"spec":{{"nodeName":"{node}","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )),
    )
    .unwrap();
}

#[tokio::test]
async fn kubernetes_cordons_taints_evicts_through_pdbs_and_uncordons_its_own() {
    let api = KubeApiserver::start().unwrap();
    let kc = kubeconfig(&api);
    let kube = Kube::connect(Some(&kc.0)).await.unwrap();
    // No controller manager: the default service account pods need.
    api.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
    )
    .unwrap();
    create_node(&api, "gpu-1", false);
    create_node(&api, "gpu-2", true);
    create_node(&api, "gpu-3", false);
    create_pod(&api, "train-0", "gpu-1", "train");
    create_pod(&api, "guarded-0", "gpu-1", "guarded");
    create_pod(&api, "elsewhere", "gpu-2", "train");
    // Running and Ready (there is no kubelet to say so): a Pending pod
    // would be evictable whatever its PDB says.
    let pod: serde_json::Value = serde_json::from_str(
        &api.request("GET", "/api/v1/namespaces/default/pods/guarded-0", None)
            .unwrap(),
    )
    .unwrap();
    let mut pod = pod;
    pod["status"] = serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    api.request(
        "PUT",
        "/api/v1/namespaces/default/pods/guarded-0/status",
        Some(&pod.to_string()),
    )
    .unwrap();
    // A PDB that allows no disruption of `guarded` (the test writes its
    // status: there is no controller manager).
    api.request(
        "POST",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        Some(r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"guard"},"spec":{"minAvailable":1,"selector":{"matchLabels":{"app":"guarded"}}}}"#),
    )
    .unwrap();
    let pdb = api
        .request(
            "GET",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard",
            None,
        )
        .unwrap();
    let mut pdb: serde_json::Value = serde_json::from_str(&pdb).unwrap();
    pdb["status"] = serde_json::json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1});
    api.request(
        "PUT",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard/status",
        Some(&pdb.to_string()),
    )
    .unwrap();

    let r = kube.cordon("gpu-1", "act-1").await.unwrap();
    assert!(r.cordoned && r.tainted);
    let node: serde_json::Value =
        serde_json::from_str(&api.request("GET", "/api/v1/nodes/gpu-1", None).unwrap()).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    let taints = node["spec"]["taints"].as_array().unwrap();
    assert!(taints
        .iter()
        .any(|t| t["key"] == TAINT_KEY && t["effect"] == "NoSchedule"));
    // A replay changes nothing.
    let again = kube.cordon("gpu-1", "act-1").await.unwrap();
    assert!(!again.cordoned && !again.tainted);

    // The PDB blocks `guarded-0`: retried with backoff, then reported.
    let started = Instant::now();
    let err = kube
        .evict("gpu-1", None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("default/guarded-0"), "{err}");
    assert!(!err.is_retryable());
    // `train-0` was evicted (deletionTimestamp set or gone); the other node's pod was not.
    let pods: serde_json::Value = serde_json::from_str(
        &api.request("GET", "/api/v1/namespaces/default/pods", None)
            .unwrap(),
    )
    .unwrap();
    let by_name: BTreeMap<String, serde_json::Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p.clone(),
            )
        })
        .collect();
    assert!(
        by_name
            .get("train-0")
            .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null()),
        "train-0 evicted"
    );
    assert!(by_name["guarded-0"]["metadata"]["deletionTimestamp"].is_null());
    assert!(by_name["elsewhere"]["metadata"]["deletionTimestamp"].is_null());

    // Once the PDB allows it, the drain completes.
    pdb["status"]["disruptionsAllowed"] = serde_json::json!(1);
    let current: serde_json::Value = serde_json::from_str(
        &api.request(
            "GET",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard",
            None,
        )
        .unwrap(),
    )
    .unwrap();
    pdb["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    api.request(
        "PUT",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/guard/status",
        Some(&pdb.to_string()),
    )
    .unwrap();
    let n = kube
        .evict("gpu-1", None, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n, 1);

    kube.uncordon("gpu-1", true, true).await.unwrap();
    let node: serde_json::Value =
        serde_json::from_str(&api.request("GET", "/api/v1/nodes/gpu-1", None).unwrap()).unwrap();
    assert!(node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false);
    assert!(node["spec"]["taints"]
        .as_array()
        .is_none_or(|t| t.iter().all(|t| t["key"] != TAINT_KEY)));

    // An operator's cordon: pitcrew adds its taint but does not claim the cordon.
    let r = kube.cordon("gpu-2", "act-2").await.unwrap();
    assert!(!r.cordoned && r.tainted);
    kube.uncordon("gpu-2", r.cordoned, r.tainted).await.unwrap();
    let node: serde_json::Value =
        serde_json::from_str(&api.request("GET", "/api/v1/nodes/gpu-2", None).unwrap()).unwrap();
    assert_eq!(
        node["spec"]["unschedulable"], true,
        "the operator's cordon stays"
    );
    // Cordons racing on one node: the resourceVersion guard turns the
    // losers' writes into 409s; they read again and find it done. One
    // claims the cordon, and there is one taint.
    let mut racing = kube.clone();
    racing.backoff = Duration::from_millis(5);
    let results = race_cordons(&racing, "gpu-3", 6).await;
    assert_eq!(
        results.iter().filter(|r| r.cordoned).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| r.tainted).count(),
        1,
        "{results:?}"
    );
    let node: serde_json::Value =
        serde_json::from_str(&api.request("GET", "/api/v1/nodes/gpu-3", None).unwrap()).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(
        node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["key"] == TAINT_KEY)
            .count(),
        1
    );

    // A node that does not exist (deleted from the cluster): permanent,
    // and said so.
    let err = kube.cordon("nope", "act-3").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("node nope not found"), "{err}");
}

/// An API server that answers every request `503` (an apiserver whose
/// etcd is away): every Kubernetes step's error is retryable, carrying the
/// answer, and none is taken for "no pods left".
#[tokio::test]
async fn an_api_server_answering_503_gives_retryable_errors_never_an_empty_node() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcdserver: request timed out","reason":"ServiceUnavailable","code":503}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_retry = false;
    let kube = Kube::new(kube::Client::try_from(config).unwrap());
    let errors = [
        kube.cordon("gpu-1", "act-1").await.map(|_| ()).unwrap_err(),
        kube.evict("gpu-1", None, Duration::from_secs(1))
            .await
            .map(|_| ())
            .unwrap_err(),
        kube.pods_left("gpu-1", None).await.map(|_| ()).unwrap_err(),
        kube.uncordon("gpu-1", true, true).await.unwrap_err(),
    ];
    for e in errors {
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("503"), "{e}");
    }
}

/// `n` cordons of `node` at once, each on its own task.
async fn race_cordons(kube: &Kube, node: &str, n: usize) -> Vec<CordonResult> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let kube = kube.clone();
            let node = node.to_owned();
            tokio::spawn(async move { kube.cordon(&node, &format!("act-race-{i}")).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}

fn page() -> Page {
    Page {
        dedup_key: "pitcrew/inc-1".into(),
        summary: "Xid 79 on n17".into(),
        severity: PageSeverity::Critical,
        target: "node/n17".into(),
        incident: Some("inc-1".into()),
        action: Some("act-1".into()),
        started_at: Timestamp::now(),
        details: BTreeMap::new(),
    }
}

fn paging(receivers: Vec<Receiver>) -> Paging {
    Paging::new(
        receivers,
        Retry {
            attempts: 4,
            base: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        },
        "pitcrew@test".into(),
    )
    .unwrap()
}

#[tokio::test]
async fn webhooks_are_signed_retried_on_500_and_429_and_resolved() {
    let hook = WebhookReceiver::start().unwrap();
    let key = Secret::new("hmac-key");
    let p = paging(vec![
        Receiver {
            name: "am".into(),
            kind: ReceiverKind::Webhook,
            url: Secret::new(hook.url("/am")),
            hmac_key: Some(key.clone()),
            teams: vec![],
            rma: false,
        },
        Receiver {
            name: "pd".into(),
            kind: ReceiverKind::PagerDuty {
                routing_key: Secret::new("R0UTE"),
            },
            url: Secret::new(hook.url("/pd")),
            hmac_key: None,
            teams: vec![],
            rma: false,
        },
    ]);
    hook.respond_next(500, None);
    hook.respond_next(429, Some(1));
    let started = Instant::now();
    p.send(&["am".into(), "pd".into()], &page(), PageEvent::Trigger)
        .await
        .unwrap();
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 4, "500, 429, 200 to am; 200 to pd");
    // Retry-After: 1 was honoured.
    assert!(reqs[2].at.duration_since(reqs[1].at) >= Duration::from_millis(900));
    assert!(started.elapsed() < Duration::from_secs(5));
    for r in &reqs[..3] {
        assert_eq!(r.path, "/am");
        let ts: i64 = r.header("x-pitcrew-timestamp").unwrap().parse().unwrap();
        let sig = r.header("x-pitcrew-signature").unwrap();
        assert_eq!(
            sig,
            format!("sha256={}", sign(&key, ts, r.body.as_bytes()).unwrap())
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
    }
    let pd: serde_json::Value = serde_json::from_str(&reqs[3].body).unwrap();
    assert_eq!(reqs[3].path, "/pd");
    assert_eq!(pd["routing_key"], "R0UTE");
    assert_eq!(pd["event_action"], "trigger");
    assert!(reqs[3].header("x-pitcrew-signature").is_none());

    p.send(&["am".into(), "pd".into()], &page(), PageEvent::Resolve)
        .await
        .unwrap();
    let reqs = hook.requests();
    let am: serde_json::Value = serde_json::from_str(&reqs[4].body).unwrap();
    assert_eq!(am["status"], "resolved");
    let pd: serde_json::Value = serde_json::from_str(&reqs[5].body).unwrap();
    assert_eq!(pd["event_action"], "resolve");
    assert_eq!(pd["dedup_key"], "pitcrew/inc-1");

    // A 400 is permanent: one try, an error that names the receiver, not its secrets.
    hook.respond_next(400, None);
    let err = p
        .send(&["pd".into()], &page(), PageEvent::Trigger)
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("pd refused the page: 400"),
        "{err}"
    );
    assert!(!err.to_string().contains("R0UTE"));
    assert_eq!(hook.requests().len(), 7);
}
