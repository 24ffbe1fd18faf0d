//! The worker on tokio's paused clock: hour-long approvals, day-long job
//! boundaries and verification windows run in virtual time, with the
//! audit's timestamps on the same timeline, and no test sleeps on the wall
//! clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{ActionRequest, AuditEntry, AuditRecord, Phase, Target, Timestamp, V1};
use pitcrew_remediate::exec::page::Paging;
use pitcrew_remediate::exec::sim::{SimFleet, SimNode};
use pitcrew_remediate::exec::Executors;
use pitcrew_remediate::governor::GovernorConfig;
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::plan::{OnFailure, Plan, PlanBook, Step, StepKind};
use pitcrew_remediate::worker::Clock;
use pitcrew_remediate::{Governor, MemoryJournal, Worker, WorkerConfig};
use pitcrew_rules::{Inventory, NodeInfo};

const HOUR: Duration = Duration::from_secs(3600);

/// When the test's virtual clock starts.
fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000)
}

struct Rig {
    worker: Worker,
    fleet: SimFleet,
    journal: Arc<MemoryJournal>,
}

fn rig(plans: PlanBook, tweak: impl FnOnce(&mut WorkerConfig)) -> Rig {
    let clock = Clock::tokio_at(t0());
    let inv = Arc::new(Inventory::new(
        (0..4)
            .map(|i| NodeInfo {
                name: format!("n{i}"),
                gpus: Some(8),
                ..NodeInfo::default()
            })
            .collect(),
    ));
    let mut fleet = SimFleet::new(inv.nodes().iter().map(|n| n.name.clone()));
    fleet.clock = clock.clone();
    fleet.latency = Duration::from_millis(50);
    let exec = Executors {
        cluster: Some(Arc::new(fleet.clone())),
        scheduler: Some(Arc::new(fleet.clone())),
        power: Some(Arc::new(fleet.clone())),
        gpu_reset: Some(Arc::new(fleet.clone())),
        heartbeats: Some(Arc::new(fleet.clone())),
        node_check: Some(Arc::new(fleet.clone())),
        pager: Arc::new(Paging::default()),
    };
    let mut cfg = WorkerConfig {
        actor: "remediate@test".into(),
        clock,
        ..WorkerConfig::default()
    };
    tweak(&mut cfg);
    let journal = Arc::new(MemoryJournal::default());
    let gov = GovernorConfig {
        max_out_of_service: 100,
        max_out_of_service_percent: 100.0,
        domain_max: BTreeMap::new(),
        ..GovernorConfig::default()
    };
    let worker = Worker::new(
        cfg,
        plans,
        exec,
        journal.clone(),
        Governor::new(gov, Arc::clone(&inv)),
        inv,
        RemediateMetrics::default(),
    );
    Rig {
        worker,
        fleet,
        journal,
    }
}

fn request(node: &str, plan: &str) -> ActionRequest {
    let target = Target::node(node);
    ActionRequest {
        v: V1,
        id: ActionRequest::make_id(&format!("inc-{node}"), &target, plan, 0),
        incident: format!("inc-{node}"),
        rule: None,
        target,
        plan: plan.into(),
        params: BTreeMap::new(),
        requested_at: t0(),
        reason: format!("fault on {node}"),
        events: vec![format!("ev-{node}")],
        dry_run: false,
    }
}

/// Seconds from the start of the virtual clock to the first audit record
/// of `node` that `pick` accepts.
fn seconds_to(r: &Rig, node: &str, pick: impl Fn(&AuditRecord) -> bool) -> f64 {
    let a = r
        .journal
        .audits()
        .into_iter()
        .find(|a| a.target == Target::node(node) && pick(a))
        .unwrap_or_else(|| {
            panic!(
                "no such record: {:?}",
                r.journal.timeline(&Target::node(node))
            )
        });
    (a.at.unix_nanos() - t0().unix_nanos()) as f64 / 1e9
}

#[tokio::test(start_paused = true)]
async fn an_approval_expires_at_its_ttl() {
    let mut plans = PlanBook::builtin();
    plans.insert(Plan {
        name: "reboot_node".into(),
        steps: vec![
            Step::new(StepKind::Cordon),
            Step::new(StepKind::PowerCycle),
            Step::new(StepKind::Uncordon),
        ],
        on_failure: OnFailure::Escalate,
        retries: 0,
        approval: true,
        dry_run: false,
    });
    let r = rig(plans, |c| c.approval_ttl = HOUR);
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    tokio::time::sleep(HOUR - Duration::from_secs(60)).await;
    assert_eq!(
        r.worker.state(&Target::node("n1")).unwrap().phase,
        Phase::AwaitingApproval,
        "a minute before the TTL it still waits"
    );
    assert!(r.fleet.calls().is_empty());
    assert!(r.worker.wait_idle(2 * HOUR).await);
    assert_eq!(
        r.journal.timeline(&Target::node("n1")),
        ["received", "awaiting_approval", "refused:approval"]
    );
    let at = seconds_to(&r, "n1", |a| matches!(a.entry, AuditEntry::Refused { .. }));
    assert!((3600.0..3601.0).contains(&at), "refused at +{at} s");
    assert_eq!(r.fleet.count("power cycle"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deferred_drain_requeues_at_the_boundary_deadline_when_the_job_never_ends() {
    let r = rig(PlanBook::builtin(), |c| {
        c.boundary_deadline = 24 * HOUR;
        c.verify_poll = Duration::from_secs(30);
    });
    r.fleet.set_node(
        "n1",
        SimNode {
            jobs: vec!["101".into()],
            ..SimNode::default()
        },
    );
    let mut req = request("n1", "drain_node");
    req.params.insert("at".into(), "checkpoint".into());
    r.worker.submit(req).await.unwrap();
    tokio::time::sleep(23 * HOUR).await;
    let n = r.fleet.node("n1").unwrap();
    assert!(n.unschedulable, "cordoned at once");
    assert_eq!(n.jobs, ["101"], "the job runs on toward its checkpoint");
    assert_eq!(r.fleet.count("slurm requeue"), 0);
    assert!(r.worker.busy());
    assert!(r.worker.wait_idle(2 * HOUR).await);
    assert_eq!(r.fleet.count("slurm requeue"), 1, "{:?}", r.fleet.calls());
    let at = seconds_to(
        &r,
        "n1",
        |a| matches!(&a.entry, AuditEntry::StepSucceeded { step, .. } if step == "drain"),
    );
    assert!(
        (24.0 * 3600.0..24.0 * 3600.0 + 120.0).contains(&at),
        "drained at +{at} s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rebooted_node_returns_after_its_quiet_time() {
    let r = rig(PlanBook::builtin(), |c| {
        c.verify_quiet = Duration::from_secs(600);
        c.verify_poll = Duration::from_secs(5);
    });
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(
        r.fleet.node("n2").unwrap().unschedulable,
        "still out during its quiet time"
    );
    assert!(r.worker.wait_idle(HOUR).await);
    assert_eq!(r.fleet.count("power cycle"), 1);
    assert!(!r.fleet.node("n2").unwrap().unschedulable, "returned");
    let at = seconds_to(&r, "n2", |a| matches!(a.entry, AuditEntry::Returned));
    assert!((600.0..700.0).contains(&at), "returned at +{at} s");
}

/// A checkpoint-safe drain: the power step waits for the evicted pods to go,
/// and a pod stuck terminating past its grace period stops the plan before
/// any power step (escalated), unless `stuck_pods = proceed`.
#[tokio::test(start_paused = true)]
async fn a_pod_stuck_terminating_stops_the_plan_before_the_power_step() {
    let r = rig(PlanBook::builtin(), |_| {});
    r.fleet.set_pods_stuck("n1", true);
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(r.fleet.count("power"), 0, "{:?}", r.fleet.calls());
    assert_eq!(
        r.worker.state(&Target::node("n1")).unwrap().phase,
        Phase::InProgress,
        "within the grace period and its margin the drain still waits"
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        r.fleet.count("power"),
        0,
        "no power step while a pod may be writing"
    );
    assert_eq!(
        r.worker.state(&Target::node("n1")).unwrap().phase,
        Phase::Escalated
    );
    let failed = seconds_to(&r, "n1", |a| {
        matches!(&a.entry, AuditEntry::StepFailed { step, error, .. }
            if step == "drain" && error.contains("default/stuck-on-n1 still terminating"))
    });
    // Evicted at about 0 s, grace period 30 s, margin 30 s.
    assert!((59.0..=63.0).contains(&failed), "failed at {failed} s");

    let r = rig(PlanBook::builtin(), |c| {
        c.stuck_pods = pitcrew_remediate::worker::StuckPods::Proceed;
    });
    r.fleet.set_pods_stuck("n1", true);
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(r.fleet.count("power cycle"), 1, "{:?}", r.fleet.calls());
    let went_on = seconds_to(&r, "n1", |a| {
        matches!(&a.entry, AuditEntry::StepSucceeded { step, detail: Some(d) }
            if step == "drain" && d.contains("going on (stuck_pods = proceed)"))
    });
    assert!((59.0..=63.0).contains(&went_on), "went on at {went_on} s");
}

/// `reboot_node` whose failure goes to the next rung, RMA.
fn reboot_then_rma() -> PlanBook {
    let mut plans = PlanBook::builtin();
    let mut p = plans.get("reboot_node").unwrap().clone();
    p.on_failure = OnFailure::Plan("rma".into());
    plans.insert(p);
    plans
}

#[tokio::test(start_paused = true)]
async fn a_failed_node_check_keeps_the_node_out_and_takes_the_next_rung() {
    let r = rig(reboot_then_rma(), |c| {
        c.verify_quiet = Duration::from_secs(60);
    });
    r.fleet.set_check_fails(
        "n1",
        Some("dcgmi diag -r 2 (bmc password=hunter2)\nGPU 3: Memory: Fail"),
    );
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(HOUR).await);
    assert_eq!(r.fleet.count("power cycle"), 1);
    assert_eq!(r.fleet.count("check n1"), 1, "{:?}", r.fleet.calls());
    assert!(r.fleet.node("n1").unwrap().unschedulable, "kept out");
    let audits: Vec<AuditRecord> = r
        .journal
        .audits()
        .into_iter()
        .filter(|a| a.target == Target::node("n1"))
        .collect();
    let failed = audits
        .iter()
        .find_map(|a| match &a.entry {
            AuditEntry::StepFailed { step, error, .. } if step == "verify" => Some(error.clone()),
            _ => None,
        })
        .expect("verify failed");
    assert!(failed.contains("node check failed"), "{failed}");
    assert!(failed.contains("GPU 3: Memory: Fail"), "{failed}");
    assert!(
        !failed.contains("hunter2"),
        "a secret reached the audit: {failed}"
    );
    assert!(
        !audits
            .iter()
            .any(|a| matches!(a.entry, AuditEntry::Returned)),
        "returned after a failed check"
    );
    // The next rung ran: the RMA plan's ticket.
    assert!(
        audits.iter().any(|a| a.plan.as_deref() == Some("rma")
            && matches!(&a.entry, AuditEntry::StepSucceeded { step, .. } if step == "rma")),
        "{audits:#?}"
    );

    // The same check passing: the node returns, and the note says so.
    let r = rig(reboot_then_rma(), |c| {
        c.verify_quiet = Duration::from_secs(60);
    });
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(HOUR).await);
    assert!(!r.fleet.node("n1").unwrap().unschedulable, "returned");
    let verified = r
        .journal
        .audits()
        .iter()
        .find_map(|a| match &a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "verify" => detail.clone(),
            _ => None,
        })
        .unwrap();
    assert!(
        verified.contains("check passed (simulated check)"),
        "{verified}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_back_with_fewer_gpus_than_the_inventory_is_not_returned() {
    let r = rig(reboot_then_rma(), |c| {
        c.verify_timeout = Duration::from_secs(600);
        c.verify_quiet = Duration::from_secs(60);
    });
    r.fleet.set_gpu_count("n2", Some(7));
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(HOUR).await);
    assert!(r.fleet.node("n2").unwrap().unschedulable, "kept out");
    assert_eq!(
        r.fleet.count("check n2"),
        0,
        "no check on a node missing a GPU"
    );
    let failed_at = seconds_to(&r, "n2", |a| {
        matches!(&a.entry, AuditEntry::StepFailed { step, error, .. }
            if step == "verify" && error == "verify: n2 is back with 7 GPUs, the inventory says 8")
    });
    // It waited out the verify timeout for the missing GPU to show up.
    assert!(
        (600.0..700.0).contains(&failed_at),
        "failed at {failed_at} s"
    );

    // All eight back: returned.
    let r = rig(reboot_then_rma(), |c| {
        c.verify_quiet = Duration::from_secs(60);
    });
    r.fleet.set_gpu_count("n2", Some(8));
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(HOUR).await);
    assert!(!r.fleet.node("n2").unwrap().unschedulable);
}

#[tokio::test(start_paused = true)]
async fn a_deferred_drain_on_kubernetes_waits_for_the_jobs_checkpoint() {
    use pitcrew_remediate::exec::JobOnNode;
    let r = rig(PlanBook::builtin(), |c| {
        c.boundary_deadline = 24 * HOUR;
        c.verify_poll = Duration::from_secs(30);
    });
    let llama = |checkpointed_at: Option<Timestamp>| JobOnNode {
        job: "jobset/ml/llama".into(),
        pods: 2,
        checkpointed_at,
        eviction: None,
    };
    // A checkpoint from before the fault is not the boundary.
    r.fleet.set_node(
        "n1",
        SimNode {
            k8s_jobs: vec![llama(Some(Timestamp::from_unix_millis(
                t0().unix_millis() - 600_000,
            )))],
            ..SimNode::default()
        },
    );
    let mut req = request("n1", "drain_node");
    req.params.insert("at".into(), "checkpoint".into());
    r.worker.submit(req).await.unwrap();
    tokio::time::sleep(2 * HOUR).await;
    let n = r.fleet.node("n1").unwrap();
    assert!(n.unschedulable, "cordoned at once");
    assert_eq!(n.pods, 2, "the job's pods run on toward their checkpoint");
    assert_eq!(r.fleet.count("evict"), 0, "{:?}", r.fleet.calls());

    // The training loop reports a checkpoint: that is the boundary.
    let saved = Timestamp::from_unix_millis(t0().unix_millis() + 2 * 3_600_000);
    let mut n = r.fleet.node("n1").unwrap();
    n.k8s_jobs = vec![llama(Some(saved))];
    r.fleet.set_node("n1", n);
    assert!(r.worker.wait_idle(HOUR).await);
    assert_eq!(r.fleet.count("evict"), 1, "{:?}", r.fleet.calls());
    let detail = r
        .journal
        .audits()
        .into_iter()
        .find_map(|a| match a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail,
            _ => None,
        })
        .unwrap();
    assert!(detail.starts_with("job boundary after 72"), "{detail}");
    assert!(
        detail.contains(": jobset/ml/llama checkpointed at"),
        "{detail}"
    );
    let at = seconds_to(
        &r,
        "n1",
        |a| matches!(&a.entry, AuditEntry::StepSucceeded { step, .. } if step == "drain"),
    );
    assert!((7200.0..7200.0 + 60.0).contains(&at), "drained at +{at} s");
}

#[tokio::test(start_paused = true)]
async fn an_api_server_failing_after_the_eviction_never_leads_to_a_power_step() {
    let r = rig(PlanBook::builtin(), |c| {
        c.retry_base = Duration::from_secs(2);
    });
    r.fleet.set_pod_list_down(true);
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(HOUR).await);
    // The attempt and its two retries (with backoff): each evicts what is
    // still evictable (nothing, once the pods are terminating), then looks.
    assert_eq!(r.fleet.count("evict"), 3, "{:?}", r.fleet.calls());
    assert_eq!(
        r.fleet.count("power"),
        0,
        "power with the evicted pods' state unknown"
    );
    let state = r.worker.state(&Target::node("n1")).unwrap();
    assert_eq!(state.phase, Phase::Escalated);
    let failures: Vec<(String, bool)> = r
        .journal
        .audits()
        .into_iter()
        .filter_map(|a| match a.entry {
            AuditEntry::StepFailed {
                step,
                error,
                retryable,
            } if step == "drain" => Some((error, retryable)),
            _ => None,
        })
        .collect();
    // Then escalated, once, with the API server's answer: not an error loop.
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].0.contains("503") && failures[0].1,
        "{failures:?}"
    );

    // Back within the retries: the drain goes on, and so does the plan.
    let r = rig(PlanBook::builtin(), |c| {
        c.retry_base = Duration::from_secs(2);
    });
    r.fleet.set_pod_list_down(true);
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.fleet.set_pod_list_down(false);
    assert!(r.worker.wait_idle(HOUR).await);
    assert_eq!(r.fleet.count("power cycle"), 1, "{:?}", r.fleet.calls());
}
