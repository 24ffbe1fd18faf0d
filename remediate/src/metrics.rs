//! `pitcrew_remediate_*` metrics: throughput (actions, steps), errors
//! (failed steps, refusals), latency (step duration, request to first
//! call) and state size (targets held, out of service, in flight).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::exec::page::PageLabels;

pub use pitcrew_observe::OutcomeLabel;

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

pitcrew_observe::metrics! {
    /// Every remediation metric; cheap to clone (shared).
    pub struct RemediateMetrics in "pitcrew_remediate" {
        /// Action requests by outcome: accepted, duplicate, queued, refused, invalid.
        actions: Family<OutcomeLabel, Counter> => "actions", "Action requests by outcome";
        /// Steps by step and outcome: succeeded, already_done, failed, retried, refused, dry_run.
        steps: Family<StepLabels, Counter> => "steps", "Plan steps by step and outcome";
        step_seconds: Family<StepLabel, Histogram> =
            Family::new_with_constructor(|| Histogram::new(latency_buckets()))
            => "step" [Seconds], "Time a step took";
        /// Governor refusals by reason.
        refusals: Family<ReasonLabel, Counter> => "refusals", "Governor refusals by reason";
        /// From the request's time to the first executor call.
        request_to_first_call_seconds: Histogram = Histogram::new(latency_buckets())
            => "request_to_first_call" [Seconds], "From the action request's time to the first executor call";
        /// From the fault (the request's time) to the node back in service.
        fault_to_return_seconds: Histogram = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
        ]) => "fault_to_return" [Seconds], "From the fault (the action request's time) to the node returned to service";
        pages: Family<PageLabels, Counter> => "pages", "Pages delivered or failed, by receiver kind and event";
        targets: Gauge => "targets", "Targets with remediation state held";
        in_flight: Gauge => "in_flight", "Targets with a plan running";
        awaiting_approval: Gauge => "awaiting_approval", "Actions waiting for a person's approval";
        out_of_service: Gauge => "out_of_service", "Targets out of service because of pitcrew";
        out_of_service_limit: Gauge => "out_of_service_limit", "The fleet-wide out-of-service budget";
        breaker_open: Gauge => "breaker_open", "1 while the circuit breaker is latched open";
        escalations: Counter => "escalations", "Targets handed to people";
        returned: Counter => "returned", "Targets returned to service";
        journal_errors: Counter => "journal_errors", "Audit or state records that could not be written";
    }
}

impl RemediateMetrics {
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

/// A record (audit or state) the journal did not take: counted and logged
/// together. The run goes on; a state record that is not durable stops the
/// step that needed it (the intent).
#[derive(Debug)]
pub struct JournalWriteFailed<'a> {
    /// `audit` or `state`.
    pub record: &'static str,
    pub target: &'a pitcrew_contract::Target,
    pub error: &'a dyn std::error::Error,
}

impl pitcrew_observe::InternalEvent<RemediateMetrics> for JournalWriteFailed<'_> {
    fn emit(self, metrics: &RemediateMetrics) {
        metrics.journal_errors.inc();
        tracing::error!(
            record = self.record,
            target_id = %self.target,
            error = %self.error,
            "journal record not written"
        );
    }
}

/// A step failed with a transient error and is tried again after a while.
#[derive(Debug)]
pub struct StepRetrying<'a> {
    pub target: &'a pitcrew_contract::Target,
    pub step: &'a str,
    /// The attempt about to be made (2 for the first retry).
    pub attempt: u32,
    pub after: std::time::Duration,
    pub error: &'a dyn std::error::Error,
}

impl pitcrew_observe::InternalEvent<RemediateMetrics> for StepRetrying<'_> {
    fn emit(self, metrics: &RemediateMetrics) {
        metrics.step(self.step, "retried");
        tracing::warn!(
            target_id = %self.target,
            step = self.step,
            attempt = self.attempt,
            after_ms = u64::try_from(self.after.as_millis()).unwrap_or(u64::MAX),
            error = %self.error,
            "step failed, retrying"
        );
    }
}
