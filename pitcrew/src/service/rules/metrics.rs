//! The rules stage's metrics (`pitcrew_rules_*`, and `pitcrew_node_info`
//! from the inventory for joins) and its internal events: what is both
//! logged and counted is one event.

use pitcrew_observe::prometheus_client::encoding::EncodeLabelSet;
use pitcrew_observe::prometheus_client::metrics::counter::Counter;
use pitcrew_observe::prometheus_client::metrics::family::Family;
use pitcrew_observe::prometheus_client::metrics::gauge::Gauge;
use pitcrew_observe::prometheus_client::metrics::histogram::Histogram;
use pitcrew_observe::{InternalEvent, OutcomeLabel, StageLabel};
use pitcrew_rules::Span;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabel {
    pub(crate) rule: String,
}

pitcrew_observe::metrics! {
    /// `pitcrew_node_info`: 1 per inventory node, with its rack and leaf
    /// switch.
    pub struct NodeInfoMetrics in "pitcrew_node" {
        info: Family<pitcrew_ingest::telemetry::NodeInfoLabel, Gauge>
            => "info", "1 per inventory node, with its rack and leaf switch (for joins)";
    }
}

pitcrew_observe::metrics! {
    /// The rule stage's metrics, `pitcrew_rules_*`.
    pub struct RulesMetrics in "pitcrew_rules" {
        events: Family<StageLabel, Counter> => "events", "Events evaluated, by stage";
        late: Family<StageLabel, Counter> => "late_events", "Events older than the watermark, counted and ignored";
        overflow: Family<StageLabel, Counter> => "state_overflow", "Keys, members or steps refused at a state bound";
        dead_letters: Family<StageLabel, Counter> => "dead_letters", "Undecodable events sent to the dead-letter topic";
        future: Family<StageLabel, Counter> => "future_events", "Events dated past the wall clock by more than --max-future-skew, taken at the wall clock's time";
        restored: Family<StageLabel, Counter> => "restored_events", "Events re-read to rebuild a partition's state";
        state_entries: Family<StageLabel, Gauge> => "state_entries", "Keys and open incidents held";
        open_incidents: Family<StageLabel, Gauge> => "open_incidents", "Incidents open now (not suppressed, not resolved)";
        state_bytes: Family<StageLabel, Gauge> => "state_bytes", "Estimated bytes of rule state held";
        incidents: Family<RuleLabel, Counter> => "incidents", "Incidents opened or suppressed, by rule";
        actions: Counter => "action_requests", "Action requests written";
        reloads: Family<OutcomeLabel, Counter> => "reloads", "Rule reloads by outcome (ok, error)";
        rules_loaded: Gauge => "rules_loaded", "Rules in the running set";
        assigned: Family<StageLabel, Gauge> => "assigned_partitions", "Input partitions this instance holds, by stage";
        eval_seconds: Family<StageLabel, Histogram> =
            Family::new_with_constructor(|| Histogram::new([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]))
            => "evaluation_seconds", "Evaluation time per event (a batch's time over its events)";
        + node: NodeInfoMetrics;
    }
}

/// Events of a batch dated too far past the wall clock: taken at its time.
#[derive(Debug)]
pub(crate) struct FutureEventsClamped<'a> {
    pub(crate) stage: &'a StageLabel,
    pub(crate) count: u64,
    /// One of them: its node and how far ahead it was.
    pub(crate) node: &'a str,
    pub(crate) ahead_s: i64,
}

impl InternalEvent<RulesMetrics> for FutureEventsClamped<'_> {
    fn emit(self, m: &RulesMetrics) {
        tracing::warn!(
            count = self.count,
            node = self.node,
            ahead_s = self.ahead_s,
            "events dated in the future: taken at the wall clock's time (a node's clock or log time is wrong)"
        );
        m.future.get_or_create(self.stage).inc_by(self.count);
    }
}

/// A changed rule set compiled and replaced the running one.
#[derive(Debug)]
pub(crate) struct RulesReloaded {
    pub(crate) rules: usize,
    pub(crate) by_signal: bool,
}

impl InternalEvent<RulesMetrics> for RulesReloaded {
    fn emit(self, m: &RulesMetrics) {
        tracing::info!(
            rules = self.rules,
            by_signal = self.by_signal,
            "rules reloaded; state rebuilds from the lookback"
        );
        m.reloads.get_or_create(&OutcomeLabel::new("ok")).inc();
        m.rules_loaded
            .set(i64::try_from(self.rules).unwrap_or(i64::MAX));
    }
}

/// A changed rule set did not compile; the running one stays.
#[derive(Debug)]
pub(crate) struct RulesReloadRejected<'a> {
    pub(crate) diagnostics: &'a [String],
}

impl InternalEvent<RulesMetrics> for RulesReloadRejected<'_> {
    fn emit(self, m: &RulesMetrics) {
        for d in self.diagnostics {
            tracing::error!(diagnostic = %d, "rule reload failed; the running rules stay");
        }
        m.reloads.get_or_create(&OutcomeLabel::new("error")).inc();
    }
}

/// A partition's state was rebuilt from its recent past.
#[derive(Debug)]
pub(crate) struct PartitionRebuilt<'a> {
    /// The stage's transactional id (names the instance in logs).
    pub(crate) id: &'a str,
    pub(crate) stage: &'a str,
    pub(crate) partition: i32,
    pub(crate) first_offset: i64,
    /// Messages read, events among them restored.
    pub(crate) read: u64,
    pub(crate) restored: u64,
    pub(crate) lookback: Span,
}

impl InternalEvent<RulesMetrics> for PartitionRebuilt<'_> {
    fn emit(self, m: &RulesMetrics) {
        tracing::info!(
            stage = %self.id,
            partition = self.partition,
            first_offset = self.first_offset,
            read = self.read,
            restored = self.restored,
            lookback = %self.lookback,
            "partition state rebuilt"
        );
        m.restored
            .get_or_create(&StageLabel::new(self.stage))
            .inc_by(self.restored);
    }
}
