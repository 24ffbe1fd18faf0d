//! pitcrew's fleet simulator: what `pitcrew demo` and `pitcrew simulate`
//! feed the pipeline with.
//!
//! - [`FleetSpec`] is the fleet's shape (nodes, GPUs, racks, leaf switches,
//!   jobs) and its [`Inventory`];
//! - [`Fleet::sample`] is one sampling round of every live node: the
//!   periodic telemetry a node agent sends (heartbeat, per GPU thermal,
//!   ECC, PCIe replay, NVLink and a training step, per node InfiniBand
//!   counters), all quiet;
//! - [`Fleet::sample_facility`] is one round of the facility around the
//!   racks, as `pitcrew facility` reports it: per rack a PDU (phases and an
//!   outlet per node), a UPS, a CDU on its own cooling loop and a leak rope;
//! - [`Player`] plays a fault script ([`Scenario`]) against a clock.
//!
//! No I/O and no clock: callers pass the time in, so tests are exact.

use pitcrew_contract::{
    examples, BatteryStatus, CoolingReading, CoolingUnit, DeviceReachability, Event, EventData,
    EventKind, FacilityProtocol, GpuRef, IbCounterName, LeakReading, LoadState, OutletState,
    PduReading, PduScope, Source, Timestamp, UpsReading, UpsSource,
};
use pitcrew_rules::{FacilityInfo, Inventory, NodeInfo, Scenario, Span, TEST_EPOCH};

/// The demo's built-in fault script.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The shape of a simulated fleet. Nodes are `n1`..`nN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    pub nodes: u32,
    pub gpus: u32,
    pub nodes_per_rack: u32,
    pub racks_per_leaf: u32,
    pub nodes_per_job: u32,
    pub driver_version: String,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            nodes: 64,
            gpus: 8,
            nodes_per_rack: 8,
            racks_per_leaf: 2,
            nodes_per_job: 8,
            driver_version: "570.86.15".to_owned(),
        }
    }
}

impl FleetSpec {
    pub fn node_name(&self, i: u32) -> String {
        format!("n{}", i + 1)
    }

    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes).map(|i| self.node_name(i)).collect()
    }

    /// Racks `r1`.., leaf switches `leaf-1`.., one driver version, and the
    /// racks' facility devices.
    pub fn inventory(&self) -> Inventory {
        let per_rack = self.nodes_per_rack.max(1);
        let per_leaf = per_rack * self.racks_per_leaf.max(1);
        let mut inv = Inventory::new(
            (0..self.nodes)
                .map(|i| NodeInfo {
                    name: self.node_name(i),
                    rack: Some(format!("r{}", i / per_rack + 1)),
                    leaf_switch: Some(format!("leaf-{}", i / per_leaf + 1)),
                    gpus: Some(self.gpus),
                    driver_version: Some(self.driver_version.clone()),
                    ..NodeInfo::default()
                })
                .collect(),
        );
        for f in self.facilities() {
            inv.insert_facility(f);
        }
        inv
    }

    /// The job node `i` runs (`job-1` on the first `nodes_per_job` nodes).
    pub fn job_of(&self, i: u32) -> String {
        format!("job-{}", i / self.nodes_per_job.max(1))
    }

    /// Events one sampling round produces with every node alive.
    pub fn events_per_round(&self) -> u64 {
        u64::from(self.nodes) * (u64::from(self.gpus) * 6 + IB_PORTS as u64 + 1)
    }
}

/// InfiniBand ports sampled per node.
const IB_PORTS: u32 = 8;

/// Periodic telemetry for a fleet.
#[derive(Debug)]
pub struct Fleet {
    spec: FleetSpec,
    names: Vec<String>,
    templates: Templates,
    round: u64,
    facility_round: u64,
    /// Prefixes event ids so runs against a long-lived Kafka never collide.
    run: String,
}

#[derive(Debug)]
struct Templates {
    heartbeat: Event,
    thermal: Event,
    ecc: Event,
    replay: Event,
    nvlink: Event,
    remap: Event,
    step: Event,
    ib: Event,
}

fn quiet(kind: EventKind) -> Event {
    let mut e = examples::event(kind);
    e.labels.clear();
    match &mut e.data {
        EventData::GpuThermal(t) => {
            t.throttle.clear();
            t.clock_event_reasons = 0;
        }
        EventData::GpuEcc(x) => {
            x.corrected_delta = 0;
            x.uncorrected_delta = 0;
        }
        EventData::GpuPcieReplay(x) => x.delta = 0,
        EventData::GpuNvlink(x) => x.delta = 0,
        EventData::GpuRowRemap(x) => {
            x.correctable_delta = 0;
            x.uncorrectable_delta = 0;
            x.pending = false;
            x.failure = false;
        }
        EventData::NetIbCounter(x) => {
            x.counter = IbCounterName::SymbolError;
            x.delta = 0;
        }
        EventData::JobStep(x) => {
            x.traffic_bytes = Some(1 << 30);
            x.step_time_s = 1.0;
        }
        _ => {}
    }
    e
}

impl Fleet {
    pub fn new(spec: FleetSpec, run: impl Into<String>) -> Fleet {
        Fleet {
            names: spec.node_names(),
            spec,
            templates: Templates {
                heartbeat: quiet(EventKind::NodeHeartbeat),
                thermal: quiet(EventKind::GpuThermal),
                ecc: quiet(EventKind::GpuEcc),
                replay: quiet(EventKind::GpuPcieReplay),
                nvlink: quiet(EventKind::GpuNvlink),
                remap: quiet(EventKind::GpuRowRemap),
                step: quiet(EventKind::JobStep),
                ib: quiet(EventKind::NetIbCounter),
            },
            round: 0,
            facility_round: 0,
            run: run.into(),
        }
    }

    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    /// One round: every node `alive` accepts sends its telemetry, stamped
    /// `now`. Returns how many events were appended.
    pub fn sample(
        &mut self,
        now: Timestamp,
        alive: &dyn Fn(&str) -> bool,
        out: &mut Vec<Event>,
    ) -> usize {
        let before = out.len();
        self.round += 1;
        let round = self.round;
        for (i, node) in self.names.iter().enumerate() {
            if !alive(node) {
                continue;
            }
            let i = i as u32;
            let mut seq = 0u32;
            let mut push = |template: &Event, gpu: Option<u32>, out: &mut Vec<Event>| {
                let mut e = template.clone();
                e.node.clone_from(node);
                e.time = now;
                e.id = format!("{}-{node}-{round}-{seq}", self.run);
                seq += 1;
                e.gpu = gpu.map(|g| GpuRef {
                    index: Some(g),
                    ..GpuRef::default()
                });
                out.push(e);
            };
            push(&self.templates.heartbeat, None, out);
            let job = self.spec.job_of(i);
            let job_rank0 = (i % self.spec.nodes_per_job.max(1)) * self.spec.gpus;
            for g in 0..self.spec.gpus {
                push(&self.templates.thermal, Some(g), out);
                push(&self.templates.ecc, Some(g), out);
                push(&self.templates.replay, Some(g), out);
                push(&self.templates.nvlink, Some(g), out);
                push(&self.templates.remap, Some(g), out);
                push(&self.templates.step, Some(g), out);
                if let Some(Event {
                    data: EventData::JobStep(s),
                    ..
                }) = out.last_mut()
                {
                    s.job.clone_from(&job);
                    s.rank = job_rank0 + g;
                    s.step = round;
                }
            }
            for port in 0..IB_PORTS {
                push(&self.templates.ib, None, out);
                if let Some(Event {
                    data: EventData::NetIbCounter(x),
                    ..
                }) = out.last_mut()
                {
                    x.device = format!("mlx5_{port}");
                    x.port = 1;
                }
            }
        }
        out.len() - before
    }
}

/// The facility around the simulated racks: per rack a PDU (three phases
/// and an outlet per node), a UPS, a CDU on its own cooling loop and a
/// leak rope, healthy, as `pitcrew facility` would report them.
impl FleetSpec {
    pub fn racks(&self) -> u32 {
        self.nodes.div_ceil(self.nodes_per_rack.max(1))
    }

    /// The facility devices' inventory entries (`pdu-rN`, `ups-rN`,
    /// `cdu-rN` on loop `LN`, `leak-rN`).
    pub fn facilities(&self) -> Vec<FacilityInfo> {
        let mut out = Vec::new();
        for r in 1..=self.racks() {
            let rack = format!("r{r}");
            for (prefix, kind) in [
                ("pdu", "pdu"),
                ("ups", "ups"),
                ("cdu", "cooling"),
                ("leak", "leak"),
            ] {
                out.push(FacilityInfo {
                    name: format!("{prefix}-{rack}"),
                    kind: kind.to_owned(),
                    racks: vec![rack.clone()],
                    cooling_loop: (kind == "cooling").then(|| format!("L{r}")),
                    ..FacilityInfo::default()
                });
            }
        }
        out
    }

    /// Events one facility round produces.
    pub fn facility_events_per_round(&self) -> u64 {
        let per_rack = self.nodes_per_rack.max(1);
        let mut n = 0;
        for r in 0..self.racks() {
            let nodes = (self.nodes - r * per_rack).min(per_rack);
            // pdu + 3 phases + outlets, ups, cdu, leak, and 4 device-up events the first round only.
            n += 1 + 3 + u64::from(nodes) + 3;
        }
        n
    }
}

impl Fleet {
    /// One facility round at `now`; the first also says every device is up.
    pub fn sample_facility(&mut self, now: Timestamp, out: &mut Vec<Event>) -> usize {
        let before = out.len();
        self.facility_round += 1;
        let round = self.facility_round;
        let per_rack = self.spec.nodes_per_rack.max(1);
        let run = self.run.clone();
        let push = |device: String, data: EventData, part: String, out: &mut Vec<Event>| {
            out.push(Event {
                id: format!("{run}-{device}-{part}-{round}"),
                node: device,
                time: now,
                source: Source::Facility,
                gpu: None,
                count: 1,
                labels: Default::default(),
                data,
            });
        };
        for r in 0..self.spec.racks() {
            let rack = format!("r{}", r + 1);
            let racks = vec![rack.clone()];
            let nodes = (self.spec.nodes - r * per_rack).min(per_rack);
            let pdu = format!("pdu-{rack}");
            // ~1.1 kW per GPU node per phase share, a little wobble per round.
            let wobble = f64::from(u32::try_from(round % 7).unwrap_or(0)) * 0.1;
            let outlet_a = 9.5 + wobble;
            let phase_a = outlet_a * f64::from(nodes) / 3.0;
            let reading = |scope: PduScope, index: Option<u32>| PduReading {
                racks: racks.clone(),
                scope,
                index,
                voltage_v: Some(230.0),
                load: Some(LoadState::Normal),
                ..PduReading::default()
            };
            let mut unit = reading(PduScope::Pdu, Some(1));
            unit.power_w = Some(phase_a * 3.0 * 230.0 * 0.95);
            push(pdu.clone(), EventData::FacilityPdu(unit), "pdu".into(), out);
            for l in 1..=3 {
                let mut p = reading(PduScope::Phase, Some(l));
                p.current_a = Some(phase_a);
                p.rating_a = Some(63.0);
                p.power_w = Some(phase_a * 230.0 * 0.95);
                push(
                    pdu.clone(),
                    EventData::FacilityPdu(p),
                    format!("phase{l}"),
                    out,
                );
            }
            for o in 1..=nodes {
                let mut p = reading(PduScope::Outlet, Some(o));
                p.name = Some(self.spec.node_name(r * per_rack + o - 1));
                p.current_a = Some(outlet_a);
                p.rating_a = Some(16.0);
                p.state = Some(OutletState::On);
                p.energy_delta_kwh = Some(outlet_a * 230.0 / 1000.0 * 5.0 / 3600.0);
                push(
                    pdu.clone(),
                    EventData::FacilityPdu(p),
                    format!("outlet{o}"),
                    out,
                );
            }
            push(
                format!("ups-{rack}"),
                EventData::FacilityUps(UpsReading {
                    racks: racks.clone(),
                    source: UpsSource::Normal,
                    battery: Some(BatteryStatus::Normal),
                    charge_pct: Some(100.0),
                    runtime_s: Some(1200.0),
                    on_battery_s: Some(0.0),
                    load_pct: Some(40.0 + wobble),
                    input_voltage_v: Some(230.0),
                    output_voltage_v: Some(230.0),
                    output_power_w: None,
                    temperature_c: Some(24.0),
                    alarms: Vec::new(),
                }),
                "ups".into(),
                out,
            );
            push(
                format!("cdu-{rack}"),
                EventData::FacilityCooling(CoolingReading {
                    racks: racks.clone(),
                    unit: CoolingUnit::Cdu,
                    loop_name: Some(format!("L{}", r + 1)),
                    supply_c: Some(42.0 + wobble / 2.0),
                    return_c: Some(54.0 + wobble / 2.0),
                    delta_t_c: Some(12.0),
                    flow_lpm: Some(400.0),
                    pressure_kpa: Some(120.0),
                    setpoint_c: Some(42.0),
                    pump_on: Some(true),
                    fan_on: None,
                    alarms: Vec::new(),
                }),
                "cdu".into(),
                out,
            );
            push(
                format!("leak-{rack}"),
                EventData::FacilityLeak(LeakReading {
                    racks: racks.clone(),
                    detector: format!("rope-{rack}"),
                    leak: false,
                    zone: None,
                }),
                "leak".into(),
                out,
            );
            if round == 1 {
                for (device, protocol) in [
                    (pdu.clone(), FacilityProtocol::Snmp),
                    (format!("ups-{rack}"), FacilityProtocol::Snmp),
                    (format!("cdu-{rack}"), FacilityProtocol::Modbus),
                    (format!("leak-{rack}"), FacilityProtocol::Redfish),
                ] {
                    push(
                        device,
                        EventData::FacilityDevice(DeviceReachability {
                            racks: racks.clone(),
                            up: true,
                            protocol,
                            profile: None,
                            failures: 0,
                            error: None,
                        }),
                        "device".into(),
                        out,
                    );
                }
            }
        }
        out.len() - before
    }
}

/// Plays a scenario's events once their time has come.
#[derive(Debug)]
pub struct Player {
    events: Vec<Event>,
    next: usize,
    run: String,
}

impl Player {
    pub fn new(scenario: &Scenario, run: impl Into<String>) -> Player {
        Player {
            events: scenario.events.clone(),
            next: 0,
            run: run.into(),
        }
    }

    /// The events due `elapsed` into a run that started at `start`, with
    /// their times moved onto that clock.
    pub fn due(&mut self, start: Timestamp, elapsed: Span) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.events.get(self.next) {
            let offset = e.time.unix_nanos() - TEST_EPOCH.unix_nanos();
            if offset > elapsed.0 {
                break;
            }
            let mut e = e.clone();
            e.time = start.add_nanos(offset);
            // Times inside the data are on the script's clock too.
            if let EventData::NodeMaintenance(m) = &mut e.data {
                if let Some(until) = m.until {
                    m.until = Some(start.add_nanos(until.unix_nanos() - TEST_EPOCH.unix_nanos()));
                }
            }
            e.id = format!("{}-{}", self.run, e.id);
            out.push(e);
            self.next += 1;
        }
        out
    }

    pub fn remaining(&self) -> usize {
        self.events.len() - self.next
    }

    pub fn total(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_inside_the_data_move_with_the_clock() {
        let s = Scenario::parse(
            "m.toml",
            "[[event]]\nat = \"5s\"\nnode = \"n1\"\nkind = \"node.maintenance\"\ndata = { state = \"start\", reason = \"fw\" }\n",
        )
        .unwrap();
        let written = match &s.events[0].data {
            EventData::NodeMaintenance(m) => m.until.unwrap(),
            d => panic!("{d:?}"),
        };
        let start = Timestamp::from_unix_nanos(4_000_000_000_000_000_000);
        let mut p = Player::new(&s, "r");
        let e = p.due(start, Span::from_secs(10)).remove(0);
        let EventData::NodeMaintenance(m) = &e.data else {
            panic!()
        };
        assert_eq!(
            m.until.unwrap().unix_nanos() - start.unix_nanos(),
            written.unix_nanos() - TEST_EPOCH.unix_nanos()
        );
    }

    #[test]
    fn a_facility_round_reports_every_racks_devices() {
        let spec = FleetSpec {
            nodes: 20,
            ..FleetSpec::default()
        };
        assert_eq!(spec.racks(), 3);
        let mut fleet = Fleet::new(spec.clone(), "t");
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let mut out = Vec::new();
        let first = fleet.sample_facility(now, &mut out);
        // The first round also says every device is up.
        assert_eq!(first as u64, spec.facility_events_per_round() + 4 * 3);
        out.clear();
        let n = fleet.sample_facility(now, &mut out);
        assert_eq!(n as u64, spec.facility_events_per_round());
        // Rack r3 has 4 nodes: 4 outlets, named after them.
        let outlets: Vec<&str> = out
            .iter()
            .filter_map(|e| match &e.data {
                EventData::FacilityPdu(p) if p.scope == PduScope::Outlet && p.racks == ["r3"] => {
                    p.name.as_deref()
                }
                _ => None,
            })
            .collect();
        assert_eq!(outlets, ["n17", "n18", "n19", "n20"]);
        let ids: std::collections::HashSet<&str> = out.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), out.len());
        // Every event is valid on the wire, and the inventory knows each device.
        let inv = spec.inventory();
        for e in &out {
            let back: Event = pitcrew_contract::decode(&pitcrew_contract::encode(e)).unwrap();
            assert_eq!(&back, e);
            assert!(inv.facility(&e.node).is_some(), "{}", e.node);
        }
    }

    #[test]
    fn a_round_is_every_live_node_and_its_shape_is_known() {
        let spec = FleetSpec {
            nodes: 4,
            ..FleetSpec::default()
        };
        let mut fleet = Fleet::new(spec.clone(), "t");
        let mut out = Vec::new();
        let now = Timestamp::from_unix_millis(1_800_000_000_000);
        let n = fleet.sample(now, &|_| true, &mut out);
        assert_eq!(n as u64, spec.events_per_round());
        assert!(out.iter().all(|e| e.time == now));
        let ids: std::collections::HashSet<&str> = out.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), out.len(), "ids are unique");
        // A node that is off sends nothing.
        out.clear();
        fleet.sample(now, &|n| n != "n2", &mut out);
        assert!(out.iter().all(|e| e.node != "n2"));
        assert_eq!(out.len() as u64, spec.events_per_round() / 4 * 3);
        // Training steps carry the job and a rank per GPU.
        let ranks: Vec<u32> = out
            .iter()
            .filter(|e| e.node == "n3")
            .filter_map(|e| match &e.data {
                EventData::JobStep(s) => Some(s.rank),
                _ => None,
            })
            .collect();
        assert_eq!(ranks, (16..24).collect::<Vec<_>>());
    }

    #[test]
    fn every_sample_is_quiet_under_the_default_pack() {
        // The background must not open incidents by itself: only the
        // scripted faults do.
        let set = pitcrew_rules::compile(&pitcrew_rules::default_pack()).unwrap();
        let spec = FleetSpec {
            nodes: 16,
            ..FleetSpec::default()
        };
        let mut pipeline = pitcrew_rules::Pipeline::new(
            &set.program,
            std::sync::Arc::new(spec.inventory()),
            pitcrew_rules::EngineConfig::default(),
        );
        let mut fleet = Fleet::new(spec, "t");
        let start = Timestamp::from_unix_millis(1_800_000_000_000);
        let mut outputs = Vec::new();
        for s in 0..300 {
            let mut evs = Vec::new();
            let now = start.add_nanos(s * 1_000_000_000);
            fleet.sample(now, &|_| true, &mut evs);
            for e in &evs {
                pipeline.process(e, &mut outputs);
            }
            pipeline.advance(now, &mut outputs);
        }
        assert!(outputs.is_empty(), "{:?}", outputs.first());
    }

    #[test]
    fn the_demo_script_parses_and_is_shorter_than_the_demo() {
        let s = Scenario::parse("demo.toml", DEMO_SCENARIO).unwrap();
        assert!(s.length() < Span::from_secs(20), "{}", s.length());
        let spec = FleetSpec::default();
        let inv = spec.inventory();
        assert!(s.events.iter().all(|e| inv.get(&e.node).is_some()));
    }

    #[test]
    fn the_demo_script_asks_for_exactly_the_reference_actions() {
        let set = pitcrew_rules::compile(&pitcrew_rules::default_pack()).unwrap();
        let spec = FleetSpec::default();
        let mut pipeline = pitcrew_rules::Pipeline::new(
            &set.program,
            std::sync::Arc::new(spec.inventory()),
            pitcrew_rules::EngineConfig::default(),
        );
        let scenario = Scenario::parse("demo.toml", DEMO_SCENARIO).unwrap();
        let mut player = Player::new(&scenario, "t");
        let mut fleet = Fleet::new(spec, "t");
        let start = Timestamp::from_unix_millis(1_800_000_000_000);
        let mut actions = Vec::new();
        // 30 s of demo, sampled every 100 ms.
        for tick in 0..300 {
            let elapsed = Span(tick * 100_000_000);
            let now = start.add_nanos(elapsed.0);
            let mut evs = player.due(start, elapsed);
            if tick % 10 == 0 {
                fleet.sample(now, &|_| true, &mut evs);
            }
            evs.sort_by_key(|e| e.time);
            let mut outputs = Vec::new();
            for e in &evs {
                pipeline.process(e, &mut outputs);
            }
            pipeline.advance(now, &mut outputs);
            for o in outputs {
                if let pitcrew_rules::Output::Action(a) = o {
                    actions.push(format!("{} {}", a.plan, a.target));
                }
            }
        }
        actions.sort();
        assert_eq!(
            actions,
            [
                "notify job/job-1",
                "page driver_version/570.86.15",
                "page leaf_switch/leaf-4",
                "reboot_node node/n17",
                "reboot_node node/n42",
                "restart_app node/n5",
            ]
        );
    }

    #[test]
    fn the_player_releases_events_when_due_on_the_run_clock() {
        let s = Scenario::parse("demo.toml", DEMO_SCENARIO).unwrap();
        let mut p = Player::new(&s, "run1");
        let start = Timestamp::from_unix_millis(1_800_000_000_000);
        assert!(p.due(start, Span::from_secs(2)).is_empty());
        let due = p.due(start, Span::from_secs(3));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].node, "n17");
        assert_eq!(due[0].time, start.add_nanos(3_000_000_000));
        assert!(due[0].id.starts_with("run1-"));
        let rest = p.due(start, Span::from_secs(60));
        assert_eq!(rest.len() + 1, p.total());
        assert_eq!(p.remaining(), 0);
    }
}
