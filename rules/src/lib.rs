//! The rule engine: TOML rules compiled to a program, and a pure evaluator.
//!
//! - [`compile`] turns rule files into a [`Program`] (and their `[[test]]`
//!   blocks), reporting every problem as a [`Diagnostic`] at
//!   `file:line:column`.
//! - [`Engine`] evaluates a program over events on event time and returns
//!   incidents and action requests ([`Output`]).
//! - [`Stage`] and [`Pipeline`] are the one evaluation path: a program split
//!   into its node and group stages, partitioned, rebuilt and advanced as
//!   the streaming service runs it; [`Pipeline`] joins both in one process
//!   for tests, replays, the simulator and benchmarks.
//! - [`run_test`] runs a `[[test]]` on virtual time.
//! - [`default_pack`] is the rule pack that encodes pitcrew's fault
//!   reference.
//!
//! Invariant: nothing here depends on Kafka, reads a clock or does I/O.
//! Time is the events' time, passed in; files are read by the caller.

mod compile;
mod diag;
mod duration;
mod engine;
mod field;
mod inventory;
mod pack;
mod pipeline;
mod plans;
mod program;
mod scenario;
mod template;
mod testing;

pub use compile::{compile, RuleSet, SourceFile};
pub use diag::{Diagnostic, Level};
pub use duration::Span;
pub use engine::{Engine, EngineConfig, Output, Stats};
pub use inventory::{expand, FacilityInfo, Inventory, NodeInfo, FACILITY_POLLER_KEYS};
pub use pack::{default_pack, DEFAULT_INVENTORY_EXAMPLE};
pub use pipeline::{
    Emit, Partitioner, Pipeline, Stage, StageConfig, StageKind, StateSize, ROUTE_LABEL,
};
pub use plans::BUILTIN_PLANS;
pub use program::{group_value, Program, Rule, StagePlan};
pub use scenario::Scenario;
pub use template::Template;
pub use testing::{describe_output, run_test, Expect, TestCase, TestResult, TEST_EPOCH};
