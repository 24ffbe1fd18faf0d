//! A simulated fleet behind every executor trait: for `pitcrew demo` and
//! the worker's unit tests (the integration tests use the real things).
//! It keeps per-node Kubernetes, Slurm and power state, records every call
//! in order, and can be told to fail (a BMC that does not answer, a PDB
//! that blocks forever).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pitcrew_contract::Timestamp;

use super::check::{for_the_audit, CheckNode, CheckOutcome, NodeCheck};
use super::slurm::REASON_PREFIX;
use super::{
    Beat, BoxFuture, Cluster, CordonResult, DrainResult, ExecError, GpuReset, Heartbeats,
    JobOnNode, PodLeft, PodsLeft, Power, PowerOp, PowerState, Scheduler,
};

/// One simulated node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    pub unschedulable: bool,
    pub tainted: bool,
    pub pods: usize,
    pub slurm_drain_reason: Option<String>,
    pub jobs: Vec<String>,
    /// Training jobs' pods on the node, as Kubernetes labels them.
    pub k8s_jobs: Vec<JobOnNode>,
    pub power: PowerState,
    pub power_cycles: u32,
}

impl Default for SimNode {
    fn default() -> Self {
        SimNode {
            unschedulable: false,
            tainted: false,
            pods: 2,
            slurm_drain_reason: None,
            jobs: Vec::new(),
            k8s_jobs: Vec::new(),
            power: PowerState::On,
            power_cycles: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<String, SimNode>,
    calls: Vec<String>,
    bmc_down: BTreeSet<String>,
    /// The API server answers 503 to the pod list of a drain's wait.
    pod_list_down: bool,
    pdb_blocked: BTreeSet<String>,
    /// Nodes whose evicted pods never go (a kubelet that cannot kill them),
    /// with when they were evicted.
    stuck_pods: BTreeMap<String, Option<Timestamp>>,
    heartbeats: BTreeMap<String, Timestamp>,
    /// What a node's heartbeats say of its GPUs (absent: nothing).
    gpu_counts: BTreeMap<String, u32>,
    /// Nodes whose check fails, with what it prints.
    check_fails: BTreeMap<String, String>,
    requeued: Vec<String>,
}

fn toggle(set: &mut BTreeSet<String>, node: &str, on: bool) {
    if on {
        set.insert(node.to_owned());
    } else {
        set.remove(node);
    }
}

/// The simulated fleet. Cheap to clone (shared state).
#[derive(Clone, Debug, Default)]
pub struct SimFleet {
    inner: Arc<Mutex<Inner>>,
    /// Simulated latency of each call.
    pub latency: Duration,
    /// Where the nodes' heartbeat times come from (the worker's clock, so a
    /// test on virtual time sees them on the same timeline).
    pub clock: crate::worker::Clock,
}

impl SimFleet {
    pub fn new(nodes: impl IntoIterator<Item = String>) -> SimFleet {
        let fleet = SimFleet::default();
        {
            let mut i = fleet.lock();
            for n in nodes {
                i.nodes.insert(n, SimNode::default());
            }
        }
        fleet
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn node(&self, name: &str) -> Option<SimNode> {
        self.lock().nodes.get(name).cloned()
    }

    pub fn set_node(&self, name: &str, node: SimNode) {
        self.lock().nodes.insert(name.to_owned(), node);
    }

    /// Every call so far, like `cordon n3`, `power cycle n3`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    pub fn set_bmc_down(&self, node: &str, down: bool) {
        toggle(&mut self.lock().bmc_down, node, down);
    }

    /// The API server answers the drain's pod list with 503 (`true`) or
    /// normally again.
    pub fn set_pod_list_down(&self, down: bool) {
        self.lock().pod_list_down = down;
    }

    /// The node's evicted pods stay terminating (`true`) or go at once.
    pub fn set_pods_stuck(&self, node: &str, stuck: bool) {
        let mut i = self.lock();
        if stuck {
            i.stuck_pods.insert(node.to_owned(), None);
        } else {
            i.stuck_pods.remove(node);
        }
    }

    pub fn set_pdb_blocked(&self, node: &str, blocked: bool) {
        toggle(&mut self.lock().pdb_blocked, node, blocked);
    }

    pub fn heartbeat(&self, node: &str, at: Timestamp) {
        self.lock().heartbeats.insert(node.to_owned(), at);
    }

    /// The GPU count the node's heartbeats report from now on.
    pub fn set_gpu_count(&self, node: &str, gpus: Option<u32>) {
        let mut i = self.lock();
        match gpus {
            Some(n) => i.gpu_counts.insert(node.to_owned(), n),
            None => i.gpu_counts.remove(node),
        };
    }

    /// Makes the node's check fail with `output` (`None`: pass).
    pub fn set_check_fails(&self, node: &str, output: Option<&str>) {
        let mut i = self.lock();
        match output {
            Some(o) => i.check_fails.insert(node.to_owned(), o.to_owned()),
            None => i.check_fails.remove(node),
        };
    }

    /// Nodes out of service (unschedulable or drained), for the demo view.
    pub fn out_of_service(&self) -> usize {
        self.lock()
            .nodes
            .values()
            .filter(|n| n.unschedulable || n.slurm_drain_reason.is_some())
            .count()
    }

    fn call(&self, what: String) -> Result<(), ExecError> {
        self.lock().calls.push(what);
        Ok(())
    }

    async fn pause(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn with_node<T>(
        &self,
        system: &'static str,
        name: &str,
        f: impl FnOnce(&mut SimNode) -> T,
    ) -> Result<T, ExecError> {
        let mut i = self.lock();
        let n = i
            .nodes
            .get_mut(name)
            .ok_or_else(|| ExecError::permanent(system, format!("no node {name}")))?;
        Ok(f(n))
    }
}

impl Cluster for SimFleet {
    fn cordon<'a>(
        &'a self,
        node: &'a str,
        _action: &'a str,
    ) -> BoxFuture<'a, Result<CordonResult, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("cordon {node}"))?;
            self.with_node("kubernetes", node, |n| {
                let cordoned = !n.unschedulable;
                let tainted = !n.tainted;
                n.unschedulable = true;
                n.tainted = true;
                CordonResult { cordoned, tainted }
            })
        })
    }

    fn evict<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
        _deadline: Duration,
    ) -> BoxFuture<'a, Result<usize, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!(
                "evict {node}{}",
                job.map(|j| format!(" job={j}")).unwrap_or_default()
            ))?;
            if self.lock().pdb_blocked.contains(node) {
                return Err(ExecError::permanent(
                    "kubernetes",
                    format!("eviction blocked by a PodDisruptionBudget on {node}"),
                ));
            }
            let now = self.clock.now();
            if let Some(at) = self.lock().stuck_pods.get_mut(node) {
                at.get_or_insert(now);
            }
            self.with_node("kubernetes", node, |n| {
                let e = if job.is_some() { n.pods.min(1) } else { n.pods };
                n.pods -= e;
                n.k8s_jobs.clear();
                e
            })
        })
    }

    fn jobs_on<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<JobOnNode>, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.with_node("kubernetes", node, |n| n.k8s_jobs.clone())
        })
    }

    fn pods_left<'a>(
        &'a self,
        node: &'a str,
        _job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PodsLeft, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            let i = self.lock();
            if i.pod_list_down {
                return Err(ExecError::retryable(
                    "kubernetes",
                    "list pods: 503 the server is currently unable to handle the request",
                ));
            }
            let ready = i.nodes.get(node).is_some_and(|n| n.power == PowerState::On);
            let pods = match i.stuck_pods.get(node) {
                Some(Some(evicted)) => vec![PodLeft {
                    name: format!("default/stuck-on-{node}"),
                    grace_ends: Some(evicted.add_nanos(30_000_000_000)),
                }],
                _ => Vec::new(),
            };
            Ok(PodsLeft {
                node_ready: ready,
                pods,
            })
        })
    }

    fn uncordon<'a>(
        &'a self,
        node: &'a str,
        cordoned: bool,
        tainted: bool,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("uncordon {node}"))?;
            self.with_node("kubernetes", node, |n| {
                if cordoned {
                    n.unschedulable = false;
                }
                if tainted {
                    n.tainted = false;
                }
            })
        })
    }
}

impl Scheduler for SimFleet {
    fn running<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<String>, ExecError>> {
        Box::pin(async move { self.with_node("slurm", node, |n| n.jobs.clone()) })
    }

    fn drain<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<DrainResult, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("slurm drain {node}"))?;
            self.with_node("slurm", node, |n| match &n.slurm_drain_reason {
                Some(r) if r.starts_with(REASON_PREFIX) => DrainResult::AlreadyOurs,
                Some(_) => DrainResult::AlreadyTheirs,
                None => {
                    n.slurm_drain_reason = Some(format!("{REASON_PREFIX} {reason}"));
                    DrainResult::Drained
                }
            })
        })
    }

    fn requeue<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("slurm requeue {node}"))?;
            let jobs = self.with_node("slurm", node, |n| {
                let (take, keep): (Vec<String>, Vec<String>) =
                    n.jobs.drain(..).partition(|j| job.is_none_or(|x| x == j));
                n.jobs = keep;
                take
            })?;
            self.lock().requeued.extend(jobs.iter().cloned());
            Ok(jobs)
        })
    }

    fn resume<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("slurm resume {node}"))?;
            self.with_node("slurm", node, |n| {
                if n.slurm_drain_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(REASON_PREFIX))
                {
                    n.slurm_drain_reason = None;
                    true
                } else {
                    false
                }
            })
        })
    }
}

impl Power for SimFleet {
    fn status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<PowerState, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            if self.lock().bmc_down.contains(node) {
                return Err(ExecError::retryable(
                    "ipmi",
                    format!("bmc of {node}: no answer"),
                ));
            }
            self.with_node("ipmi", node, |n| n.power)
        })
    }

    fn control<'a>(&'a self, node: &'a str, op: PowerOp) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            self.pause().await;
            if self.lock().bmc_down.contains(node) {
                return Err(ExecError::retryable(
                    "ipmi",
                    format!("bmc of {node}: no answer"),
                ));
            }
            self.call(format!(
                "power {} {node}",
                match op {
                    PowerOp::Off => "off",
                    PowerOp::On => "on",
                    PowerOp::Cycle => "cycle",
                }
            ))?;
            let now = self.clock.now();
            let mut i = self.lock();
            let n = i
                .nodes
                .get_mut(node)
                .ok_or_else(|| ExecError::permanent("ipmi", format!("no node {node}")))?;
            match op {
                PowerOp::Off => n.power = PowerState::Off,
                PowerOp::On => n.power = PowerState::On,
                PowerOp::Cycle => {
                    n.power = PowerState::On;
                    n.power_cycles += 1;
                }
            }
            // The simulated node boots at once and says so.
            if n.power == PowerState::On {
                i.heartbeats.insert(node.to_owned(), now);
            }
            Ok(())
        })
    }
}

impl GpuReset for SimFleet {
    fn reset<'a>(
        &'a self,
        node: &'a str,
        gpu: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("gpu reset {node} {}", gpu.unwrap_or("all")))?;
            let now = self.clock.now();
            self.lock().heartbeats.insert(node.to_owned(), now);
            Ok(())
        })
    }
}

impl Heartbeats for SimFleet {
    fn seen_since<'a>(
        &'a self,
        node: &'a str,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Beat>, ExecError>> {
        Box::pin(async move {
            let i = self.lock();
            Ok(i.heartbeats
                .get(node)
                .is_some_and(|t| *t >= since)
                .then(|| Beat {
                    gpu_count: i.gpu_counts.get(node).copied(),
                }))
        })
    }
}

impl NodeCheck for SimFleet {
    fn run<'a>(&'a self, node: CheckNode<'a>) -> BoxFuture<'a, Result<CheckOutcome, ExecError>> {
        Box::pin(async move {
            self.pause().await;
            self.call(format!("check {}", node.node))?;
            let fails = self.lock().check_fails.get(node.node).cloned();
            Ok(match fails {
                Some(output) => CheckOutcome {
                    passed: false,
                    output: for_the_audit(&output),
                },
                None => CheckOutcome {
                    passed: true,
                    output: "all checks passed".into(),
                },
            })
        })
    }

    fn describe(&self) -> String {
        "simulated check".into()
    }
}
