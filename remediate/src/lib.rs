//! Remediation: plans, the governor, executors and the audit trail.
//!
//! Not built yet (issue #5). Invariant for what lands here: this is the
//! only crate that touches Kubernetes, Slurm, BMCs or pagers.
