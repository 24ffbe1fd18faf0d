//! `pitcrew bench remediate`: the remediation service in this process, on
//! throwaway topics of a real Kafka, with the Kubernetes executor either a
//! real API server (`--kubeconfig`; the bench creates its Node objects) or
//! the simulated fleet. The cordon executor is wrapped to timestamp each
//! call, so the numbers are the service's own path: consume, decode,
//! durable state write (acked by Kafka), plan start, governor, audit, and
//! the call.
//!
//! 1. latency: one action request every `--probe-ms` for `--probes`
//!    distinct nodes; from handing the request to the producer to the
//!    cordon call starting, and to it having returned (with a real API
//!    server: the node is unschedulable and tainted);
//! 2. scale: `--nodes` requests at once, the budget allowing them all;
//!    from the first request produced to the last node cordoned.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pitcrew_bus::{BusConfig, BusMetrics, Producer};
use pitcrew_contract::{encode, ActionRequest, Target, Timestamp, V1};
use pitcrew_remediate::config::RemediateConfig;
use pitcrew_remediate::exec::sim::SimFleet;
use pitcrew_remediate::exec::{BoxFuture, Cluster, CordonResult, ExecError};
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_rules::{Inventory, NodeInfo};

use super::bench::quantile;
use pitcrew::service::remediate::{Service, ServiceSpec};

#[derive(Clone, Copy, Default)]
struct Call {
    started: Option<Instant>,
    returned: Option<Instant>,
    ok: bool,
}

/// Timestamps every cordon on its way to the real executor.
struct TimedCluster {
    inner: Arc<dyn Cluster>,
    calls: Mutex<HashMap<String, Call>>,
}

impl TimedCluster {
    fn call(&self, node: &str) -> Call {
        self.calls
            .lock()
            .map(|c| c.get(node).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Cluster for TimedCluster {
    fn cordon<'a>(
        &'a self,
        node: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, Result<CordonResult, ExecError>> {
        let started = Instant::now();
        Box::pin(async move {
            if let Ok(mut c) = self.calls.lock() {
                c.entry(node.to_owned())
                    .or_default()
                    .started
                    .get_or_insert(started);
            }
            let r = self.inner.cordon(node, action).await;
            if let Ok(mut c) = self.calls.lock() {
                let call = c.entry(node.to_owned()).or_default();
                call.returned = Some(Instant::now());
                call.ok = r.is_ok();
            }
            r
        })
    }

    fn evict<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
        deadline: Duration,
    ) -> BoxFuture<'a, Result<usize, ExecError>> {
        self.inner.evict(node, job, deadline)
    }

    fn pods_left<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<pitcrew_remediate::exec::PodsLeft, ExecError>> {
        self.inner.pods_left(node, job)
    }

    fn uncordon<'a>(
        &'a self,
        node: &'a str,
        cordoned: bool,
        tainted: bool,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        self.inner.uncordon(node, cordoned, tainted)
    }
}

fn request(node: &str, stamp: i64) -> ActionRequest {
    let target = Target::node(node);
    let incident = format!("inc-bench-{stamp}-{node}");
    ActionRequest {
        v: V1,
        id: ActionRequest::make_id(&incident, &target, "drain_node", 0),
        incident,
        rule: None,
        target,
        plan: "drain_node".to_owned(),
        params: Default::default(),
        requested_at: Timestamp::now(),
        reason: "bench: Xid 79, GPU fallen off the bus".to_owned(),
        events: vec![],
        dry_run: false,
    }
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {name:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (n={})",
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    );
}

/// Creates the bench's Node objects in the API server.
async fn create_nodes(kubeconfig: &Path, names: &[String]) -> anyhow::Result<kube::Client> {
    use k8s_openapi::api::core::v1::Node;
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    for name in names {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}
        }))?;
        api.create(&kube::api::PostParams::default(), &node)
            .await
            .with_context(|| format!("create node {name}"))?;
    }
    Ok(client)
}

/// How many of `names` the API server shows unschedulable with pitcrew's
/// taint.
async fn count_cordoned(client: &kube::Client, names: &[String]) -> anyhow::Result<usize> {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let list = api.list(&kube::api::ListParams::default()).await?;
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    Ok(list
        .items
        .iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|x| wanted.contains(x))
        })
        .filter(|n| {
            let spec = n.spec.as_ref();
            spec.and_then(|s| s.unschedulable).unwrap_or(false)
                && spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| {
                    t.iter()
                        .any(|t| t.key == pitcrew_remediate::exec::kube::TAINT_KEY)
                })
        })
        .count())
}

async fn delete_nodes(client: &kube::Client, names: &[String]) {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    for name in names {
        let _ = api.delete(name, &kube::api::DeleteParams::default()).await;
    }
}

async fn wait_for(
    cluster: &TimedCluster,
    names: &[String],
    returned: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = names
            .iter()
            .filter(|n| {
                let c = cluster.call(n);
                if returned {
                    !(c.returned.is_some() && c.ok)
                } else {
                    c.started.is_none()
                }
            })
            .count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{missing} of {} nodes not cordoned after {timeout:?}",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) async fn run(
    config: Option<&Path>,
    nodes: u32,
    probes: u32,
    probe_ms: u64,
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut bus = BusConfig::load(config)?;
    let stamp = Timestamp::now().unix_millis();
    let prefix = format!("bench{stamp}-");
    bus.topics = bus.topics.with_prefix(&prefix).single_broker();

    let warmup = vec![format!("bench{stamp}-w0")];
    let probe_nodes: Vec<String> = (0..probes).map(|i| format!("bench{stamp}-p{i}")).collect();
    let scale_nodes: Vec<String> = (0..nodes).map(|i| format!("bench{stamp}-s{i}")).collect();
    let all: Vec<String> = warmup
        .iter()
        .chain(&probe_nodes)
        .chain(&scale_nodes)
        .cloned()
        .collect();
    let inventory = Arc::new(Inventory::new(
        all.iter()
            .enumerate()
            .map(|(i, name)| NodeInfo {
                name: name.clone(),
                rack: Some(format!("rack{}", i / 16)),
                leaf_switch: Some(format!("leaf{}", i / 64)),
                k8s_node: Some(name.clone()),
                ..NodeInfo::default()
            })
            .collect(),
    ));
    let mut text = format!(
        "[governor]\nmax_out_of_service = {}\nmax_out_of_service_percent = 100.0\n\
         domain_max = {{ rack = 16, leaf_switch = 64 }}\n",
        all.len()
    );
    let client = match &kubeconfig {
        Some(kc) => {
            text.push_str(&format!(
                "[kubernetes]\nkubeconfig = {:?}\n",
                kc.display().to_string()
            ));
            let t = Instant::now();
            let client = create_nodes(kc, &all).await?;
            println!(
                "  created {} Node objects in {:.1} s",
                all.len(),
                t.elapsed().as_secs_f64()
            );
            Some(client)
        }
        None => None,
    };
    let rcfg = RemediateConfig::parse("bench.toml", &text).map_err(anyhow::Error::msg)?;
    println!(
        "remediate bench: {prefix} on {}, cordons against {}",
        bus.kafka.brokers,
        kubeconfig.as_ref().map_or_else(
            || "the simulated fleet".to_owned(),
            |p| format!("the API server of {}", p.display())
        )
    );

    let metrics = RemediateMetrics::default();
    let bus_metrics = BusMetrics::default();
    let mut timed: Option<Arc<TimedCluster>> = None;
    let service = Service::start(
        ServiceSpec {
            bus: &bus,
            remediation: &rcfg,
            inventory,
            actor: format!("remediate@{prefix}bench"),
            group_id: &format!("{prefix}remediate"),
            dry_run: false,
            create_topics: true,
        },
        &metrics,
        &bus_metrics,
        |exec| {
            // The configured executor (the API server) or the simulated
            // fleet, behind the timer.
            let inner = exec
                .cluster
                .take()
                .unwrap_or_else(|| Arc::new(SimFleet::new(all.iter().cloned())));
            let t = Arc::new(TimedCluster {
                inner,
                calls: Mutex::new(HashMap::new()),
            });
            exec.cluster = Some(Arc::clone(&t) as Arc<dyn Cluster>);
            timed = Some(t);
        },
    )
    .await?;
    let timed = timed.context("the executors were not built")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(service.consume(async {
        let _ = stopped.await;
    }));

    let mut producer_cfg = bus.kafka.clone();
    producer_cfg.producer.linger_ms = 0;
    let producer = Producer::new(&producer_cfg, BusMetrics::default())?;
    let topic = bus.topics.actions.name.clone();

    // Warm-up: the consumer group's first assignment is not measured.
    let t = Instant::now();
    let req = request(&warmup[0], stamp);
    producer
        .enqueue(&topic, &req.target.key(), &encode(&req), None)
        .await?
        .wait()
        .await?;
    wait_for(&timed, &warmup, true, Duration::from_secs(60)).await?;
    println!(
        "  warm-up: first request served after {:.2} s (group join)",
        t.elapsed().as_secs_f64()
    );

    // 1. Latency, one request at a time at a steady pace.
    let mut sent: Vec<(Instant, Instant)> = Vec::with_capacity(probe_nodes.len());
    let mut tick = tokio::time::interval(Duration::from_millis(probe_ms.max(1)));
    for node in &probe_nodes {
        tick.tick().await;
        let req = request(node, stamp);
        let t0 = Instant::now();
        producer
            .enqueue(&topic, &req.target.key(), &encode(&req), None)
            .await?
            .wait()
            .await?;
        sent.push((t0, Instant::now()));
    }
    wait_for(&timed, &probe_nodes, true, Duration::from_secs(60)).await?;
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    let mut to_done = Vec::new();
    for (node, (t0, acked)) in probe_nodes.iter().zip(&sent) {
        let c = timed.call(node);
        let (Some(started), Some(returned)) = (c.started, c.returned) else {
            continue;
        };
        from_send.push(started.saturating_duration_since(*t0).as_secs_f64() * 1e3);
        from_ack.push(started.saturating_duration_since(*acked).as_secs_f64() * 1e3);
        to_done.push(returned.saturating_duration_since(*t0).as_secs_f64() * 1e3);
    }
    println!(
        "latency: {} requests, one every {probe_ms} ms",
        probe_nodes.len()
    );
    summary("request produced -> cordon call starts", from_send);
    summary("request acked by Kafka -> cordon call starts", from_ack);
    summary("request produced -> node cordoned (call returned)", to_done);

    // 2. Scale: every request at once.
    let t0 = Instant::now();
    let mut pending = Vec::with_capacity(scale_nodes.len());
    for node in &scale_nodes {
        let req = request(node, stamp);
        pending.push(
            producer
                .enqueue(&topic, &req.target.key(), &encode(&req), None)
                .await?,
        );
    }
    for p in pending {
        p.wait().await?;
    }
    let produced = t0.elapsed();
    wait_for(&timed, &scale_nodes, true, Duration::from_secs(120)).await?;
    let last = scale_nodes
        .iter()
        .filter_map(|n| timed.call(n).returned)
        .max()
        .unwrap_or(t0);
    let first = scale_nodes
        .iter()
        .filter_map(|n| timed.call(n).started)
        .min()
        .unwrap_or(t0);
    let total = last.saturating_duration_since(t0).as_secs_f64();
    println!("scale: {} requests at once", scale_nodes.len());
    println!(
        "  all produced and acked after {:.1} ms; first cordon call at {:.1} ms; all {} nodes cordoned after {:.1} ms ({:.0} cordons/s)",
        produced.as_secs_f64() * 1e3,
        first.saturating_duration_since(t0).as_secs_f64() * 1e3,
        scale_nodes.len(),
        total * 1e3,
        scale_nodes.len() as f64 / total
    );
    if let Some(client) = &client {
        let n = count_cordoned(client, &scale_nodes).await?;
        println!(
            "  the API server shows {n} of {} unschedulable with pitcrew's taint",
            scale_nodes.len()
        );
        if n != scale_nodes.len() {
            anyhow::bail!("only {n} of {} nodes cordoned", scale_nodes.len());
        }
    }

    let _ = stop.send(());
    consuming.await??;
    if let Some(client) = &client {
        delete_nodes(client, &all).await;
    }
    Ok(())
}
