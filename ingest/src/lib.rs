//! Collectors: the sources of `pitcrew collect`, one module per source.
//!
//! Contract: every source turns what it reads into
//! [`pitcrew_contract::Event`]s and knows nothing about Kafka; the binary
//! wires sources to the bus. Sources that read hardware do it behind a
//! trait, so their logic is tested with fakes and the real thing is tested
//! where the hardware is.
//!
//! Built so far (issue #3 in progress): [`counters`] (deltas, resets),
//! [`nvml`] (GPU counters and Xid events), [`kmsg`] (the kernel log) and
//! [`heartbeat`].

pub mod agent;
pub mod bmc;
pub mod coalesce;
pub mod counters;
pub mod dcgm;
pub mod heartbeat;
pub mod ipmi;
pub mod k8s;
pub mod kmsg;
pub mod links;
pub mod nvml;
pub mod redfish;
pub mod spool;
pub mod sysfs;
pub mod telemetry;

/// The collectors' one HTTP client (reqwest, on the OpenSSL the build
/// links for Kafka), made once: a blocking client owns a thread, which a
/// scrape every sampling interval must not start again. Plain GETs of what
/// a node exposes, never a write (a source check in
/// `tests/tests/architecture.rs`). None when it cannot be built.
pub(crate) fn http_client() -> Option<&'static reqwest::blocking::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::blocking::Client>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| reqwest::blocking::Client::builder().build().ok())
        .as_ref()
}
