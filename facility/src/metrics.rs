//! The poller's metrics: its own work (`pitcrew_facility_*`: polls, errors,
//! poll time, devices up) and the facility's readings as gauges
//! (`pitcrew_facility_pdu_*`, `_ups_*`, `_cooling_*`, `_leak_*`) for the
//! facility dashboard. Reading labels are device, rack and part: bounded by
//! the facility's inventory, like a PDU exporter's.

use std::sync::atomic::AtomicU64;

use pitcrew_contract::{Event, EventData};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolOutcome {
    pub protocol: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolReason {
    pub protocol: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    pub device: String,
    pub racks: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PduPart {
    pub device: String,
    pub rack: String,
    pub scope: String,
    pub index: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Unit {
    pub device: String,
    pub racks: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpsSourceLabel {
    pub device: String,
    pub racks: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabel {
    pub device: String,
    pub cooling_loop: String,
    pub racks: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeakLabel {
    pub device: String,
    pub detector: String,
    pub racks: String,
}

pitcrew_observe::metrics! {
    /// The facility's readings, as the dashboard shows them.
    pub struct FacilityTelemetry in "pitcrew_facility" {
        pdu_current: Family<PduPart, FGauge> => "pdu_current_amperes", "PDU current by part (pdu, phase, bank, outlet)";
        pdu_voltage: Family<PduPart, FGauge> => "pdu_voltage_volts", "PDU voltage by part";
        pdu_power: Family<PduPart, FGauge> => "pdu_power_watts", "PDU active power by part";
        pdu_rating: Family<PduPart, FGauge> => "pdu_rating_amperes", "The current each part's load state is judged against";
        pdu_load: Family<PduPart, FGauge> => "pdu_load_state", "Load state: 0 low, 1 normal, 2 near overload, 3 overload";
        pdu_outlet_on: Family<PduPart, FGauge> => "pdu_outlet_on", "Outlet relay: 1 on, 0 off";
        pdu_energy: Family<PduPart, Counter<f64, AtomicU64>> => "pdu_energy_kwh", "Energy used since the poller started, from the meters' deltas";
        pdu_temperature: Family<PduPart, FGauge> => "pdu_temperature_celsius", "PDU probe temperature";
        ups_on_source: Family<UpsSourceLabel, FGauge> => "ups_source", "1 for the UPS's present output source (normal, battery, bypass, none, other)";
        ups_charge: Family<Unit, FGauge> => "ups_charge_percent", "UPS/BESS charge remaining";
        ups_runtime: Family<Unit, FGauge> => "ups_runtime_seconds", "UPS/BESS runtime left at the present load";
        ups_load: Family<Unit, FGauge> => "ups_load_percent", "UPS output load";
        ups_alarms: Family<Unit, FGauge> => "ups_alarms", "Alarms present on the UPS";
        cooling_supply: Family<LoopLabel, FGauge> => "cooling_supply_celsius", "Coolant (or air) supply temperature";
        cooling_return: Family<LoopLabel, FGauge> => "cooling_return_celsius", "Coolant (or air) return temperature";
        cooling_delta_t: Family<LoopLabel, FGauge> => "cooling_delta_t_celsius", "Return minus supply";
        cooling_flow: Family<LoopLabel, FGauge> => "cooling_flow_lpm", "Coolant flow, litres per minute";
        cooling_alarms: Family<LoopLabel, FGauge> => "cooling_alarms", "Alarms present on the cooling unit";
        leak: Family<LeakLabel, FGauge> => "leak_detected", "1 while a leak detector trips";
        device_up: Family<DeviceLabel, FGauge> => "device_up", "1 when the device answered its last poll (from its facility.device events)";
    }
}

pitcrew_observe::metrics! {
    /// The poller's own work (`pitcrew_facility_*`).
    pub struct FacilityMetrics in "pitcrew_facility" {
        polls: Family<ProtocolOutcome, Counter> => "polls", "Device polls, by protocol and outcome (ok, failed)";
        errors: Family<ProtocolReason, Counter>
            => "errors", "Problems met, by protocol and reason (timeout, auth, no_such_object, wrong_type, truncated_table, modbus_exception, invalid_json, counter_reset...)";
        events: Family<KindLabel, Counter> => "events", "Events produced, by kind";
        poll_time: Histogram = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            => "poll_duration" [Seconds], "Time one device's poll took";
        devices: Family<KindLabel, Gauge> => "devices", "Devices configured, by kind";
        devices_down: Gauge => "devices_down", "Devices whose last poll failed";
        state_entries: Gauge => "state_entries", "Meters remembered for deltas";
        lag: Gauge<f64, AtomicU64> => "schedule_lag_seconds", "How late the latest poll started against its schedule";
        + /// The readings.
        telemetry: FacilityTelemetry;
    }
}

fn racks_label(r: &[String]) -> String {
    r.join(",")
}

/// A contract enum's wire word (`outlet`, `battery`, `snmp`).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl FacilityTelemetry {
    /// Sets the gauges an event carries.
    pub fn record(&self, ev: &Event) {
        match &ev.data {
            EventData::FacilityPdu(p) => {
                let label = PduPart {
                    device: ev.node.clone(),
                    rack: racks_label(&p.racks),
                    scope: word(&p.scope),
                    index: p.index.map(|i| i.to_string()).unwrap_or_default(),
                    name: p.name.clone().unwrap_or_default(),
                };
                let set = |f: &Family<PduPart, FGauge>, v: Option<f64>| {
                    if let Some(v) = v {
                        f.get_or_create(&label).set(v);
                    }
                };
                set(&self.pdu_current, p.current_a);
                set(&self.pdu_voltage, p.voltage_v);
                set(&self.pdu_power, p.power_w);
                set(&self.pdu_rating, p.rating_a);
                set(&self.pdu_temperature, p.temperature_c);
                set(
                    &self.pdu_load,
                    p.load.map(|l| match l {
                        pitcrew_contract::LoadState::Low => 0.0,
                        pitcrew_contract::LoadState::Normal => 1.0,
                        pitcrew_contract::LoadState::NearOverload => 2.0,
                        pitcrew_contract::LoadState::Overload => 3.0,
                    }),
                );
                set(
                    &self.pdu_outlet_on,
                    p.state
                        .map(|s| f64::from(u8::from(s == pitcrew_contract::OutletState::On))),
                );
                if let Some(d) = p.energy_delta_kwh {
                    self.pdu_energy.get_or_create(&label).inc_by(d);
                }
            }
            EventData::FacilityUps(u) => {
                let unit = Unit {
                    device: ev.node.clone(),
                    racks: racks_label(&u.racks),
                };
                let source = word(&u.source);
                for s in ["normal", "battery", "bypass", "none", "other"] {
                    self.ups_on_source
                        .get_or_create(&UpsSourceLabel {
                            device: ev.node.clone(),
                            racks: unit.racks.clone(),
                            source: s.to_owned(),
                        })
                        .set(if source == s { 1.0 } else { 0.0 });
                }
                let set = |f: &Family<Unit, FGauge>, v: Option<f64>| {
                    if let Some(v) = v {
                        f.get_or_create(&unit).set(v);
                    }
                };
                set(&self.ups_charge, u.charge_pct);
                set(&self.ups_runtime, u.runtime_s);
                set(&self.ups_load, u.load_pct);
                set(&self.ups_alarms, Some(u.alarms.len() as f64));
            }
            EventData::FacilityCooling(c) => {
                let label = LoopLabel {
                    device: ev.node.clone(),
                    cooling_loop: c.loop_name.clone().unwrap_or_default(),
                    racks: racks_label(&c.racks),
                };
                let set = |f: &Family<LoopLabel, FGauge>, v: Option<f64>| {
                    if let Some(v) = v {
                        f.get_or_create(&label).set(v);
                    }
                };
                set(&self.cooling_supply, c.supply_c);
                set(&self.cooling_return, c.return_c);
                set(&self.cooling_delta_t, c.delta_t_c);
                set(&self.cooling_flow, c.flow_lpm);
                set(&self.cooling_alarms, Some(c.alarms.len() as f64));
            }
            EventData::FacilityDevice(d) => {
                self.device_up
                    .get_or_create(&DeviceLabel {
                        device: ev.node.clone(),
                        racks: racks_label(&d.racks),
                        protocol: word(&d.protocol),
                    })
                    .set(if d.up { 1.0 } else { 0.0 });
            }
            EventData::FacilityLeak(l) => {
                self.leak
                    .get_or_create(&LeakLabel {
                        device: ev.node.clone(),
                        detector: l.detector.clone(),
                        racks: racks_label(&l.racks),
                    })
                    .set(if l.leak { 1.0 } else { 0.0 });
            }
            _ => {}
        }
    }
}
