//! The worker end to end on a simulated fleet (the executors are mocks
//! here; tests/ in the pitcrew crate run the real Kubernetes, Slurm and
//! BMCs) with a real local webhook receiver for pages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{
    ActionRequest, AuditEntry, Incident, IncidentStatus, Intent, Phase, RemediationState, Severity,
    Target, Timestamp, V1,
};
use pitcrew_harness::webhook::WebhookReceiver;
use pitcrew_remediate::exec::page::{Paging, Receiver, ReceiverKind, Retry, Secret};
use pitcrew_remediate::exec::sim::{SimFleet, SimNode};
use pitcrew_remediate::exec::Executors;
use pitcrew_remediate::governor::GovernorConfig;
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::plan::{OnFailure, Plan, PlanBook, Step, StepKind};
use pitcrew_remediate::worker::{breaker_target, Submitted};
use pitcrew_remediate::{Governor, MemoryJournal, Worker, WorkerConfig};
use pitcrew_rules::{Inventory, NodeInfo};

struct Rig {
    worker: Worker,
    fleet: SimFleet,
    journal: Arc<MemoryJournal>,
    hook: WebhookReceiver,
}

fn inventory(n: usize) -> Arc<Inventory> {
    Arc::new(Inventory::new(
        (0..n)
            .map(|i| NodeInfo {
                name: format!("n{i}"),
                rack: Some(format!("r{}", i / 10)),
                ..NodeInfo::default()
            })
            .collect(),
    ))
}

fn rig_with(
    n: usize,
    gov: GovernorConfig,
    plans: PlanBook,
    tweak: impl FnOnce(&mut WorkerConfig),
) -> Rig {
    let inv = inventory(n);
    let fleet = SimFleet::new(inv.nodes().iter().map(|n| n.name.clone()));
    let hook = WebhookReceiver::start().unwrap();
    let paging = Paging::new(
        vec![Receiver {
            name: "oncall".into(),
            kind: ReceiverKind::Webhook,
            url: Secret::new(hook.url("/alerts")),
            hmac_key: Some(Secret::new("k")),
            teams: vec![],
            rma: false,
        }],
        Retry {
            attempts: 3,
            base: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        "pitcrew@test".into(),
    )
    .unwrap();
    let exec = Executors {
        cluster: Some(Arc::new(fleet.clone())),
        scheduler: Some(Arc::new(fleet.clone())),
        power: Some(Arc::new(fleet.clone())),
        gpu_reset: Some(Arc::new(fleet.clone())),
        heartbeats: Some(Arc::new(fleet.clone())),
        node_check: None,
        pager: Arc::new(paging),
    };
    let mut cfg = WorkerConfig {
        actor: "remediate@test".into(),
        verify_timeout: Duration::from_secs(2),
        verify_quiet: Duration::from_millis(100),
        verify_poll: Duration::from_millis(20),
        retry_base: Duration::from_millis(10),
        ..WorkerConfig::default()
    };
    tweak(&mut cfg);
    let journal = Arc::new(MemoryJournal::default());
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
        hook,
    }
}

fn loose_governor() -> GovernorConfig {
    GovernorConfig {
        max_out_of_service: 100,
        max_out_of_service_percent: 100.0,
        domain_max: BTreeMap::new(),
        ..GovernorConfig::default()
    }
}

fn rig(n: usize) -> Rig {
    rig_with(n, loose_governor(), PlanBook::builtin(), |_| {})
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
        requested_at: Timestamp::now(),
        reason: format!("Xid 79 on {node}"),
        events: vec![format!("ev-{node}")],
        dry_run: false,
    }
}

fn decisions(j: &MemoryJournal, node: &str) -> Vec<String> {
    j.timeline(&Target::node(node))
}

#[tokio::test]
async fn reboot_runs_every_step_once_and_returns_the_node() {
    let r = rig(4);
    r.fleet.set_node(
        "n1",
        SimNode {
            jobs: vec!["101".into()],
            ..SimNode::default()
        },
    );
    let req = request("n1", "reboot_node");
    assert_eq!(
        r.worker.submit(req.clone()).await.unwrap(),
        Submitted::Started
    );
    // The same action delivered again (a Kafka redelivery) runs once.
    assert_eq!(
        r.worker.submit(req.clone()).await.unwrap(),
        Submitted::Duplicate
    );
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(r.worker.submit(req).await.unwrap(), Submitted::Duplicate);
    assert_eq!(
        r.fleet.calls(),
        vec![
            "cordon n1",
            "slurm drain n1",
            "evict n1",
            "slurm requeue n1",
            "power cycle n1",
            "uncordon n1",
            "slurm resume n1"
        ]
    );
    let n = r.fleet.node("n1").unwrap();
    assert!(!n.unschedulable && !n.tainted && n.slurm_drain_reason.is_none());
    assert_eq!(n.power_cycles, 1);
    let t = decisions(&r.journal, "n1");
    assert_eq!(
        t,
        vec![
            "received",
            "duplicate",
            "allowed:cordon",
            "started:cordon",
            "succeeded:cordon",
            "allowed:drain",
            "started:drain",
            "succeeded:drain",
            "allowed:power_cycle",
            "intent:power_cycle",
            "started:power_cycle",
            "succeeded:power_cycle",
            "started:verify",
            "succeeded:verify",
            "started:uncordon",
            "succeeded:uncordon",
            "returned",
            "duplicate",
        ]
    );
    // The causal chain is on every record.
    let audits = r.journal.audits();
    assert!(audits
        .iter()
        .all(|a| a.incident.as_deref() == Some("inc-n1") && a.events == vec!["ev-n1".to_owned()]));
    let st = r.worker.state(&Target::node("n1")).unwrap();
    assert_eq!(st.phase, Phase::Healthy);
    assert!(!st.owned.any());
    assert_eq!(st.attempts.len(), 1);
    assert_eq!(r.worker.budget().out_of_service, 0);
}

#[tokio::test]
async fn an_operators_cordon_and_drain_are_left_alone() {
    let r = rig(4);
    r.fleet.set_node(
        "n2",
        SimNode {
            unschedulable: true,
            tainted: true,
            slurm_drain_reason: Some("bios update".into()),
            ..SimNode::default()
        },
    );
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    let n = r.fleet.node("n2").unwrap();
    assert!(n.unschedulable, "the operator's cordon stays");
    assert_eq!(n.slurm_drain_reason.as_deref(), Some("bios update"));
    assert!(!r.fleet.calls().iter().any(|c| c == "slurm resume n2"));
    assert!(decisions(&r.journal, "n2").contains(&"already_done:cordon".to_owned()));
}

#[tokio::test]
async fn a_storm_lets_only_the_budget_through_latches_the_breaker_and_pages_once() {
    let gov = GovernorConfig {
        max_out_of_service: 100,
        max_out_of_service_percent: 5.0,
        domain_max: BTreeMap::new(),
        trip_after: 5,
        buckets: vec![],
        ..GovernorConfig::default()
    };
    let r = rig_with(100, gov, PlanBook::builtin(), |_| {});
    // 30% of the fleet asks for a reboot at once.
    for i in 0..30 {
        r.worker
            .submit(request(&format!("n{i}"), "reboot_node"))
            .await
            .unwrap();
    }
    assert!(r.worker.wait_idle(Duration::from_secs(20)).await);
    assert_eq!(r.fleet.count("power cycle"), 5, "5% of 100 nodes");
    assert!(r.worker.breaker().is_some(), "the breaker latched");
    r.hook.wait_for(1, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let pages = r.hook.requests();
    assert_eq!(pages.len(), 1, "one grouped page for the storm");
    assert!(
        pages[0].body.contains("circuit breaker open"),
        "{}",
        pages[0].body
    );
    assert!(pages[0]
        .header("x-pitcrew-signature")
        .unwrap()
        .starts_with("sha256="));
    let refused = r
        .journal
        .audits()
        .iter()
        .filter(|a| matches!(a.entry, AuditEntry::Refused { .. }))
        .count();
    assert_eq!(refused, 25);
    // Latched: even with budget free, nothing destructive runs until reset.
    r.worker
        .submit(request("n99", "reboot_node"))
        .await
        .unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(r.fleet.count("power cycle"), 5);
    r.worker.reset_breaker("alice").await.unwrap();
    assert!(r.worker.breaker().is_none());
    // The breaker's page is resolved.
    let reqs = r.hook.wait_for(2, Duration::from_secs(2));
    assert!(
        reqs[1].body.contains("\"status\":\"resolved\""),
        "{}",
        reqs[1].body
    );
    let breaker_timeline = r.journal.timeline(&breaker_target());
    assert_eq!(
        breaker_timeline
            .iter()
            .filter(|d| *d == "breaker_opened")
            .count(),
        1
    );
    assert!(breaker_timeline.contains(&"breaker_reset".to_owned()));
}

#[tokio::test]
async fn an_unanswering_bmc_is_retried_then_escalated() {
    let r = rig(4);
    r.fleet.set_bmc_down("n3", true);
    r.worker.submit(request("n3", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    let t = decisions(&r.journal, "n3");
    assert!(t.contains(&"failed:power_cycle".to_owned()), "{t:?}");
    assert!(t.contains(&"escalated".to_owned()), "{t:?}");
    let pages = r.hook.wait_for(1, Duration::from_secs(2));
    assert!(
        pages[0].body.contains("pitcrew/escalation/node/n3"),
        "{}",
        pages[0].body
    );
    let st = r.worker.state(&Target::node("n3")).unwrap();
    assert_eq!(st.phase, Phase::Escalated);
    assert!(
        st.owned.k8s_cordon,
        "the node stays out of service for people"
    );
    assert_eq!(r.worker.budget().out_of_service, 1);
}

#[tokio::test]
async fn a_restart_after_the_intent_does_not_cycle_again() {
    let r = rig(4);
    let req = request("n1", "reboot_node");
    // The state a crash left: cordoned, drained, intent to cycle written.
    let mut st = RemediationState::healthy(Target::node("n1"), Timestamp::now());
    st.phase = Phase::InProgress;
    st.action = Some(req.id.clone());
    st.plan = Some(req.plan.clone());
    st.request = Some(req.clone());
    st.handled = vec![req.id.clone()];
    st.step = 2;
    st.owned.k8s_cordon = true;
    st.owned.k8s_taint = true;
    st.intent = Some(Intent {
        step: "power_cycle".into(),
        action: req.id.clone(),
        written_at: Timestamp::now(),
    });
    r.fleet.set_node(
        "n1",
        SimNode {
            unschedulable: true,
            tainted: true,
            ..SimNode::default()
        },
    );
    r.fleet.heartbeat("n1", Timestamp::now());
    r.worker.restore(vec![st]);
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(r.fleet.count("power cycle"), 0, "{:?}", r.fleet.calls());
    let t = decisions(&r.journal, "n1");
    assert!(t.contains(&"already_done:power_cycle".to_owned()), "{t:?}");
    assert!(t.contains(&"returned".to_owned()), "{t:?}");
    assert!(!r.fleet.node("n1").unwrap().unschedulable);
    // A redelivery of the same action after the restart runs nothing.
    assert_eq!(r.worker.submit(req).await.unwrap(), Submitted::Duplicate);
}

#[tokio::test]
async fn approval_gates_a_plan_and_expires() {
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
    let r = rig_with(4, loose_governor(), plans, |c| {
        c.approval_ttl = Duration::from_millis(400)
    });
    let a = request("n1", "reboot_node");
    r.worker.submit(a.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        r.worker.state(&Target::node("n1")).unwrap().phase,
        Phase::AwaitingApproval
    );
    assert!(r.fleet.calls().is_empty(), "nothing runs before approval");
    assert!(r.worker.approve("act-nope", "bob").is_err());
    r.worker.approve(&a.id, "bob").unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(r.fleet.count("power cycle"), 1);
    r.worker.submit(request("n2", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(r.fleet.count("power cycle n2"), 0);
    let t = decisions(&r.journal, "n2");
    assert_eq!(t, vec!["received", "awaiting_approval", "refused:approval"]);
    assert_eq!(
        r.worker.state(&Target::node("n2")).unwrap().phase,
        Phase::Healthy
    );
}

#[tokio::test]
async fn dry_run_touches_nothing_and_says_what_it_would_do() {
    let r = rig_with(4, loose_governor(), PlanBook::builtin(), |c| {
        c.dry_run = true
    });
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    assert!(
        r.fleet
            .calls()
            .iter()
            .all(|c| !c.starts_with("cordon") && !c.starts_with("power")),
        "{:?}",
        r.fleet.calls()
    );
    let t = decisions(&r.journal, "n1");
    assert!(
        t.contains(&"dry_run:cordon".to_owned()) && t.contains(&"dry_run:power_cycle".to_owned()),
        "{t:?}"
    );
}

fn incident(id: &str, node: &str, status: IncidentStatus) -> Incident {
    Incident {
        v: V1,
        id: id.into(),
        status,
        rule: "xid-79".into(),
        key: node.into(),
        severity: Severity::Critical,
        blame: Target::node(node),
        summary: "Xid 79 again".into(),
        opened_at: Timestamp::now(),
        at: Timestamp::now(),
        events: vec![],
        event_count: 1,
        plan: None,
        parent: None,
        labels: BTreeMap::new(),
    }
}

#[tokio::test]
async fn a_new_fault_during_verification_escalates() {
    let r = rig_with(4, loose_governor(), PlanBook::builtin(), |c| {
        c.verify_quiet = Duration::from_millis(800)
    });
    r.worker.submit(request("n1", "reboot_node")).await.unwrap();
    // While verifying, a new incident opens on the node.
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.worker
        .incident(&incident("inc-again", "n1", IncidentStatus::Open))
        .await;
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    let t = decisions(&r.journal, "n1");
    assert!(
        t.contains(&"failed:verify".to_owned()) && t.contains(&"escalated".to_owned()),
        "{t:?}"
    );
    assert!(
        r.fleet.node("n1").unwrap().unschedulable,
        "kept out of service"
    );
}

#[tokio::test]
async fn pages_are_resolved_when_their_incident_resolves() {
    let r = rig(4);
    r.worker.submit(request("n2", "page")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    let first = r.hook.wait_for(1, Duration::from_secs(2));
    assert!(first[0].body.contains("\"status\":\"firing\""));
    r.worker
        .incident(&incident("inc-n2", "n2", IncidentStatus::Resolved))
        .await;
    let reqs = r.hook.wait_for(2, Duration::from_secs(2));
    let last = &reqs[1].body;
    assert!(
        last.contains("\"status\":\"resolved\"") && last.contains("pitcrew/inc-n2"),
        "{last}"
    );
    assert!(r
        .worker
        .state(&Target::node("n2"))
        .unwrap()
        .open_pages
        .is_empty());
}

#[tokio::test]
async fn requests_for_a_busy_node_wait_their_turn_and_gpu_targets_are_their_node() {
    let r = rig(4);
    let mut gpu = request("n1", "reset_gpu");
    gpu.target = Target::new(pitcrew_contract::TargetKind::Gpu, "n1/3");
    gpu.id = "act-gpu".into();
    r.worker.submit(gpu).await.unwrap();
    let again = request("n1", "drain_node");
    assert_eq!(r.worker.submit(again).await.unwrap(), Submitted::Queued);
    assert!(r.worker.wait_idle(Duration::from_secs(10)).await);
    let calls = r.fleet.calls();
    assert!(calls.contains(&"gpu reset n1 3".to_owned()), "{calls:?}");
    let cordons = calls.iter().filter(|c| *c == "cordon n1").count();
    assert_eq!(cordons, 2, "{calls:?}");
    assert_eq!(
        r.worker.state(&Target::node("n1")).unwrap().phase,
        Phase::Escalated
    );
}

fn with_job(r: &Rig, node: &str, job: &str) {
    r.fleet.set_node(
        node,
        SimNode {
            jobs: vec![job.into()],
            ..SimNode::default()
        },
    );
}

#[tokio::test]
async fn a_drain_deferred_to_the_job_boundary_lets_the_job_run_to_its_end() {
    let r = rig(4);
    with_job(&r, "n1", "101");
    let mut req = request("n1", "drain_node");
    req.params.insert("at".into(), "checkpoint".into());
    r.worker.submit(req).await.unwrap();
    // Cordoned at once (no new work), the running job untouched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = r.fleet.node("n1").unwrap();
    assert!(n.unschedulable && n.slurm_drain_reason.is_some());
    assert_eq!(n.jobs, vec!["101".to_owned()]);
    assert_eq!(r.fleet.count("slurm requeue"), 0, "{:?}", r.fleet.calls());
    assert!(r.worker.busy());
    // The job ends by itself: the drain goes on and requeues nothing.
    let mut n = r.fleet.node("n1").unwrap();
    n.jobs.clear();
    r.fleet.set_node("n1", n);
    assert!(r.worker.wait_idle(Duration::from_secs(5)).await);
    let audits = r.journal.audits();
    let drained = audits
        .iter()
        .find_map(|a| match &a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail.clone(),
            _ => None,
        })
        .unwrap();
    assert!(drained.contains("job boundary after"), "{drained}");
    assert!(drained.contains("slurm: requeued []"), "{drained}");
}

#[tokio::test]
async fn an_app_restart_waiting_behind_a_deferred_reset_is_the_boundary() {
    let r = rig(4);
    with_job(&r, "n1", "101");
    let target = Target::new(pitcrew_contract::TargetKind::Gpu, "n1/2");
    let mut reset = request("n1", "reset_gpu");
    reset.target = target.clone();
    reset.id = ActionRequest::make_id("inc-63", &target, "reset_gpu", 0);
    reset.params.insert("when".into(), "job_boundary".into());
    r.worker.submit(reset).await.unwrap();
    // The node's agent stays alive through the GPU reset.
    let fleet = r.fleet.clone();
    let beat = tokio::spawn(async move {
        loop {
            fleet.heartbeat("n1", Timestamp::now());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        r.fleet.count("gpu reset"),
        0,
        "{:?} {:?}",
        r.fleet.calls(),
        r.journal
            .audits()
            .iter()
            .map(|a| format!("{:?}", a.entry))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.fleet.node("n1").unwrap().jobs, vec!["101".to_owned()]);
    // Hours later a contained ECC error restarts the app: the job ends
    // there, and the GPU reset rides along at that boundary.
    let mut restart = request("n1", "restart_app");
    restart.id = ActionRequest::make_id("inc-94", &Target::node("n1"), "restart_app", 0);
    let restart_id = restart.id.clone();
    let restart_req = restart.clone();
    assert_eq!(r.worker.submit(restart).await.unwrap(), Submitted::Queued);
    assert!(r.worker.wait_idle(Duration::from_secs(5)).await);
    beat.abort();
    assert_eq!(r.fleet.count("gpu reset"), 1, "{:?}", r.fleet.calls());
    let n = r.fleet.node("n1").unwrap();
    assert!(n.jobs.is_empty() && !n.unschedulable && n.slurm_drain_reason.is_none());
    assert_eq!(
        n.power_cycles,
        0,
        "{:?}",
        r.journal
            .audits()
            .iter()
            .map(|a| format!("{} {:?}", a.target, a.entry))
            .collect::<Vec<_>>()
    );
    // Requeued exactly once, by the reset's drain; the waiting restart is
    // done there and does not run again.
    let audits = r.journal.audits();
    let requeues: Vec<String> = audits
        .iter()
        .filter_map(|a| match &a.entry {
            AuditEntry::StepSucceeded { step, detail } if step == "drain" => detail.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(requeues.len(), 1, "{requeues:?}");
    assert!(
        requeues[0].contains("restarts the app") && requeues[0].contains("requeued [101]"),
        "{requeues:?}"
    );
    assert_eq!(r.fleet.count("slurm requeue"), 1, "{:?}", r.fleet.calls());
    let restart = audits
        .iter()
        .filter(|a| a.action.as_deref() == Some(restart_id.as_str()))
        .map(|a| format!("{:?}", a.entry))
        .collect::<Vec<_>>();
    assert_eq!(
        restart,
        vec!["Received", "AlreadyDone { step: \"requeue_jobs\" }"],
        "the restart is done by the drain, not refused or escalated"
    );
    // And a redelivery of it is a duplicate.
    assert_eq!(
        r.worker.submit(restart_req).await.unwrap(),
        Submitted::Duplicate
    );
}

#[tokio::test]
async fn app_restarts_do_not_start_a_cooldown_that_blocks_the_drain_after_them() {
    let r = rig(4);
    for (i, job) in ["j-a", "j-b", "j-c"].iter().enumerate() {
        let mut req = request("n2", "restart_app");
        req.id = ActionRequest::make_id(&format!("inc-{i}"), &req.target, "restart_app", 0);
        req.params.insert("job".into(), (*job).into());
        r.worker.submit(req).await.unwrap();
        assert!(r.worker.wait_idle(Duration::from_secs(5)).await);
    }
    r.worker.submit(request("n2", "drain_node")).await.unwrap();
    assert!(r.worker.wait_idle(Duration::from_secs(5)).await);
    let t = decisions(&r.journal, "n2");
    assert!(!t.iter().any(|d| d.starts_with("refused")), "{t:?}");
    assert!(t.contains(&"succeeded:cordon".to_owned()), "{t:?}");
    assert!(r.fleet.node("n2").unwrap().unschedulable);
}
