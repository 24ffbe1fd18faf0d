//! The heartbeat: the agent is alive, on this boot, with this driver.

use std::path::Path;

use pitcrew_contract::{deterministic_id, Event, EventData, Heartbeat, Source, Timestamp};

/// What the host says about itself, read from a `/proc`-like root (tests
/// point it at a temp tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    pub boot_id: String,
    pub uptime_s: u64,
}

/// Errors reading host facts.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {reason}")]
pub struct HostFactsError {
    pub path: String,
    pub reason: String,
}

impl HostFacts {
    /// Reads `sys/kernel/random/boot_id` and `uptime` under `proc_root`.
    pub fn read(proc_root: &Path) -> Result<HostFacts, HostFactsError> {
        let read = |rel: &str| {
            let p = proc_root.join(rel);
            std::fs::read_to_string(&p).map_err(|e| HostFactsError {
                path: p.display().to_string(),
                reason: e.kind().to_string(),
            })
        };
        let boot_id = read("sys/kernel/random/boot_id")?.trim().to_owned();
        let uptime = read("uptime")?;
        let uptime_s = uptime
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as u64)
            .ok_or_else(|| HostFactsError {
                path: proc_root.join("uptime").display().to_string(),
                reason: "not a number".to_owned(),
            })?;
        Ok(HostFacts { boot_id, uptime_s })
    }
}

/// The heartbeat event at `now`.
pub fn heartbeat(
    node: &str,
    facts: &HostFacts,
    driver_version: Option<String>,
    gpu_count: Option<u32>,
    now: Timestamp,
) -> Event {
    Event {
        id: deterministic_id("hb", &[node, &facts.boot_id, &now.unix_nanos().to_string()]),
        node: node.to_owned(),
        time: now,
        source: Source::Agent,
        gpu: None,
        count: 1,
        labels: Default::default(),
        data: EventData::NodeHeartbeat(Heartbeat {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            driver_version,
            boot_id: facts.boot_id.clone(),
            uptime_s: facts.uptime_s,
            gpu_count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_tree() {
        let root = std::env::temp_dir().join(format!("pitcrew-proc-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sys/kernel/random")).unwrap();
        std::fs::write(root.join("sys/kernel/random/boot_id"), "3f1c2a9e-6b0d\n").unwrap();
        std::fs::write(root.join("uptime"), "86400.52 170000.10\n").unwrap();
        let f = HostFacts::read(&root).unwrap();
        assert_eq!(
            f,
            HostFacts {
                boot_id: "3f1c2a9e-6b0d".to_owned(),
                uptime_s: 86400
            }
        );
        let ev = heartbeat(
            "n17",
            &f,
            Some("580.159.04".to_owned()),
            Some(8),
            Timestamp::EPOCH,
        );
        match ev.data {
            EventData::NodeHeartbeat(h) => {
                assert_eq!(h.boot_id, "3f1c2a9e-6b0d");
                assert_eq!(h.gpu_count, Some(8));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(root.join("uptime"), "soon").unwrap();
        assert!(HostFacts::read(&root)
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
