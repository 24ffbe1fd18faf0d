//! The sysfs source: EDAC memory-controller counters, InfiniBand port
//! error counters, hwmon temperatures and netdev carrier, read from a
//! configurable root (`/sys` on a node, a temp tree in tests).
//!
//! Which events a sample gives:
//! - `host.edac` when a controller's `ce_count` or `ue_count` rose (the
//!   delta); a counter that went down (reboot, driver reload) is a new
//!   baseline, not an event.
//! - `net.ib_counter` when an error counter rose or restarted (`reset`).
//!   The data counters (`port_xmit_data`, `port_rcv_data`) move all the
//!   time and are not sampled here.
//! - `host.sensor` when a hwmon temperature's state (against `max` and
//!   `crit`) changes, and on the first reading.
//! - `net.link` when an interface's carrier changes, and on the first
//!   reading if it is down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pitcrew_contract::{
    deterministic_id, Edac, Event, EventData, IbCounter, IbCounterName, MemoryErrorSeverity,
    NetLink, Sensor, SensorState, Source, Timestamp,
};

use crate::counters::Counters;

/// The InfiniBand error counters sampled, by their sysfs file name.
pub const IB_ERROR_COUNTERS: &[(&str, IbCounterName)] = &[
    ("symbol_error", IbCounterName::SymbolError),
    ("link_error_recovery", IbCounterName::LinkErrorRecovery),
    ("link_downed", IbCounterName::LinkDowned),
    ("port_rcv_errors", IbCounterName::PortRcvErrors),
    (
        "port_rcv_remote_physical_errors",
        IbCounterName::PortRcvRemotePhysicalErrors,
    ),
    ("port_xmit_discards", IbCounterName::PortXmitDiscards),
    (
        "local_link_integrity_errors",
        IbCounterName::LocalLinkIntegrityErrors,
    ),
    (
        "excessive_buffer_overrun_errors",
        IbCounterName::ExcessiveBufferOverrunErrors,
    ),
];

/// A file that could not be read or parsed (the source goes on with the
/// others).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sysfs {path}: {reason}")]
pub struct SysfsError {
    pub path: String,
    pub reason: String,
}

/// The sysfs source of one node.
#[derive(Debug)]
pub struct SysfsSource {
    root: PathBuf,
    node: String,
    boot_id: String,
    counters: Counters<String>,
    sensor_state: HashMap<String, SensorState>,
    carrier: HashMap<String, bool>,
}

impl SysfsSource {
    pub fn new(root: &Path, node: &str, boot_id: &str) -> SysfsSource {
        let mut counters = Counters::default();
        counters.observe_boot(boot_id);
        SysfsSource {
            root: root.to_owned(),
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            counters,
            sensor_state: HashMap::new(),
            carrier: HashMap::new(),
        }
    }

    /// A new boot: every counter baseline is forgotten.
    pub fn observe_boot(&mut self, boot_id: &str) {
        self.counters.observe_boot(boot_id);
        self.boot_id = boot_id.to_owned();
    }

    /// Values tracked (state size).
    pub fn tracked(&self) -> usize {
        self.counters.len() + self.sensor_state.len() + self.carrier.len()
    }

    /// Reads everything once.
    pub fn sample(&mut self, now: Timestamp) -> (Vec<Event>, Vec<SysfsError>) {
        let mut events = Vec::new();
        let mut errors = Vec::new();
        self.edac(now, &mut events, &mut errors);
        self.infiniband(now, &mut events, &mut errors);
        self.hwmon(now, &mut events, &mut errors);
        self.netdev(now, &mut events);
        (events, errors)
    }

    fn event(&self, now: Timestamp, id_parts: &[&str], data: EventData) -> Event {
        let mut parts: Vec<&str> = vec![&self.node, &self.boot_id, data.kind().as_str()];
        parts.extend_from_slice(id_parts);
        Event {
            id: deterministic_id("sysfs", &parts),
            node: self.node.clone(),
            time: now,
            source: Source::Sysfs,
            gpu: None,
            count: 1,
            labels: Default::default(),
            data,
        }
    }

    fn edac(&mut self, now: Timestamp, out: &mut Vec<Event>, errors: &mut Vec<SysfsError>) {
        for (name, dir) in entries(&self.root.join("devices/system/edac/mc")) {
            let Some(controller) = name.strip_prefix("mc").and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            for (file, severity) in [
                ("ce_count", MemoryErrorSeverity::Ce),
                ("ue_count", MemoryErrorSeverity::Ue),
            ] {
                let Some(value) = read_u64(&dir.join(file), errors) else {
                    continue;
                };
                let d = self.counters.update(format!("edac/{name}/{file}"), value);
                if d.delta > 0 {
                    out.push(self.event(
                        now,
                        &[&name, file, &value.to_string()],
                        EventData::HostEdac(Edac {
                            controller,
                            severity,
                            count: d.delta,
                            location: None,
                            message: None,
                        }),
                    ));
                }
            }
        }
    }

    fn infiniband(&mut self, now: Timestamp, out: &mut Vec<Event>, errors: &mut Vec<SysfsError>) {
        for (device, dev_dir) in entries(&self.root.join("class/infiniband")) {
            for (port, port_dir) in entries(&dev_dir.join("ports")) {
                let Ok(port_no) = port.parse::<u32>() else {
                    continue;
                };
                let counters = port_dir.join("counters");
                for &(file, counter) in IB_ERROR_COUNTERS {
                    let path = counters.join(file);
                    if !path.exists() {
                        continue;
                    }
                    let Some(value) = read_u64(&path, errors) else {
                        continue;
                    };
                    let d = self
                        .counters
                        .update(format!("ib/{device}/{port}/{file}"), value);
                    if d.is_news() {
                        out.push(self.event(
                            now,
                            &[
                                &device,
                                &port,
                                file,
                                &value.to_string(),
                                &d.reset.to_string(),
                            ],
                            EventData::NetIbCounter(IbCounter {
                                device: device.clone(),
                                port: port_no,
                                counter,
                                delta: d.delta,
                                total: value,
                                reset: d.reset,
                            }),
                        ));
                    }
                }
            }
        }
    }

    fn hwmon(&mut self, now: Timestamp, out: &mut Vec<Event>, errors: &mut Vec<SysfsError>) {
        for (_, dir) in entries(&self.root.join("class/hwmon")) {
            let chip = read_string(&dir.join("name")).unwrap_or_else(|| "hwmon".to_owned());
            for (file, path) in entries(&dir) {
                let Some(stem) = file
                    .strip_suffix("_input")
                    .filter(|s| s.starts_with("temp"))
                else {
                    continue;
                };
                let Some(milli) = read_i64(&path, errors) else {
                    continue;
                };
                let value = milli as f64 / 1000.0;
                let label = read_string(&dir.join(format!("{stem}_label")))
                    .unwrap_or_else(|| stem.to_owned());
                let threshold = |suffix: &str| {
                    read_string(&dir.join(format!("{stem}_{suffix}")))
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|&t| t > 0)
                        .map(|t| t as f64 / 1000.0)
                };
                let state = match (threshold("crit"), threshold("max")) {
                    (Some(c), _) if value >= c => SensorState::Critical,
                    (_, Some(m)) if value >= m => SensorState::NonCritical,
                    _ => SensorState::Ok,
                };
                let sensor = format!("{chip}/{label}");
                if self.sensor_state.insert(sensor.clone(), state) != Some(state) {
                    out.push(self.event(
                        now,
                        &[
                            &sensor,
                            &format!("{state:?}"),
                            &now.unix_nanos().to_string(),
                        ],
                        EventData::HostSensor(Sensor {
                            sensor: sensor.clone(),
                            value: Some(value),
                            unit: Some("degrees C".to_owned()),
                            state,
                        }),
                    ));
                }
            }
        }
    }

    fn netdev(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        for (iface, dir) in entries(&self.root.join("class/net")) {
            if iface == "lo" {
                continue;
            }
            // `carrier` cannot be read while the interface is down: that is
            // no carrier, not an error.
            let up = read_string(&dir.join("carrier")).is_some_and(|c| c == "1");
            let previous = self.carrier.insert(iface.clone(), up);
            let news = match previous {
                Some(p) => p != up,
                None => !up,
            };
            if news {
                out.push(self.event(
                    now,
                    &[&iface, &up.to_string(), &now.unix_nanos().to_string()],
                    EventData::NetLink(NetLink {
                        interface: iface.clone(),
                        up,
                        ..NetLink::default()
                    }),
                ));
            }
        }
    }
}

/// Sorted (name, path) entries of a folder; none when it does not exist.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

fn read_string(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &Path, errors: &mut Vec<SysfsError>) -> Option<u64> {
    parse(path, errors)
}

fn read_i64(path: &Path, errors: &mut Vec<SysfsError>) -> Option<i64> {
    parse(path, errors)
}

fn parse<T: std::str::FromStr>(path: &Path, errors: &mut Vec<SysfsError>) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(SysfsError {
                path: path.display().to_string(),
                reason: e.kind().to_string(),
            });
            return None;
        }
    };
    // Some counters are written as "N (overflown)" or with a unit suffix.
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(SysfsError {
                path: path.display().to_string(),
                reason: format!(
                    "not a number: `{}`",
                    first.chars().take(32).collect::<String>()
                ),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests;
