//! Remediation: plans, the governor, the per-target worker, executors
//! (Kubernetes, Slurm, IPMI, pagers) and the audit trail.
//!
//! This crate is the only one that touches Kubernetes, Slurm, BMCs or
//! pagers; it knows no Kafka: the binary feeds it action requests and
//! incidents and gives it a [`worker::Journal`] that writes `pitcrew.audit`
//! and `pitcrew.state`.
//!
//! - [`plan`], plans and steps, built-in and from TOML;
//! - [`governor`], the pure gate in front of every destructive step;
//! - [`worker`], runs plans as reconcilers, persists state, audits;
//! - [`exec`], one module per executor, plus a simulated fleet;
//! - [`config`], the `[remediate]` TOML and what it builds;
//! - [`metrics`], `pitcrew_remediate_*`.

pub mod config;
pub mod exec;
pub mod governor;
pub mod metrics;
pub mod plan;
pub mod worker;

pub use governor::{Governor, GovernorConfig};
pub use plan::{Plan, PlanBook, StepKind};
pub use worker::{Journal, JournalError, MemoryJournal, Submitted, Worker, WorkerConfig};
