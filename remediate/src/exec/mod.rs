//! Executors: the only code that touches Kubernetes, Slurm, BMCs and
//! pagers. Each is a reconciler: it observes the target first (already
//! cordoned? already off? already drained by someone else?) and reports
//! what it found, so a replayed step converges instead of repeating, and
//! pitcrew never claims (or later undoes) an operator's change.
//!
//! The traits take names already resolved from the inventory (Kubernetes
//! node name, Slurm node name, BMC address), so executors know nothing of
//! plans, budgets or Kafka.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::Timestamp;

pub mod check;
pub mod http;
pub mod ipmi;
pub mod kube;
pub mod kube_check;
pub mod kube_jobs;
pub mod page;
pub mod sim;
pub mod slurm;

/// A boxed future, so executors can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a step could not be done. Retryable errors are retried with backoff
/// (the API was busy, the BMC did not answer); permanent ones go to the
/// plan's `on_failure` at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("{system}: {message}")]
    Retryable {
        system: &'static str,
        message: String,
    },
    #[error("{system}: {message}")]
    Permanent {
        system: &'static str,
        message: String,
    },
    #[error("{system}: not configured")]
    NotConfigured { system: &'static str },
}

impl ExecError {
    pub fn retryable(system: &'static str, message: impl Into<String>) -> ExecError {
        ExecError::Retryable {
            system,
            message: message.into(),
        }
    }

    pub fn permanent(system: &'static str, message: impl Into<String>) -> ExecError {
        ExecError::Permanent {
            system,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ExecError::Retryable { .. })
    }
}

/// What a cordon found or did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CordonResult {
    /// pitcrew set `unschedulable` (false: it already was, by someone else).
    pub cordoned: bool,
    /// pitcrew added its taint.
    pub tainted: bool,
}

/// What is left on a node after its pods were evicted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsLeft {
    /// The node's kubelet reports Ready. One that does not cannot end its
    /// pods (nor are they running): nothing to wait for.
    pub node_ready: bool,
    pub pods: Vec<PodLeft>,
}

/// A pod still on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLeft {
    /// `namespace/name`
    pub name: String,
    /// When its grace period ends (its deletion timestamp), once it is
    /// terminating.
    pub grace_ends: Option<Timestamp>,
}

/// A training job with pods on a node, as the orchestrator labels them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOnNode {
    /// `kind/namespace/name`: `jobset/ml/llama`, `job/ml/train`,
    /// `pytorchjob/ml/bert`, `volcano/ml/resnet`...
    pub job: String,
    /// Its pods on the node that have not finished.
    pub pods: usize,
    /// The latest checkpoint its pods report saved
    /// (`pitcrew.io/checkpointed-at`, RFC 3339), if any.
    pub checkpointed_at: Option<Timestamp>,
    /// What evicting its pods does to it (a batch/v1 Job's completion mode
    /// and pod failure policy): for the audit.
    pub eviction: Option<String>,
}

/// Why pitcrew took a node out, as the Node shows it: a condition
/// (`PitcrewRemediation`) and annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMark {
    pub rule: Option<String>,
    pub incident: String,
    pub action: String,
    /// The incident's summary (the condition's message).
    pub summary: String,
}

/// One of pitcrew's steps or decisions, as an Event on the Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// CamelCase (`DrainSucceeded`, `Refused`).
    pub reason: String,
    /// What happened, with the action id.
    pub note: String,
    /// The step or decision (`drain`, `governor`).
    pub action: String,
    pub warning: bool,
}

/// Kubernetes.
pub trait Cluster: Send + Sync {
    /// Marks the node unschedulable and adds pitcrew's taint.
    fn cordon<'a>(
        &'a self,
        node: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, Result<CordonResult, ExecError>>;
    /// Evicts the node's pods (not DaemonSet or mirror pods), or only those
    /// of `job` (label `pitcrew.io/job` or `job-name`), through the Eviction
    /// API; a PDB's 429 is retried with backoff until `deadline`. Returns
    /// how many pods were evicted.
    fn evict<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
        deadline: Duration,
    ) -> BoxFuture<'a, Result<usize, ExecError>>;
    /// The pods [`Cluster::evict`] takes (all of the node's, or `job`'s)
    /// that are still on the node, and whether the node's kubelet is Ready
    /// (only a Ready kubelet can end them).
    fn pods_left<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PodsLeft, ExecError>>;
    /// The training jobs with unfinished pods on the node (the job
    /// boundary of a deferred drain, and what an eviction does to each).
    fn jobs_on<'a>(&'a self, _node: &'a str) -> BoxFuture<'a, Result<Vec<JobOnNode>, ExecError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Shows why the node is out (`Some`) or that it is back (`None`):
    /// the `PitcrewRemediation` condition and pitcrew's annotations.
    fn mark<'a>(
        &'a self,
        _node: &'a str,
        _mark: Option<&'a NodeMark>,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async { Ok(()) })
    }
    /// Records a step or decision as an Event on the node.
    fn event<'a>(
        &'a self,
        _node: &'a str,
        _event: &'a NodeEvent,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async { Ok(()) })
    }
    /// Undoes what pitcrew did: `cordoned` and `tainted` say what that was.
    fn uncordon<'a>(
        &'a self,
        node: &'a str,
        cordoned: bool,
        tainted: bool,
    ) -> BoxFuture<'a, Result<(), ExecError>>;
}

/// What a Slurm drain found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainResult {
    /// pitcrew drained it.
    Drained,
    /// It already was drained by pitcrew (a replay).
    AlreadyOurs,
    /// Someone else drained it: not pitcrew's to resume.
    AlreadyTheirs,
}

/// Slurm.
pub trait Scheduler: Send + Sync {
    /// Drains the node with `reason` (prefixed `pitcrew:`).
    fn drain<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<DrainResult, ExecError>>;
    /// Requeues the node's running jobs, or only `job`. Returns the job ids.
    fn requeue<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, ExecError>>;
    /// Resumes the node if its drain is pitcrew's. Returns whether it did.
    fn resume<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ExecError>>;
    /// The ids of the jobs running (or starting) on the node: none means the
    /// node is at a job boundary.
    fn running<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<String>, ExecError>>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOp {
    Off,
    On,
    Cycle,
}

/// A node's BMC.
pub trait Power: Send + Sync {
    fn status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<PowerState, ExecError>>;
    fn control<'a>(&'a self, node: &'a str, op: PowerOp) -> BoxFuture<'a, Result<(), ExecError>>;
}

/// Resets one GPU (a hook: the remediation host cannot reach the GPU).
pub trait GpuReset: Send + Sync {
    fn reset<'a>(
        &'a self,
        node: &'a str,
        gpu: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), ExecError>>;
}

/// A node's heartbeat, as verification reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// The GPUs the node's agent sees (the latest heartbeat's count), when
    /// it says.
    pub gpu_count: Option<u32>,
}

/// Where a node's liveness is seen, for verification.
pub trait Heartbeats: Send + Sync {
    /// The node's latest heartbeat at or after `since`, if any.
    fn seen_since<'a>(
        &'a self,
        node: &'a str,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Beat>, ExecError>>;
}

/// Runs a command from the config (`[gpu_reset] command = [...]`) with
/// `{node}` and `{gpu}` substituted; nothing secret is ever on its argv.
#[derive(Clone, Debug)]
pub struct CommandGpuReset {
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl GpuReset for CommandGpuReset {
    fn reset<'a>(
        &'a self,
        node: &'a str,
        gpu: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            let args: Vec<String> = self
                .command
                .iter()
                .map(|a| {
                    a.replace("{node}", node)
                        .replace("{gpu}", gpu.unwrap_or("all"))
                })
                .collect();
            let Some((program, rest)) = args.split_first() else {
                return Err(ExecError::NotConfigured {
                    system: "gpu_reset",
                });
            };
            let run = tokio::process::Command::new(program)
                .args(rest)
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(self.timeout, run)
                .await
                .map_err(|_| ExecError::retryable("gpu_reset", "timed out"))?
                .map_err(|e| ExecError::permanent("gpu_reset", format!("{program}: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(ExecError::permanent(
                    "gpu_reset",
                    format!(
                        "{program} exited {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ))
            }
        })
    }
}

/// Every executor the worker may use; absent ones are skipped (a
/// Slurm-only fleet has no `cluster`).
#[derive(Clone, Default)]
pub struct Executors {
    pub cluster: Option<Arc<dyn Cluster>>,
    pub scheduler: Option<Arc<dyn Scheduler>>,
    pub power: Option<Arc<dyn Power>>,
    pub gpu_reset: Option<Arc<dyn GpuReset>>,
    pub heartbeats: Option<Arc<dyn Heartbeats>>,
    /// Run by `verify` before a node is returned to service.
    pub node_check: Option<Arc<dyn check::NodeCheck>>,
    pub pager: Arc<page::Paging>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("cluster", &self.cluster.is_some())
            .field("scheduler", &self.scheduler.is_some())
            .field("power", &self.power.is_some())
            .field("gpu_reset", &self.gpu_reset.is_some())
            .field("heartbeats", &self.heartbeats.is_some())
            .field(
                "node_check",
                &self.node_check.as_ref().map(|c| c.describe()),
            )
            .field("pager", &self.pager)
            .finish()
    }
}
