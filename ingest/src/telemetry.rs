//! The fleet's telemetry as Prometheus metrics (`pitcrew_node_*`), for the
//! fleet-health dashboard: the same events the collector puts on Kafka,
//! counted and gauged per node and GPU.
//!
//! Where it runs: in each node agent (`pitcrew collect`: one node's GPUs,
//! ports and devices, so the labels are bounded by the hardware), and in
//! `pitcrew demo` for its simulated fleet. It never runs in the central
//! stages: there a fleet's worth of `node` labels would be unbounded.
//! Counters grow by the events' deltas (a counter reset on the node, which
//! the event marks, adds nothing); gauges hold the last reading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pitcrew_contract::{Event, EventData};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    pub node: String,
    pub gpu: String,
    /// The GPU's UUID (empty until an event names it).
    pub uuid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuKindLabel {
    pub node: String,
    pub gpu: String,
    /// The GPU's UUID (empty until an event names it).
    pub uuid: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XidLabel {
    pub node: String,
    pub gpu: String,
    /// The GPU's UUID (empty until an event names it).
    pub uuid: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeKindLabel {
    pub node: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IbLabel {
    pub node: String,
    pub device: String,
    pub counter: String,
}

/// `pitcrew_node_info`'s labels: the rules stage publishes one series per
/// inventory node (it knows the inventory), for joins by rack and switch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeInfoLabel {
    pub node: String,
    pub rack: String,
    pub leaf_switch: String,
}

/// The `pitcrew_node_*` families.
#[derive(Clone, Debug, Default)]
pub struct TelemetryMetrics {
    pub xid: Family<XidLabel, Counter>,
    /// kind: corrected | uncorrected (volatile counters).
    pub ecc: Family<GpuKindLabel, Counter>,
    /// kind: correctable | uncorrectable.
    pub remapped_rows: Family<GpuKindLabel, Gauge>,
    pub remap_pending: Family<GpuLabel, Gauge>,
    pub remap_failure: Family<GpuLabel, Gauge>,
    pub pcie_replays: Family<GpuLabel, Counter>,
    /// kind: the AER severity.
    pub pcie_aer: Family<NodeKindLabel, Counter>,
    /// kind: the NVLink counter, summed over the GPU's links.
    pub nvlink: Family<GpuKindLabel, Counter>,
    pub temperature: Family<GpuLabel, Gauge>,
    pub power: Family<GpuLabel, Gauge>,
    /// kind: the clock-event (throttle) reason; 1 while active.
    pub throttle: Family<GpuKindLabel, Gauge>,
    pub ib: Family<IbLabel, Counter>,
    active_throttles: Arc<Mutex<HashMap<GpuLabel, Vec<String>>>>,
    /// The UUID of each (node, GPU index) an event has named, so events
    /// that give the index alone keep the same series.
    uuids: Arc<Mutex<HashMap<(String, String), String>>>,
}

/// A value's serde name (`uncorrected_fatal`, `hw_thermal`...).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl TelemetryMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pitcrew_node");
        r.register("gpu_xid", "Xid errors, by code", self.xid.clone());
        r.register(
            "gpu_ecc_errors",
            "ECC errors (volatile), corrected or uncorrected",
            self.ecc.clone(),
        );
        r.register(
            "gpu_remapped_rows",
            "HBM rows remapped, correctable or uncorrectable",
            self.remapped_rows.clone(),
        );
        r.register(
            "gpu_remap_pending",
            "1 while a row remap waits for a GPU reset",
            self.remap_pending.clone(),
        );
        r.register(
            "gpu_remap_failure",
            "1 when a row remap failed",
            self.remap_failure.clone(),
        );
        r.register(
            "gpu_pcie_replays",
            "PCIe replays",
            self.pcie_replays.clone(),
        );
        r.register(
            "pcie_aer",
            "PCIe AER records, by severity",
            self.pcie_aer.clone(),
        );
        r.register(
            "gpu_nvlink_errors",
            "NVLink error counters, summed over the links",
            self.nvlink.clone(),
        );
        r.register(
            "gpu_temperature_celsius",
            "GPU temperature",
            self.temperature.clone(),
        );
        r.register("gpu_power_watts", "GPU power draw", self.power.clone());
        r.register(
            "gpu_throttle_active",
            "1 while a clock-event (throttle) reason is active",
            self.throttle.clone(),
        );
        r.register("ib_errors", "InfiniBand port counters", self.ib.clone());
    }

    /// The UUID for a GPU index: the event's own, remembered, or the one
    /// an earlier event gave. Bounded by the node's GPUs (the agent) or the
    /// simulated fleet's (the demo).
    fn uuid_of(&self, node: &str, gpu: &str, given: Option<&str>) -> String {
        let Ok(mut known) = self.uuids.lock() else {
            return given.unwrap_or_default().to_owned();
        };
        let key = (node.to_owned(), gpu.to_owned());
        match given {
            Some(u) if !gpu.is_empty() => {
                if known.get(&key).map(String::as_str) != Some(u) {
                    known.insert(key, u.to_owned());
                }
                u.to_owned()
            }
            Some(u) => u.to_owned(),
            None => known.get(&key).cloned().unwrap_or_default(),
        }
    }

    /// Counts or gauges one event.
    pub fn record(&self, ev: &Event) {
        let node = ev.node.clone();
        let gpu = ev
            .gpu
            .as_ref()
            .and_then(|g| g.index)
            .map(|i| i.to_string())
            .unwrap_or_default();
        let uuid = self.uuid_of(&node, &gpu, ev.gpu.as_ref().and_then(|g| g.uuid.as_deref()));
        let g = || GpuLabel {
            node: node.clone(),
            gpu: gpu.clone(),
            uuid: uuid.clone(),
        };
        let gk = |kind: &str| GpuKindLabel {
            node: node.clone(),
            gpu: gpu.clone(),
            uuid: uuid.clone(),
            kind: kind.to_owned(),
        };
        match &ev.data {
            EventData::GpuXid(x) => {
                self.xid
                    .get_or_create(&XidLabel {
                        node: node.clone(),
                        gpu: gpu.clone(),
                        uuid: uuid.clone(),
                        code: x.code.to_string(),
                    })
                    .inc();
            }
            EventData::GpuEcc(e) if name(&e.counter) == "volatile" => {
                self.ecc
                    .get_or_create(&gk("corrected"))
                    .inc_by(e.corrected_delta);
                self.ecc
                    .get_or_create(&gk("uncorrected"))
                    .inc_by(e.uncorrected_delta);
            }
            EventData::GpuRowRemap(r) => {
                self.remapped_rows
                    .get_or_create(&gk("correctable"))
                    .set(i64::from(r.correctable_total));
                self.remapped_rows
                    .get_or_create(&gk("uncorrectable"))
                    .set(i64::from(r.uncorrectable_total));
                self.remap_pending
                    .get_or_create(&g())
                    .set(i64::from(r.pending));
                self.remap_failure
                    .get_or_create(&g())
                    .set(i64::from(r.failure));
            }
            EventData::GpuPcieReplay(c) if !c.reset => {
                self.pcie_replays.get_or_create(&g()).inc_by(c.delta);
            }
            EventData::PcieAer(a) => {
                self.pcie_aer
                    .get_or_create(&NodeKindLabel {
                        node: node.clone(),
                        kind: name(&a.severity),
                    })
                    .inc();
            }
            EventData::GpuNvlink(n) if !n.reset => {
                self.nvlink
                    .get_or_create(&gk(&name(&n.counter)))
                    .inc_by(n.delta);
            }
            EventData::GpuThermal(t) => {
                if let Some(c) = t.gpu_temp_c {
                    self.temperature.get_or_create(&g()).set(c.round() as i64);
                }
                if let Some(w) = t.power_w {
                    self.power.get_or_create(&g()).set(w.round() as i64);
                }
                let now: Vec<String> = t.throttle.iter().map(name).collect();
                let before = self
                    .active_throttles
                    .lock()
                    .ok()
                    .and_then(|mut m| m.insert(g(), now.clone()))
                    .unwrap_or_default();
                for r in before.iter().filter(|r| !now.contains(r)) {
                    self.throttle.get_or_create(&gk(r)).set(0);
                }
                for r in &now {
                    self.throttle.get_or_create(&gk(r)).set(1);
                }
            }
            EventData::NetIbCounter(c) if !c.reset => {
                self.ib
                    .get_or_create(&IbLabel {
                        node: node.clone(),
                        device: c.device.clone(),
                        counter: name(&c.counter),
                    })
                    .inc_by(c.delta);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pitcrew_contract::{examples, EventKind, GpuThermal, ThrottleReason};

    fn text(m: &TelemetryMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        s
    }

    #[test]
    fn events_become_node_metrics() {
        let m = TelemetryMetrics::default();
        let mut xid = examples::event(EventKind::GpuXid);
        xid.node = "n17".into();
        m.record(&xid);
        m.record(&xid);
        let mut hot = examples::event(EventKind::GpuThermal);
        hot.node = "n17".into();
        hot.data = EventData::GpuThermal(GpuThermal {
            gpu_temp_c: Some(91.4),
            memory_temp_c: None,
            power_w: Some(700.0),
            clock_event_reasons: 64,
            throttle: vec![ThrottleReason::HwThermal],
        });
        m.record(&hot);
        let t = text(&m);
        const UUID: &str = "GPU-5a3c1f0e-8d2b-4c1e-9f4a-2b7d6e8c0a11";
        assert!(
            t.contains(&format!(
                "pitcrew_node_gpu_xid_total{{node=\"n17\",gpu=\"3\",uuid=\"{UUID}\",code=\"79\"}} 2"
            )),
            "{t}"
        );
        assert!(t.contains(&format!(
            "pitcrew_node_gpu_temperature_celsius{{node=\"n17\",gpu=\"3\",uuid=\"{UUID}\"}} 91"
        )));
        // An event that gives the index alone stays on the GPU's series.
        let mut bare = hot.clone();
        bare.gpu.as_mut().unwrap().uuid = None;
        if let EventData::GpuThermal(th) = &mut bare.data {
            th.gpu_temp_c = Some(88.0);
        }
        m.record(&bare);
        let t = text(&m);
        assert!(
            t.contains(&format!(
                "pitcrew_node_gpu_temperature_celsius{{node=\"n17\",gpu=\"3\",uuid=\"{UUID}\"}} 88"
            )),
            "{t}"
        );
        assert!(!t.contains("uuid=\"\""), "{t}");
        assert!(t.contains("kind=\"hw_thermal\"} 1"), "{t}");
        // The slowdown ends: the reason reads 0, not a stale 1.
        if let EventData::GpuThermal(th) = &mut hot.data {
            th.throttle.clear();
        }
        m.record(&hot);
        assert!(text(&m).contains("kind=\"hw_thermal\"} 0"));
    }
}
