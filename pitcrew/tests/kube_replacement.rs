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

/// Every node's agent heartbeat every 5 s (the default pack reboots a node
/// whose heartbeats stop), until dropped.
struct Heartbeats {
    beating: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeats {
    fn start(nodes: &[String], cfg: &pitcrew_bus::BusConfig) -> Heartbeats {
        let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (b, nodes, kafka, topic) = (
            std::sync::Arc::clone(&beating),
            nodes.to_vec(),
            cfg.kafka.clone(),
            cfg.topics.events.name.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let p = rt
                .block_on(async { Producer::new(&kafka, BusMetrics::default()) })
                .unwrap();
            while b.load(std::sync::atomic::Ordering::Relaxed) {
                for n in &nodes {
                    let _ = rt.block_on(p.send_message(&topic, &heartbeat(n)));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        });
        Heartbeats {
            beating,
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.beating
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// `pitcrew run` (rules and remediation) on the test broker with the
/// default pack and a `[kubernetes]` executor pointed at the cluster,
/// ready. Returns the process, the bus config (its topics) and the folder
/// of its config files (`pitcrew.toml` there serves an agent too).
fn start_pitcrew_run(
    c: &KubeCluster,
    nodes: &[String],
    name: &str,
) -> (
    std::process::Child,
    pitcrew_bus::BusConfig,
    std::path::PathBuf,
) {
    let prefix = unique(name);
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
        .args([
            "--log",
            &std::env::var("PITCREW_TEST_LOG").unwrap_or_else(|_| "error".into()),
            "run",
        ])
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
    (child, cfg, dir)
}

#[test]
#[ignore = "a benchmark: run it with --ignored"]
fn bench_fault_to_replacement_pod_running() {
    let (c, nodes) = KubeCluster::with_ready_nodes("kw", NODES, Duration::from_secs(90)).unwrap();
    let jobs: Vec<String> = (1..=JOBS).map(|i| format!("train-{i}")).collect();
    for j in &jobs {
        c.create("/apis/batch/v1/namespaces/default/jobs", &job(j))
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

    let (mut child, cfg, _dir) = start_pitcrew_run(&c, &nodes, "kwok-bench");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer = rt
        .block_on(async { Producer::new(&cfg.kafka, BusMetrics::default()) })
        .unwrap();

    let pump = Heartbeats::start(&nodes, &cfg);
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
    drop(pump);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{JOBS} faults ({BATCH} at a time) on {NODES} KWOK nodes, pods with a {GRACE_S} s grace period they use to the end:"
    );
    report("Xid 79 handed to Kafka -> node cordoned", to_cordon);
    report("-> the evicted pod gone (checkpoint written)", to_gone);
    report("-> the replacement pod Running elsewhere", to_running);
}

/// The whole path on real components: the node's agent (`pitcrew collect`)
/// reads an Xid 79 from its kernel log and sends it to Kafka; `pitcrew
/// run`'s rules ask for `reboot_node`; remediation cordons the node and
/// evicts the training Job's pod, which uses its grace period to the end;
/// the Job controller's replacement runs on another node, never on the
/// cordoned one.
#[test]
fn an_xid_79_in_the_agents_kernel_log_moves_the_training_job_to_another_node() {
    let (c, nodes) = KubeCluster::with_ready_nodes("kw", 3, Duration::from_secs(90)).unwrap();
    c.create("/apis/batch/v1/namespaces/default/jobs", &job("train"))
        .unwrap();
    let (pod, node) = c
        .wait_running("app=train", Duration::from_secs(60))
        .unwrap();
    let (mut run, cfg, dir) = start_pitcrew_run(&c, &nodes, "kwok-agent");
    // The other nodes' agents (the pod's node has its own, below).
    let others: Vec<String> = nodes.iter().filter(|n| **n != node).cloned().collect();
    let _beats = Heartbeats::start(&others, &cfg);

    // The agent of the pod's node, its kernel log holding the Xid.
    let root = dir.join("agent");
    for (path, text) in [
        ("proc/sys/kernel/random/boot_id", "boot-kw-agent"),
        // Up 1843.3 s: the kernel line below is stamped 1843300001 us
        // after boot, so it is dated when it is written.
        ("proc/uptime", "1843.30 1843.30"),
        // The kernel log device the agent follows, in /dev/kmsg's format.
        ("kmsg", ""),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::create_dir_all(root.join("sys")).unwrap();
    let listen = format!("127.0.0.1:{}", pitcrew_harness::free_port().unwrap());
    let mut agent = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["--config", dir.join("pitcrew.toml").to_str().unwrap()])
        .args([
            "--log",
            &std::env::var("PITCREW_TEST_LOG").unwrap_or_else(|_| "error".into()),
            "collect",
            "--node",
            &node,
        ])
        .args(["--no-nvml", "--interval-ms", "1000", "--listen", &listen])
        .arg("--kmsg")
        .arg(root.join("kmsg"))
        .arg("--proc-root")
        .arg(root.join("proc"))
        .arg("--sys-root")
        .arg(root.join("sys"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .env_remove("PITCREW_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The driver's line, as the kernel logs it after the agent started.
    let sent = Instant::now();
    {
        use std::io::Write;
        let mut kmsg = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("kmsg"))
            .unwrap();
        kmsg.write_all(b"4,2201,1843300001,-;NVRM: Xid (PCI:0000:2b:00): 79, pid=2211, name=python, GPU has fallen off the bus.\n")
            .unwrap();
    }
    let replaced = c.wait_for(
        "the replacement running elsewhere",
        Duration::from_secs(120),
        |c| {
            c.running_pods("app=train")
                .iter()
                .any(|(p, n)| *p != pod && *n != node)
        },
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = run.kill();
    let _ = run.wait();
    if let Err(e) = replaced {
        let pods = c.get("/api/v1/namespaces/default/pods").unwrap();
        let nodes = c.get("/api/v1/nodes").unwrap();
        let brief = |v: &Value, f: &dyn Fn(&Value) -> Value| -> Vec<String> {
            v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| f(x).to_string())
                .collect()
        };
        panic!(
            "{e}\npods: {:#?}\nnodes: {:#?}",
            brief(&pods, &|p| json!([
                p["metadata"]["name"],
                p["spec"]["nodeName"],
                p["status"]["phase"],
                p["metadata"]["deletionTimestamp"]
            ])),
            brief(&nodes, &|n| json!([
                n["metadata"]["name"],
                n["spec"]["unschedulable"],
                n["spec"]["taints"]
            ])),
        );
    }
    let took = sent.elapsed();
    let n = c.get(&format!("/api/v1/nodes/{node}")).unwrap();
    assert_eq!(
        n["spec"]["unschedulable"], true,
        "the faulty node stays out"
    );
    assert!(
        n["spec"]["taints"].as_array().is_some_and(|ts| ts
            .iter()
            .any(|t| t["key"] == "pitcrew.io/remediation" && t["value"] == "gpu-fallen-off-bus")),
        "{n:#}"
    );
    assert!(
        c.get(&format!("/api/v1/namespaces/default/pods/{pod}"))
            .is_err(),
        "the evicted pod is gone"
    );
    eprintln!(
        "agent started with the Xid in its kernel log -> replacement Running on another node: {:.1} s (grace {GRACE_S} s)",
        took.as_secs_f64()
    );
}
