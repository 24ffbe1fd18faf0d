//! pitcrew's services as a library: what the `pitcrew` binary runs, and
//! what tests start in-process.
//!
//! - [`service`]: the Kafka-facing stages (agent drain, rules, remediate,
//!   both in one process), thin adapters over the pure crates;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`admin`]: the remediation admin API (approve, breaker) and its client;
//! - [`rulefiles`]: reading rule, inventory and scenario files.
//!
//! The command line lives in the binary (`src/main.rs`, `src/cmd/`): it
//! parses arguments and wires these together, nothing more.

pub mod admin;
pub mod http;
pub mod rulefiles;
pub mod service;
