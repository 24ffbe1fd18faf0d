//! Fault to training running again, measured on a real Kubernetes control
//! plane (kube-apiserver, controller-manager, scheduler; KWOK's kubelets)
//! with `pitcrew run` on the real Kafka: an Xid 79 handed to Kafka for the
//! node of a training Job's pod -> the node cordoned -> the pod gone (it
//! uses its whole grace period, as a checkpoint would) -> the Job
//! controller's replacement Running on another node. A benchmark: run it
//! with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_bus::{BusMetrics, Producer};
use pitcrew_contract::{examples, Event, EventData, EventKind, Timestamp};
use pitcrew_harness::cluster::KubeCluster;
use pitcrew_tests::{config, config_file_text, unique};
use serde_json::{json, Value};

/// Twice the jobs: each faulted node stays out, each replacement needs a
/// free node.
const NODES: usize = 44;
const JOBS: usize = 20;
const GRACE_S: u64 = 5;
/// Faults in flight at once.
const BATCH: usize = 4;

fn job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {
                    "labels": {"app": name, "role": "trainer"},
                    "annotations": {
                        "pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                        "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "1h",
                        "pod-delete.stage.kwok.x-k8s.io/delay": format!("{GRACE_S}s"),
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": GRACE_S,
                    // One trainer per node, as GPU jobs take whole nodes.
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"role": "trainer"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }]}},
                    "containers": [{"name": "trainer", "image": "trainer:1"}],
                },
            },
        },
    })
}

fn xid79(node: &str) -> Event {
    let mut e = examples::event(EventKind::GpuXid);
    e.node = node.into();
    e.id = unique(&format!("xid79-{node}"));
    e.time = Timestamp::now();
    if let EventData::GpuXid(x) = &mut e.data {
        x.code = 79;
    }
    e
}

/// Every node's agent heartbeat (the default pack reboots a silent node).
fn heartbeat(node: &str) -> Event {
    let mut e = examples::event(EventKind::NodeHeartbeat);
    e.node = node.to_owned();
    e.time = Timestamp::now();
    e.id = unique(&format!("hb-{node}"));
    if let EventData::NodeHeartbeat(h) = &mut e.data {
        h.driver_version = None;
        h.boot_id = format!("boot-{node}");
    }
    e
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    eprintln!(
        "{what:<44} p50 {:>6.2} s  p99 {:>6.2} s  max {:>6.2} s  (n={})",
        percentile(&v, 0.5).as_secs_f64(),
        percentile(&v, 0.99).as_secs_f64(),
        v.last().unwrap().as_secs_f64(),
        v.len()
    );
}

#[test]
#[ignore = "a benchmark: run it with --ignored"]
fn bench_fault_to_replacement_pod_running() {
    let c = KubeCluster::start().unwrap();
    let nodes: Vec<String> = (1..=NODES).map(|i| format!("kw{i}")).collect();
    c.add_nodes(&nodes, &[]).unwrap();
    c.wait_nodes_ready(&nodes, Duration::from_secs(90)).unwrap();
    let jobs: Vec<String> = (1..=JOBS).map(|i| format!("train-{i}")).collect();
    for j in &jobs {
        c.api()
            .request(
                "POST",
                "/apis/batch/v1/namespaces/default/jobs",
                Some(&job(j).to_string()),
            )
            .unwrap();
    }
    if let Err(e) = c.wait_for("every job running", Duration::from_secs(120), |c| {
        jobs.iter()
            .all(|j| !c.running_pods(&format!("app={j}")).is_empty())
    }) {
        let pods = c.get("/api/v1/namespaces/default/pods").unwrap();
        let seen: Vec<String> = pods["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                format!(
                    "{} {} {} {}",
                    p["metadata"]["name"],
                    p["spec"]["nodeName"],
                    p["status"]["phase"],
                    p["metadata"]["labels"]
                )
            })
            .collect();
        panic!("{e}\n{}", seen.join("\n"));
    }

    let prefix = unique("kwok-bench");
    let cfg = config(&prefix);
    let dir = std::env::temp_dir().join(format!("pitcrew-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pitcrew.toml"), config_file_text(&cfg)).unwrap();
    let inventory: String = nodes
        .iter()
        .map(|n| format!("[[node]]\nname = \"{n}\"\ngpus = 8\n"))
        .collect();
    std::fs::write(dir.join("inventory.toml"), inventory).unwrap();
    // The built-in reboot_node plan; no BMC here, so after the drain its
    // power step fails and the node is escalated, out of service: what is
    // measured ends at the drain and the replacement.
    std::fs::write(
        dir.join("remediation.toml"),
        format!(
            "[remediate]\nretry_base = \"100ms\"\n[governor]\nmax_out_of_service = 100\nmax_out_of_service_percent = 100.0\n[kubernetes]\nkubeconfig = \"{}\"\n",
            c.kubeconfig().display()
        ),
    )
    .unwrap();
    let port = pitcrew_harness::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["--config", dir.join("pitcrew.toml").to_str().unwrap()])
        .args(["--log", "error", "run"])
        .args(["--inventory", dir.join("inventory.toml").to_str().unwrap()])
        .args([
            "--remediation",
            dir.join("remediation.toml").to_str().unwrap(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--group-topic", &format!("{prefix}events.by-group")])
        .args(["--group-id", &format!("{prefix}rules")])
        .args(["--remediate-group-id", &format!("{prefix}remediate")])
        .args(["--lateness", "1s", "--idle-grace", "1s", "--instance", "kw"])
        .env_remove("PITCREW_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        if !text.is_empty() {
            eprintln!("pitcrew run stderr:\n{text}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pitcrew_harness::http_ok(port, "/readyz") {
        assert!(Instant::now() < deadline, "pitcrew run never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer = rt
        .block_on(async { Producer::new(&cfg.kafka, BusMetrics::default()) })
        .unwrap();

    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pump = {
        let (beating, nodes, kafka, topic) = (
            std::sync::Arc::clone(&beating),
            nodes.clone(),
            cfg.kafka.clone(),
            cfg.topics.events.name.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let p = rt
                .block_on(async { Producer::new(&kafka, BusMetrics::default()) })
                .unwrap();
            while beating.load(std::sync::atomic::Ordering::Relaxed) {
                for n in &nodes {
                    let _ = rt.block_on(p.send_message(&topic, &heartbeat(n)));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let (mut to_cordon, mut to_gone, mut to_running) = (Vec::new(), Vec::new(), Vec::new());
    for batch in jobs.chunks(BATCH) {
        // (job, its pod, its node, when the fault was handed to Kafka)
        let mut hit = Vec::new();
        for j in batch {
            let (pod, node) = c.running_pods(&format!("app={j}")).remove(0);
            let sent = Instant::now();
            // Handed to Kafka: sent and acknowledged, as the agent sends.
            rt.block_on(producer.send_message(&cfg.topics.events.name, &xid79(&node)))
                .unwrap();
            hit.push((j.clone(), pod, node, sent, None, None, None));
        }
        let limit = Instant::now() + Duration::from_secs(120);
        let mut done = 0;
        while done < hit.len() {
            assert!(Instant::now() < limit, "not all replaced: {hit:?}");
            done = 0;
            for (j, pod, node, sent, cordoned, gone, replaced_at) in &mut hit {
                if cordoned.is_none()
                    && c.get(&format!("/api/v1/nodes/{node}")).unwrap()["spec"]["unschedulable"]
                        == true
                {
                    *cordoned = Some(sent.elapsed());
                }
                if gone.is_none()
                    && c.get(&format!("/api/v1/namespaces/default/pods/{pod}"))
                        .is_err()
                {
                    *gone = Some(sent.elapsed());
                }
                if replaced_at.is_none()
                    && c.running_pods(&format!("app={j}"))
                        .iter()
                        .any(|(p, n)| p != pod && n != node)
                {
                    *replaced_at = Some(sent.elapsed());
                }
                if cordoned.is_some() && gone.is_some() && replaced_at.is_some() {
                    done += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, _, _, _, cordoned, gone, replaced_at) in hit {
            to_cordon.push(cordoned.unwrap());
            to_gone.push(gone.unwrap());
            to_running.push(replaced_at.unwrap());
        }
    }
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = pump.join();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{JOBS} faults ({BATCH} at a time) on {NODES} KWOK nodes, pods with a {GRACE_S} s grace period they use to the end:"
    );
    report("Xid 79 handed to Kafka -> node cordoned", to_cordon);
    report("-> the evicted pod gone (checkpoint written)", to_gone);
    report("-> the replacement pod Running elsewhere", to_running);
}
