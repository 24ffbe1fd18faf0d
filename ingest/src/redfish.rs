//! The BMC source over Redfish (DMTF DSP0266/DSP0268), for BMCs without
//! IPMI over LAN: the System's log services (`LogServices/<log>/Entries`:
//! the SEL, the event log) as `bmc.sel`, and the chassis sensors as
//! `bmc.sensor`: the `Sensors` collection (2020.4+), else the legacy
//! `Thermal` (`Temperatures`, `Fans`) and `Power` (`Voltages`,
//! `PowerSupplies`) resources.
//!
//! [`RedfishBmc`] reads over HTTP(S) with basic authentication;
//! [`RedfishSource`] is pure and turns what was read into events with the
//! IPMI source's rules: a log's first read with no saved position is a
//! baseline, then only entries newer than the last one seen (per log
//! service; a log whose ids went down was cleared, everything in it is
//! new); a sensor's event on its first reading and when its state changes.
//! The password is held in a [`Secret`]; errors and logs carry the URL
//! path only.

use std::collections::BTreeMap;
use std::time::Duration;

use pitcrew_config::Secret;
use pitcrew_contract::{Event, EventData, SelEntry, SensorState, Source, Timestamp};
use serde_json::Value as Json;

use crate::bmc::BmcEvents;
pub use crate::bmc::SensorRead;

/// At most this many entries read per log and poll (newest pages are not
/// guaranteed first; a BMC with a huge log is read over several polls).
const MAX_ENTRIES: usize = 2_000;
/// At most this many collection members followed (systems, chassis, logs).
const MAX_MEMBERS: usize = 32;

/// Where a Redfish service is and how to log in.
#[derive(Clone, Debug)]
pub struct RedfishTarget {
    /// `https://bmc-n17` or `http://127.0.0.1:8000`.
    pub base: String,
    pub username: String,
    pub password: Secret,
    pub tls: RedfishTls,
}

/// How the BMC's certificate is checked. The password goes in every
/// request, so a certificate is never accepted unchecked unless asked.
#[derive(Clone, Debug, Default)]
pub enum RedfishTls {
    /// Against the system's trusted roots.
    #[default]
    System,
    /// Against this CA (PEM): the site's BMC certificate authority.
    Ca(std::path::PathBuf),
    /// Not checked (self-signed BMCs on an isolated management network):
    /// an explicit choice, logged at start.
    Insecure,
}

/// Why the BMC could not be read. Retryable: the BMC may be rebooting.
#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    #[error("redfish {path}: {reason}")]
    Request { path: String, reason: String },
    #[error("redfish {path}: http status {status}")]
    Status { path: String, status: u16 },
}

/// One log entry as read.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// The log service's path: positions are kept per log.
    pub log: String,
    pub id: u64,
    pub sensor_type: String,
    pub sensor: String,
    pub message: String,
    pub asserted: bool,
}

/// A Redfish service.
#[derive(Debug)]
pub struct RedfishBmc {
    target: RedfishTarget,
    client: reqwest::blocking::Client,
    timeout: Duration,
}

impl RedfishBmc {
    pub fn new(target: RedfishTarget, timeout: Duration) -> Result<RedfishBmc, RedfishError> {
        let failed = |reason: String| RedfishError::Request {
            path: "/".into(),
            reason,
        };
        let mut builder = reqwest::blocking::Client::builder();
        match &target.tls {
            RedfishTls::System => {}
            RedfishTls::Ca(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| failed(format!("ca file {}: {e}", path.display())))?;
                let ca = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| failed(format!("ca file {}: {e}", path.display())))?;
                builder = builder.add_root_certificate(ca);
            }
            RedfishTls::Insecure => {
                tracing::warn!(
                    source = "redfish",
                    "the bmc's certificate is not checked (--bmc-redfish-insecure)"
                );
                builder = builder.danger_accept_invalid_certs(true);
            }
        }
        let client = builder
            .build()
            .map_err(|e| failed(e.without_url().to_string()))?;
        Ok(RedfishBmc {
            target,
            client,
            timeout,
        })
    }

    fn get(&self, path: &str) -> Result<Json, RedfishError> {
        let url = format!("{}{path}", self.target.base.trim_end_matches('/'));
        let response = self
            .client
            .get(&url)
            .timeout(self.timeout)
            .basic_auth(&self.target.username, Some(self.target.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .map_err(|e| RedfishError::Request {
                path: path.to_owned(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(RedfishError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
            });
        }
        let body = response.text().map_err(|e| RedfishError::Request {
            path: path.to_owned(),
            reason: e.without_url().to_string(),
        })?;
        serde_json::from_str(&body).map_err(|e| RedfishError::Request {
            path: path.to_owned(),
            reason: format!("not a json document: {e}"),
        })
    }

    fn members(&self, path: &str) -> Result<Vec<String>, RedfishError> {
        Ok(links(&self.get(path)?, "Members"))
    }

    /// Every entry of every log service of every system.
    pub fn log_entries(&self) -> Result<Vec<LogRecord>, RedfishError> {
        let mut out = Vec::new();
        for system in self.members("/redfish/v1/Systems")? {
            let doc = self.get(&system)?;
            let Some(services) = link(&doc, "LogServices") else {
                continue;
            };
            for log in self.members(&services)? {
                let service = self.get(&log)?;
                let Some(entries) = link(&service, "Entries") else {
                    continue;
                };
                let mut next = Some(entries);
                let mut read = 0;
                while let Some(page) = next.take() {
                    let doc = self.get(&page)?;
                    for e in doc["Members"].as_array().into_iter().flatten() {
                        read += 1;
                        if let Some(r) = decode_entry(&log, e) {
                            out.push(r);
                        }
                    }
                    next = doc["Members@odata.nextLink"]
                        .as_str()
                        .filter(|_| read < MAX_ENTRIES)
                        .map(str::to_owned);
                }
            }
        }
        Ok(out)
    }

    /// Every sensor of every chassis.
    pub fn sensors(&self) -> Result<Vec<SensorRead>, RedfishError> {
        let mut out = Vec::new();
        for chassis in self.members("/redfish/v1/Chassis")? {
            let doc = self.get(&chassis)?;
            if let Some(sensors) = link(&doc, "Sensors") {
                for s in self.members(&sensors)? {
                    if let Some(r) = decode_sensor(&self.get(&s)?) {
                        out.push(r);
                    }
                }
                continue;
            }
            if let Some(thermal) = link(&doc, "Thermal") {
                out.extend(decode_thermal(&self.get(&thermal)?));
            }
            if let Some(power) = link(&doc, "Power") {
                out.extend(decode_power(&self.get(&power)?));
            }
        }
        Ok(out)
    }
}

fn link(doc: &Json, key: &str) -> Option<String> {
    doc.get(key)?.get("@odata.id")?.as_str().map(str::to_owned)
}

fn links(doc: &Json, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["@odata.id"].as_str().map(str::to_owned))
        .take(MAX_MEMBERS)
        .collect()
}

fn text(doc: &Json, key: &str) -> Option<String> {
    doc.get(key)?
        .as_str()
        .map(|s| s.chars().take(256).collect())
}

/// A `LogEntry` (DSP0268): `Id`, `Message`, `Severity`, and for SEL
/// entries `SensorType`, `SensorNumber`, `EntryCode` (`Assert` or
/// `Deassert`). An entry whose `Id` is not a number is keyed by its
/// `Created` time.
pub fn decode_entry(log: &str, e: &Json) -> Option<LogRecord> {
    let id = match &e["Id"] {
        Json::String(s) => s.parse().ok(),
        Json::Number(n) => n.as_u64(),
        _ => None,
    }
    .or_else(|| {
        let created = e["Created"].as_str()?;
        Timestamp::parse_rfc3339(created)
            .ok()
            .and_then(|t| u64::try_from(t.unix_nanos() / 1_000_000_000).ok())
    })?;
    let sensor_type = text(e, "SensorType")
        .or_else(|| text(e, "EntryType"))
        .unwrap_or_else(|| "Event".to_owned());
    let sensor = match &e["SensorNumber"] {
        Json::Number(n) => format!("#0x{:02x}", n.as_u64().unwrap_or(0)),
        _ => text(e, "MessageId")
            .or_else(|| text(e, "Name"))
            .unwrap_or_default(),
    };
    let message = text(e, "Message").unwrap_or_default();
    let asserted = !e["EntryCode"]
        .as_str()
        .is_some_and(|c| c.eq_ignore_ascii_case("Deassert"));
    Some(LogRecord {
        log: log.to_owned(),
        id,
        sensor_type,
        sensor,
        message,
        asserted,
    })
}

/// `Status.Health` (or the `State` being absent) as a sensor state.
fn health(doc: &Json) -> SensorState {
    match doc["Status"]["Health"].as_str() {
        Some("Critical") => SensorState::Critical,
        Some("Warning") => SensorState::NonCritical,
        _ => SensorState::Ok,
    }
}

/// Worse of the service's health and what the thresholds say.
fn with_thresholds(
    base: SensorState,
    value: Option<f64>,
    th: &[(Option<f64>, bool, SensorState)],
) -> SensorState {
    let Some(v) = value else { return base };
    let mut state = base;
    for (limit, upper, s) in th {
        if let Some(l) = limit {
            let crossed = if *upper { v >= *l } else { v <= *l };
            if crossed && rank(*s) > rank(state) {
                state = *s;
            }
        }
    }
    state
}

fn rank(s: SensorState) -> u8 {
    match s {
        SensorState::Ok => 0,
        SensorState::NonCritical => 1,
        SensorState::Critical => 2,
        SensorState::NonRecoverable => 3,
    }
}

fn absent(doc: &Json) -> bool {
    doc["Status"]["State"].as_str() == Some("Absent")
}

/// A `Sensor` resource: `Reading`, `ReadingUnits`, `Thresholds`.
pub fn decode_sensor(doc: &Json) -> Option<SensorRead> {
    if absent(doc) {
        return None;
    }
    let name = text(doc, "Name").or_else(|| text(doc, "Id"))?;
    let value = doc["Reading"].as_f64();
    let t = &doc["Thresholds"];
    let th = [
        (
            t["UpperCaution"]["Reading"].as_f64(),
            true,
            SensorState::NonCritical,
        ),
        (
            t["UpperCritical"]["Reading"].as_f64(),
            true,
            SensorState::Critical,
        ),
        (
            t["UpperFatal"]["Reading"].as_f64(),
            true,
            SensorState::NonRecoverable,
        ),
        (
            t["LowerCaution"]["Reading"].as_f64(),
            false,
            SensorState::NonCritical,
        ),
        (
            t["LowerCritical"]["Reading"].as_f64(),
            false,
            SensorState::Critical,
        ),
        (
            t["LowerFatal"]["Reading"].as_f64(),
            false,
            SensorState::NonRecoverable,
        ),
    ];
    Some(SensorRead {
        name,
        value,
        unit: text(doc, "ReadingUnits"),
        state: with_thresholds(health(doc), value, &th),
    })
}

fn legacy(item: &Json, reading: &str, unit: Option<&str>, prefix: &str) -> Option<SensorRead> {
    if absent(item) {
        return None;
    }
    let name = text(item, "Name").or_else(|| text(item, "MemberId"))?;
    let value = item[reading].as_f64();
    let th = [
        (
            item["UpperThresholdNonCritical"].as_f64(),
            true,
            SensorState::NonCritical,
        ),
        (
            item["UpperThresholdCritical"].as_f64(),
            true,
            SensorState::Critical,
        ),
        (
            item["UpperThresholdFatal"].as_f64(),
            true,
            SensorState::NonRecoverable,
        ),
        (
            item["LowerThresholdNonCritical"].as_f64(),
            false,
            SensorState::NonCritical,
        ),
        (
            item["LowerThresholdCritical"].as_f64(),
            false,
            SensorState::Critical,
        ),
        (
            item["LowerThresholdFatal"].as_f64(),
            false,
            SensorState::NonRecoverable,
        ),
    ];
    Some(SensorRead {
        name: format!("{prefix}{name}"),
        value,
        unit: unit
            .map(str::to_owned)
            .or_else(|| text(item, "ReadingUnits")),
        state: with_thresholds(health(item), value, &th),
    })
}

/// The legacy `Thermal` resource: temperatures and fans.
pub fn decode_thermal(doc: &Json) -> Vec<SensorRead> {
    let mut out: Vec<SensorRead> = doc["Temperatures"]
        .as_array()
        .into_iter()
        .flatten()
        .take(256)
        .filter_map(|t| legacy(t, "ReadingCelsius", Some("Cel"), ""))
        .collect();
    out.extend(
        doc["Fans"]
            .as_array()
            .into_iter()
            .flatten()
            .take(256)
            .filter_map(|f| legacy(f, "Reading", None, "")),
    );
    out
}

/// The legacy `Power` resource: voltages and power supplies (health only).
pub fn decode_power(doc: &Json) -> Vec<SensorRead> {
    let mut out: Vec<SensorRead> = doc["Voltages"]
        .as_array()
        .into_iter()
        .flatten()
        .take(256)
        .filter_map(|v| legacy(v, "ReadingVolts", Some("V"), ""))
        .collect();
    out.extend(
        doc["PowerSupplies"]
            .as_array()
            .into_iter()
            .flatten()
            .take(64)
            .filter_map(|p| legacy(p, "LastPowerOutputWatts", Some("W"), "")),
    );
    out
}

/// Turns Redfish reads into events for one node.
#[derive(Debug)]
pub struct RedfishSource {
    events: BmcEvents,
    /// The last entry id handled, per log service; a log without one reads
    /// a baseline first.
    positions: BTreeMap<String, u64>,
}

impl RedfishSource {
    /// `positions`: as saved by [`RedfishSource::positions`].
    pub fn new(node: &str, boot_id: &str, positions: BTreeMap<String, u64>) -> RedfishSource {
        RedfishSource {
            events: BmcEvents::new(node, boot_id, Source::Redfish),
            positions,
        }
    }

    /// The positions to save across restarts.
    pub fn positions(&self) -> &BTreeMap<String, u64> {
        &self.positions
    }

    /// Events for one read of the logs.
    pub fn log_events(&mut self, entries: &[LogRecord], now: Timestamp) -> Vec<Event> {
        let mut by_log: BTreeMap<&str, Vec<&LogRecord>> = BTreeMap::new();
        for e in entries {
            by_log.entry(&e.log).or_default().push(e);
        }
        let mut out = Vec::new();
        for (log, records) in by_log {
            let max = records.iter().map(|r| r.id).max().unwrap_or(0);
            let Some(&last) = self.positions.get(log) else {
                self.positions.insert(log.to_owned(), max);
                continue;
            };
            let cleared = max < last;
            self.positions
                .insert(log.to_owned(), if cleared { max } else { max.max(last) });
            for r in records.into_iter().filter(|r| cleared || r.id > last) {
                out.push(self.events.event(
                    now,
                    &[
                        self.events.boot_id(),
                        &r.log,
                        &r.id.to_string(),
                        &r.message,
                        &r.asserted.to_string(),
                    ],
                    EventData::BmcSel(SelEntry {
                        record_id: u32::try_from(r.id).unwrap_or(u32::MAX),
                        sensor_type: r.sensor_type.clone(),
                        sensor: r.sensor.clone(),
                        description: r.message.clone(),
                        asserted: r.asserted,
                    }),
                ));
            }
        }
        out
    }

    /// Events for one read of the sensors: first readings and changes.
    pub fn sensor_events(&mut self, sensors: &[SensorRead], now: Timestamp) -> Vec<Event> {
        self.events.sensor_events(sensors, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(log: &str, id: u64) -> LogRecord {
        LogRecord {
            log: log.into(),
            id,
            sensor_type: "Memory".into(),
            sensor: "#0x08".into(),
            message: format!("entry {id}"),
            asserted: true,
        }
    }

    #[test]
    fn baseline_then_new_entries_per_log_and_a_cleared_log_is_all_new() {
        let mut src = RedfishSource::new("n1", "b", BTreeMap::new());
        let t = Timestamp::EPOCH;
        assert!(src
            .log_events(&[rec("/sel", 1), rec("/ev", 7)], t)
            .is_empty());
        let ev = src.log_events(&[rec("/sel", 1), rec("/sel", 2), rec("/ev", 7)], t);
        assert_eq!(ev.len(), 1);
        // Restarted with the saved positions: nothing repeats.
        let mut again = RedfishSource::new("n1", "b", src.positions().clone());
        assert!(again
            .log_events(&[rec("/sel", 2), rec("/ev", 7)], t)
            .is_empty());
        // Cleared: ids went down.
        assert_eq!(again.log_events(&[rec("/sel", 1)], t).len(), 1);
    }

    #[test]
    fn a_ca_that_cannot_be_read_is_a_clear_error() {
        let target = |tls| RedfishTarget {
            base: "https://bmc".into(),
            username: "root".into(),
            password: Secret::new("pw"),
            tls,
        };
        let missing = std::env::temp_dir().join("pitcrew-no-such-ca.pem");
        let err = RedfishBmc::new(target(RedfishTls::Ca(missing)), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pitcrew-no-such-ca.pem"), "{err}");
        let bad = std::env::temp_dir().join(format!("pitcrew-bad-ca-{}.pem", std::process::id()));
        std::fs::write(&bad, "not a certificate").unwrap();
        let err = RedfishBmc::new(target(RedfishTls::Ca(bad.clone())), Duration::from_secs(1));
        let _ = std::fs::remove_file(&bad);
        assert!(err.is_err(), "garbage is not a CA");
        assert!(RedfishBmc::new(target(RedfishTls::System), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn thresholds_and_health_give_the_state() {
        let doc: Json = serde_json::json!({
            "Temperatures": [
                {"Name": "CPU1 Temp", "ReadingCelsius": 96, "UpperThresholdCritical": 95, "Status": {"State": "Enabled", "Health": "OK"}},
                {"Name": "Inlet", "ReadingCelsius": 24, "UpperThresholdCritical": 45, "Status": {"Health": "Warning"}},
                {"Name": "GPU9", "Status": {"State": "Absent"}}
            ],
            "Fans": [{"Name": "Fan1", "Reading": 9000, "ReadingUnits": "RPM", "LowerThresholdCritical": 1000}]
        });
        let s = decode_thermal(&doc);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].state, s[0].unit.as_deref()),
            (SensorState::Critical, Some("Cel"))
        );
        assert_eq!(s[1].state, SensorState::NonCritical);
        assert_eq!(
            (s[2].state, s[2].unit.as_deref()),
            (SensorState::Ok, Some("RPM"))
        );
        let sensor = decode_sensor(&serde_json::json!({
            "Id": "PS1Voltage", "Name": "PS1 Input", "Reading": 180.0, "ReadingUnits": "V",
            "Thresholds": {"LowerCritical": {"Reading": 190.0}}
        }))
        .unwrap();
        assert_eq!(sensor.state, SensorState::Critical);
    }
}
