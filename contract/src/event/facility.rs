//! The facility kinds' own fields: readings from rack PDUs, UPS/BESS,
//! cooling units and leak detectors, taken by `pitcrew facility`.
//!
//! A facility event's envelope `node` names the facility device (its
//! inventory `[[facility]]` name), not a node; `data.racks` lists the racks
//! it serves, so the rules can put it beside those racks' nodes. Units are
//! normalised whatever the device speaks: amperes, volts, watts,
//! kilowatt-hours, degrees Celsius, percent, seconds, litres per minute,
//! kilopascals.

use super::*;

/// What part of a PDU a `facility.pdu` reading is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PduScope {
    /// The whole unit (its input).
    #[default]
    Pdu,
    /// One input phase.
    Phase,
    /// One bank (a breaker-protected group of outlets).
    Bank,
    /// One outlet.
    Outlet,
    /// One of the PDU's temperature/humidity probes.
    Probe,
}

/// A load against its rating, as the PDU judges it (APC's rPDU2 load
/// state, Raritan's and ServerTech's thresholds map onto it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadState {
    Low,
    Normal,
    NearOverload,
    Overload,
}

/// An outlet's relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutletState {
    On,
    Off,
}

/// `facility.pdu`: one reading of a rack PDU, its phase, bank, outlet or
/// probe. `index` counts as the device does (1-based).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PduReading {
    #[serde(default)]
    pub racks: Vec<String>,
    pub scope: PduScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The name the PDU gives the outlet, bank or probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voltage_v: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// Energy meter (lifetime, as the device counts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_kwh: Option<f64>,
    /// Energy since the previous poll, from the meter's difference (a meter
    /// that went back was reset: no delta then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_delta_kwh: Option<f64>,
    /// The current the load state is judged against: the overload
    /// threshold the device is set to, else its rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OutletState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humidity_pct: Option<f64>,
}

/// Where a UPS's output comes from (RFC 1628 upsOutputSource).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsSource {
    /// Mains through the UPS (or the inverter on an online UPS).
    Normal,
    Battery,
    Bypass,
    /// The output is off.
    None,
    /// Boosting or reducing a low or high input, or anything else.
    Other,
}

/// RFC 1628 upsBatteryStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryStatus {
    Unknown,
    Normal,
    Low,
    Depleted,
}

/// `facility.ups`: a UPS or battery storage system (BESS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpsReading {
    #[serde(default)]
    pub racks: Vec<String>,
    pub source: UpsSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<BatteryStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_pct: Option<f64>,
    /// Runtime left at the present load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_s: Option<f64>,
    /// How long it has been on battery (0 when not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery_s: Option<f64>,
    /// Output load, percent of capacity (the most loaded line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_voltage_v: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_voltage_v: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_power_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// Alarms present now, by name (`on_battery`, `low_battery`,
    /// `output_overload`, RFC 1628's well-known alarm names...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// What kind of cooling equipment a `facility.cooling` reading is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoolingUnit {
    /// Coolant distribution unit (liquid loop).
    Cdu,
    Crac,
    Crah,
    Chiller,
    Other,
}

/// `facility.cooling`: a CDU, CRAC or CRAH and the loop it feeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoolingReading {
    #[serde(default)]
    pub racks: Vec<String>,
    pub unit: CoolingUnit,
    /// The cooling loop (or room zone) the unit feeds.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_c: Option<f64>,
    /// Return minus supply: computed when the device gives both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_t_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_lpm: Option<f64>,
    /// Differential (or supply) pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure_kpa: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setpoint_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pump_on: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_on: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// `facility.leak`: one leak detector (a rope under a rack, a tray sensor).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakReading {
    #[serde(default)]
    pub racks: Vec<String>,
    /// The detector's name on the device.
    pub detector: String,
    pub leak: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// How the poller reaches a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacilityProtocol {
    Snmp,
    Modbus,
    Redfish,
}

/// `facility.device`: the device answers its poll or not. Written when
/// that changes and at every poll while it is down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReachability {
    #[serde(default)]
    pub racks: Vec<String>,
    pub up: bool,
    pub protocol: FacilityProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Polls failed in a row (0 when up).
    #[serde(default)]
    pub failures: u32,
    /// Why the last poll failed (never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl EventData {
    /// The racks a facility event is about; empty for other kinds.
    pub fn facility_racks(&self) -> &[String] {
        match self {
            EventData::FacilityPdu(r) => &r.racks,
            EventData::FacilityUps(r) => &r.racks,
            EventData::FacilityCooling(r) => &r.racks,
            EventData::FacilityLeak(r) => &r.racks,
            EventData::FacilityDevice(r) => &r.racks,
            _ => &[],
        }
    }

    /// Replaces a facility event's racks; other kinds are left alone.
    pub fn set_facility_racks(&mut self, racks: Vec<String>) {
        match self {
            EventData::FacilityPdu(r) => r.racks = racks,
            EventData::FacilityUps(r) => r.racks = racks,
            EventData::FacilityCooling(r) => r.racks = racks,
            EventData::FacilityLeak(r) => r.racks = racks,
            EventData::FacilityDevice(r) => r.racks = racks,
            _ => {}
        }
    }
}
