//! The BMC source over IPMI (RMCP+ lanplus, through ipmi-rs): new System
//! Event Log entries, and the state of threshold sensors.
//!
//! [`BmcConnection`] talks to a BMC; [`IpmiSource`] is pure and turns what
//! was read into events:
//! - `bmc.sel` for every SEL entry newer than the last one seen. The first
//!   read after the agent starts with no saved position is a baseline
//!   (existing entries are history, not news); a SEL whose ids went down
//!   was cleared, and everything in it is new. "Deasserted" entries are
//!   events too (`asserted: false`): they clear.
//! - `bmc.sensor` when a threshold sensor's state changes (and on the first
//!   reading).
//!
//! Credentials are held in [`BmcTarget`], whose Debug hides the password;
//! nothing here logs or formats it.

use std::fmt;
use std::time::Duration;

use ipmi_rs::connection::{
    IpmiConnection, LogicalUnit, Message, NetFn, Request, RequestTargetAddress,
};
use ipmi_rs::rmcp::Rmcp;
use ipmi_rs::sensor_event::{GetSensorReading, ThresholdReading};
use ipmi_rs::storage::sdr::record::RecordContents;
use ipmi_rs::storage::sdr::record::{IdentifiableSensor, WithSensorRecordCommon};
use ipmi_rs::storage::sdr::SensorType;
use ipmi_rs::storage::sel::{Entry, EventDirection, GetSelEntry, RecordId};
use ipmi_rs::Ipmi;
pub use pitcrew_config::Secret;
use pitcrew_contract::{Event, EventData, SelEntry, SensorState, Source, Timestamp};

use crate::bmc::BmcEvents;

/// Where a BMC is and how to log in.
#[derive(Clone, Debug)]
pub struct BmcTarget {
    /// `host:port` (623 is the standard port).
    pub address: String,
    pub username: String,
    pub password: Secret,
}

/// How to reach a node's BMC.
#[derive(Clone, Debug)]
pub enum BmcEndpoint {
    /// IPMI over LAN (RMCP+), from anywhere.
    Lan(BmcTarget),
    /// The kernel's IPMI device (`/dev/ipmi0`), from the node itself.
    Local(std::path::PathBuf),
}

/// An open session of either kind.
#[derive(Debug)]
pub enum Bmc {
    Lan(Box<BmcConnection<Rmcp>>),
    Local(BmcConnection<ipmi_rs::File>),
}

impl Bmc {
    pub fn open(endpoint: &BmcEndpoint, timeout: Duration) -> Result<Bmc, IpmiSourceError> {
        Ok(match endpoint {
            BmcEndpoint::Lan(t) => Bmc::Lan(Box::new(BmcConnection::connect(t, timeout)?)),
            BmcEndpoint::Local(p) => Bmc::Local(BmcConnection::open_local(p, timeout)?),
        })
    }

    pub fn sel_entries(&mut self) -> Result<Vec<SelRecord>, IpmiSourceError> {
        match self {
            Bmc::Lan(c) => c.sel_entries(),
            Bmc::Local(c) => c.sel_entries(),
        }
    }

    pub fn threshold_sensors(&mut self) -> Result<Vec<SensorRead>, IpmiSourceError> {
        match self {
            Bmc::Lan(c) => c.threshold_sensors(),
            Bmc::Local(c) => c.threshold_sensors(),
        }
    }
}

/// Why the BMC could not be read. Every variant is retryable (the BMC may
/// be rebooting); the caller escalates after repeated failures.
#[derive(Debug, thiserror::Error)]
pub enum IpmiSourceError {
    #[error("bmc {address}: cannot connect: {reason}")]
    Connect { address: String, reason: String },
    #[error("bmc {address}: {what}: {reason}")]
    Command {
        address: String,
        what: String,
        reason: String,
    },
}

/// One SEL entry as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelRecord {
    pub id: u16,
    pub sensor_type: String,
    pub sensor_number: u8,
    pub description: String,
    pub asserted: bool,
}

pub use crate::bmc::SensorRead;

/// An open session to one BMC: RMCP+ over the network (the default), or
/// the local `/dev/ipmi0` of the node the agent runs on.
pub struct BmcConnection<C = Rmcp> {
    address: String,
    ipmi: Ipmi<C>,
}

impl<C> fmt::Debug for BmcConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcConnection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

struct Description<'a>(&'a Entry);

impl fmt::Display for Description<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.event_description(f)
    }
}

impl BmcConnection<ipmi_rs::File> {
    /// Opens the node's own BMC through the kernel's IPMI device.
    pub fn open_local(path: &std::path::Path, timeout: Duration) -> Result<Self, IpmiSourceError> {
        let file = ipmi_rs::File::new(path, timeout).map_err(|e| IpmiSourceError::Connect {
            address: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(BmcConnection {
            address: path.display().to_string(),
            ipmi: Ipmi::new(file),
        })
    }
}

impl BmcConnection<Rmcp> {
    /// Opens an RMCP+ session (blocking: run it off the async runtime).
    pub fn connect(
        target: &BmcTarget,
        timeout: Duration,
    ) -> Result<BmcConnection, IpmiSourceError> {
        let connect_err = |reason: String| IpmiSourceError::Connect {
            address: target.address.clone(),
            reason,
        };
        let mut rmcp =
            Rmcp::new(target.address.as_str(), timeout).map_err(|e| connect_err(e.to_string()))?;
        rmcp.activate(
            true,
            Some(&target.username),
            Some(target.password.expose().as_bytes()),
        )
        .map_err(|e| connect_err(format!("{e:?}")))?;
        Ok(BmcConnection {
            address: target.address.clone(),
            ipmi: Ipmi::new(rmcp),
        })
    }
}

impl<C: IpmiConnection> BmcConnection<C> {
    fn command_err(&self, what: &str, reason: String) -> IpmiSourceError {
        IpmiSourceError::Command {
            address: self.address.clone(),
            what: what.to_owned(),
            reason,
        }
    }

    /// Every SEL entry, oldest first.
    pub fn sel_entries(&mut self) -> Result<Vec<SelRecord>, IpmiSourceError> {
        let mut out = Vec::new();
        let mut next = RecordId::FIRST;
        for _ in 0..4096 {
            let info = match self.ipmi.send_recv(GetSelEntry::new(None, next)) {
                Ok(i) => i,
                // An empty SEL answers "requested record not present".
                Err(e)
                    if out.is_empty() && format!("{e:?}").contains("RequestedDataNotPresent") =>
                {
                    break
                }
                Err(e) => return Err(self.command_err("get sel entry", format!("{e:?}"))),
            };
            if let Entry::System {
                record_id,
                sensor_type,
                sensor_number,
                event_direction,
                ..
            } = info.entry.clone()
            {
                out.push(SelRecord {
                    id: record_id.value(),
                    sensor_type: SensorType::from(sensor_type).to_string(),
                    sensor_number,
                    description: Description(&info.entry).to_string(),
                    asserted: event_direction == EventDirection::Assert,
                });
            }
            if info.next_entry.is_last() || info.next_entry == next {
                break;
            }
            next = info.next_entry;
        }
        Ok(out)
    }

    /// Every threshold sensor with a full SDR record.
    pub fn threshold_sensors(&mut self) -> Result<Vec<SensorRead>, IpmiSourceError> {
        let records = self.sdr_records()?;
        let mut out = Vec::new();
        for record in records {
            let RecordContents::FullSensor(full) = &record.contents else {
                continue;
            };
            let key = &full.common().key;
            let raw = match self.ipmi.send_recv(GetSensorReading::for_sensor_key(key)) {
                Ok(r) => r,
                Err(e) => return Err(self.command_err("get sensor reading", format!("{e:?}"))),
            };
            let reading = ThresholdReading::from(&raw);
            let shown = reading.reading.and_then(|r| full.display_reading(r));
            let (value, unit) = match shown.as_deref().and_then(|s| s.split_once(' ')) {
                Some((v, u)) => (v.parse().ok(), Some(u.trim().to_owned())),
                None => (shown.as_deref().and_then(|s| s.parse().ok()), None),
            };
            let state = match reading.threshold_status {
                Some(s) if s.at_or_above_non_recoverable || s.at_or_below_lower_non_recoverable => {
                    SensorState::NonRecoverable
                }
                Some(s) if s.at_or_above_upper_critical || s.at_or_below_lower_critical => {
                    SensorState::Critical
                }
                Some(s) if s.at_or_above_upper_non_critical || s.at_or_below_lower_non_critical => {
                    SensorState::NonCritical
                }
                _ => SensorState::Ok,
            };
            out.push(SensorRead {
                name: full.id_string().to_string(),
                value,
                unit,
                state,
            });
        }
        Ok(out)
    }

    /// Sends one raw request to the BMC and returns the response data
    /// (completion code checked).
    fn raw(
        &mut self,
        netfn: NetFn,
        cmd: u8,
        data: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, IpmiSourceError> {
        let mut request = Request::new(
            Message::new_request(netfn, cmd, data),
            RequestTargetAddress::Bmc(LogicalUnit::Zero),
        );
        let response = self
            .ipmi
            .inner_mut()
            .send_recv(&mut request)
            .map_err(|e| self.command_err(what, format!("{e:?}")))?;
        if response.cc() != 0 {
            return Err(self.command_err(what, format!("completion code {:#04x}", response.cc())));
        }
        Ok(response.data().to_vec())
    }

    /// Reads the whole SDR repository the way ipmitool does: a reservation,
    /// then each record's 5-byte header and its body in 16-byte pieces
    /// (BMCs such as OpenIPMI's refuse to return a record in one piece).
    /// Records that do not parse are skipped.
    fn sdr_records(&mut self) -> Result<Vec<ipmi_rs::storage::sdr::Record>, IpmiSourceError> {
        let reservation = self.raw(NetFn::Storage, 0x22, Vec::new(), "reserve sdr repository")?;
        let (res_lo, res_hi) = (
            reservation.first().copied().unwrap_or(0),
            reservation.get(1).copied().unwrap_or(0),
        );
        let mut records = Vec::new();
        let mut id: u16 = 0x0000;
        for _ in 0..4096 {
            let [id_lo, id_hi] = id.to_le_bytes();
            let head = self.raw(
                NetFn::Storage,
                0x23,
                vec![res_lo, res_hi, id_lo, id_hi, 0, 5],
                "get sdr header",
            )?;
            if head.len() < 7 {
                return Err(self.command_err("get sdr header", format!("{} bytes", head.len())));
            }
            let next = u16::from_le_bytes([head[0], head[1]]);
            let mut record = head[2..7].to_vec();
            let total = 5 + usize::from(head[6]);
            while record.len() < total {
                let offset = u8::try_from(record.len()).unwrap_or(u8::MAX);
                let count = u8::try_from((total - record.len()).min(16)).unwrap_or(16);
                let part = self.raw(
                    NetFn::Storage,
                    0x23,
                    vec![res_lo, res_hi, id_lo, id_hi, offset, count],
                    "get sdr body",
                )?;
                if part.len() <= 2 {
                    break;
                }
                record.extend_from_slice(&part[2..]);
            }
            match ipmi_rs::storage::sdr::Record::parse(&record) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::debug!(bmc = %self.address, record = id, error = ?e, "unparsable sdr record skipped")
                }
            }
            if next == 0xFFFF || next == id {
                break;
            }
            id = next;
        }
        Ok(records)
    }
}

/// Turns BMC reads into events for one node.
#[derive(Debug)]
pub struct IpmiSource {
    events: BmcEvents,
    last_sel: Option<u16>,
}

impl IpmiSource {
    /// `last_sel`: the last SEL record id handled, if saved.
    pub fn new(node: &str, boot_id: &str, last_sel: Option<u16>) -> IpmiSource {
        IpmiSource {
            events: BmcEvents::new(node, boot_id, Source::Ipmi),
            last_sel,
        }
    }

    /// The last SEL record id handled (to save across restarts).
    pub fn last_sel(&self) -> Option<u16> {
        self.last_sel
    }

    /// Events for one read of the SEL.
    pub fn sel_events(&mut self, entries: &[SelRecord], now: Timestamp) -> Vec<Event> {
        let max = entries.iter().map(|e| e.id).max();
        let Some(last) = self.last_sel else {
            self.last_sel = max;
            return Vec::new();
        };
        let cleared = max.is_some_and(|m| m < last) || (max.is_none() && last > 0);
        let fresh: Vec<&SelRecord> = entries.iter().filter(|e| cleared || e.id > last).collect();
        if cleared {
            self.last_sel = max.or(Some(0));
        } else if let Some(m) = max {
            self.last_sel = Some(m.max(last));
        }
        fresh
            .into_iter()
            .map(|e| {
                // The SEL's own ids repeat after a clear: the id includes the
                // boot and the text so a new entry never looks like an old one.
                self.events.event(
                    now,
                    &[
                        self.events.boot_id(),
                        &e.id.to_string(),
                        &e.description,
                        &e.asserted.to_string(),
                    ],
                    EventData::BmcSel(SelEntry {
                        record_id: u32::from(e.id),
                        sensor_type: e.sensor_type.clone(),
                        sensor: format!("#0x{:02x}", e.sensor_number),
                        description: e.description.clone(),
                        asserted: e.asserted,
                    }),
                )
            })
            .collect()
    }

    /// Events for one read of the sensors.
    pub fn sensor_events(&mut self, sensors: &[SensorRead], now: Timestamp) -> Vec<Event> {
        self.events.sensor_events(sensors, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(id: u16, desc: &str, asserted: bool) -> SelRecord {
        SelRecord {
            id,
            sensor_type: "Critical Interrupt".to_owned(),
            sensor_number: 0x90,
            description: desc.to_owned(),
            asserted,
        }
    }

    #[test]
    fn first_read_is_a_baseline_then_only_new_entries() {
        let mut src = IpmiSource::new("n17", "b", None);
        assert!(src
            .sel_events(&[sel(1, "old", true)], Timestamp::EPOCH)
            .is_empty());
        let ev = src.sel_events(
            &[
                sel(1, "old", true),
                sel(2, "Bus Fatal Error", true),
                sel(3, "Bus Fatal Error", false),
            ],
            Timestamp::EPOCH,
        );
        let got: Vec<(u32, bool)> = ev
            .iter()
            .map(|e| match &e.data {
                EventData::BmcSel(s) => (s.record_id, s.asserted),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [(2, true), (3, false)]);
        assert!(src
            .sel_events(
                &[sel(1, "old", true), sel(2, "x", true), sel(3, "x", false)],
                Timestamp::EPOCH
            )
            .is_empty());
        assert_eq!(src.last_sel(), Some(3));
    }

    #[test]
    fn a_saved_position_resumes_and_a_cleared_sel_is_all_new() {
        let mut src = IpmiSource::new("n17", "b", Some(2));
        assert_eq!(
            src.sel_events(
                &[sel(1, "a", true), sel(2, "b", true), sel(3, "c", true)],
                Timestamp::EPOCH
            )
            .len(),
            1
        );
        // Cleared, then one new entry with id 1.
        let ev = src.sel_events(&[sel(1, "Uncorrectable ECC", true)], Timestamp::EPOCH);
        assert_eq!(ev.len(), 1);
        assert_eq!(src.last_sel(), Some(1));
    }

    #[test]
    fn sensor_state_changes_only() {
        let mut src = IpmiSource::new("n17", "b", None);
        let read = |state| SensorRead {
            name: "GPU0 Temp".to_owned(),
            value: Some(64.0),
            unit: Some("degrees C".to_owned()),
            state,
        };
        assert_eq!(
            src.sensor_events(&[read(SensorState::Ok)], Timestamp::EPOCH)
                .len(),
            1
        );
        assert!(src
            .sensor_events(&[read(SensorState::Ok)], Timestamp::EPOCH)
            .is_empty());
        assert_eq!(
            src.sensor_events(&[read(SensorState::Critical)], Timestamp::EPOCH)
                .len(),
            1
        );
    }

    #[test]
    fn a_missing_local_device_is_a_clear_error() {
        let err = Bmc::open(
            &BmcEndpoint::Local("/nonexistent/ipmi0".into()),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bmc /nonexistent/ipmi0: cannot connect"),
            "{err}"
        );
    }

    #[test]
    fn the_password_stays_out_of_debug() {
        let t = BmcTarget {
            address: "127.0.0.1:623".to_owned(),
            username: "admin".to_owned(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
