//! The Kafka-facing services, each a thin adapter over its pure core:
//!
//! - [`agent`]: the node agent's spool drain (collectors: `pitcrew_ingest`);
//! - [`rules`]: the two-stage rules service (evaluation:
//!   `pitcrew_rules::Stage`);
//! - [`remediate`]: the remediation worker on Kafka (`pitcrew_remediate`);
//! - [`stages`]: rules and remediation in one process (`run`, `demo`).
//!
//! Each can be started in-process by a test; `cmd/` in the binary only
//! parses arguments and wires these together.

pub mod agent;
pub mod facility;
pub mod remediate;
pub mod rules;
pub mod stages;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
