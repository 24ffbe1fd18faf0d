//! The rule engine: TOML rules compiled to a program and a pure evaluator.
//!
//! Not built yet (issue #4). Invariant for what lands here: the evaluator
//! takes events and their event time and returns incidents and action
//! requests; it depends on no Kafka, reads no clock and does no I/O.
