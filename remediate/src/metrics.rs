//! `pitcrew_remediate_*` metrics: throughput (actions, steps), errors
//! (failed steps, refusals), latency (step duration, request to first
//! call) and state size (targets held, out of service, in flight).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::exec::page::PageLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0, 900.0,
    ]
    .into_iter()
}

/// Every remediation metric; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct RemediateMetrics {
    /// Action requests by outcome: accepted, duplicate, queued, refused, invalid.
    pub actions: Family<OutcomeLabel, Counter>,
    /// Steps by step and outcome: succeeded, already_done, failed, refused, dry_run.
    pub steps: Family<StepLabels, Counter>,
    pub step_seconds: Family<StepLabel, Histogram>,
    /// Governor refusals by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// From the request's time to the first executor call.
    pub request_to_first_call_seconds: Histogram,
    /// From the fault (the request's time) to the node back in service.
    pub fault_to_return_seconds: Histogram,
    pub pages: Family<PageLabels, Counter>,
    pub targets: Gauge,
    pub in_flight: Gauge,
    pub awaiting_approval: Gauge,
    pub out_of_service: Gauge,
    pub out_of_service_limit: Gauge,
    pub breaker_open: Gauge,
    pub escalations: Counter,
    pub returned: Counter,
    pub journal_errors: Counter,
}

impl Default for RemediateMetrics {
    fn default() -> Self {
        RemediateMetrics {
            actions: Family::default(),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            refusals: Family::default(),
            request_to_first_call_seconds: Histogram::new(latency_buckets()),
            fault_to_return_seconds: Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            ]),
            pages: Family::default(),
            targets: Gauge::default(),
            in_flight: Gauge::default(),
            awaiting_approval: Gauge::default(),
            out_of_service: Gauge::default(),
            out_of_service_limit: Gauge::default(),
            breaker_open: Gauge::default(),
            escalations: Counter::default(),
            returned: Counter::default(),
            journal_errors: Counter::default(),
        }
    }
}

impl RemediateMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pitcrew_remediate");
        r.register(
            "actions",
            "Action requests by outcome",
            self.actions.clone(),
        );
        r.register(
            "steps",
            "Plan steps by step and outcome",
            self.steps.clone(),
        );
        r.register_with_unit(
            "step",
            "Time a step took",
            prometheus_client::registry::Unit::Seconds,
            self.step_seconds.clone(),
        );
        r.register(
            "refusals",
            "Governor refusals by reason",
            self.refusals.clone(),
        );
        r.register_with_unit(
            "request_to_first_call",
            "From the action request's time to the first executor call",
            prometheus_client::registry::Unit::Seconds,
            self.request_to_first_call_seconds.clone(),
        );
        r.register_with_unit(
            "fault_to_return",
            "From the fault (the action request's time) to the node returned to service",
            prometheus_client::registry::Unit::Seconds,
            self.fault_to_return_seconds.clone(),
        );
        r.register(
            "pages",
            "Pages delivered or failed, by receiver kind and event",
            self.pages.clone(),
        );
        r.register(
            "targets",
            "Targets with remediation state held",
            self.targets.clone(),
        );
        r.register(
            "in_flight",
            "Targets with a plan running",
            self.in_flight.clone(),
        );
        r.register(
            "awaiting_approval",
            "Actions waiting for a person's approval",
            self.awaiting_approval.clone(),
        );
        r.register(
            "out_of_service",
            "Targets out of service because of pitcrew",
            self.out_of_service.clone(),
        );
        r.register(
            "out_of_service_limit",
            "The fleet-wide out-of-service budget",
            self.out_of_service_limit.clone(),
        );
        r.register(
            "breaker_open",
            "1 while the circuit breaker is latched open",
            self.breaker_open.clone(),
        );
        r.register(
            "escalations",
            "Targets handed to people",
            self.escalations.clone(),
        );
        r.register(
            "returned",
            "Targets returned to service",
            self.returned.clone(),
        );
        r.register(
            "journal_errors",
            "Audit or state records that could not be written",
            self.journal_errors.clone(),
        );
    }

    pub fn step(&self, step: &str, outcome: &str) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn action(&self, outcome: &str) {
        self.actions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
