//! One example message per event kind and per message type. The schema
//! document shows exactly these (a test keeps the two in step), round-trip
//! tests and benchmarks use them, and so can anyone writing a producer.

use std::collections::BTreeMap;

use crate::*;

fn pci(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap_or(PciAddress {
        domain: 0,
        bus: 0,
        device: 0,
        function: 0,
    })
}

/// 2026-11-24T14:23:32.123Z, the instant every example uses.
pub const EXAMPLE_TIME: Timestamp = Timestamp::from_unix_millis(1_795_530_212_123);

fn gpu3() -> Option<GpuRef> {
    Some(GpuRef {
        index: Some(3),
        uuid: Some("GPU-5a3c1f0e-8d2b-4c1e-9f4a-2b7d6e8c0a11".to_owned()),
        pci: Some(pci("0000:2b:00.0")),
    })
}

/// An example event of `kind`.
pub fn event(kind: EventKind) -> Event {
    let (source, gpu, data) = match kind {
        EventKind::GpuXid => (
            Source::Nvml,
            gpu3(),
            EventData::GpuXid(Xid {
                code: 79,
                pid: None,
                process: None,
                message: Some("GPU has fallen off the bus.".to_owned()),
                recovery_action: None,
                gpu_instance: None,
                compute_instance: None,
            }),
        ),
        EventKind::GpuEcc => (
            Source::Nvml,
            gpu3(),
            EventData::GpuEcc(Ecc {
                counter: EccCounter::Volatile,
                corrected_delta: 12,
                uncorrected_delta: 0,
                corrected_total: 40,
                uncorrected_total: 0,
            }),
        ),
        EventKind::GpuRowRemap => (
            Source::Nvml,
            gpu3(),
            EventData::GpuRowRemap(RowRemap {
                correctable_total: 2,
                uncorrectable_total: 1,
                correctable_delta: 0,
                uncorrectable_delta: 1,
                pending: true,
                failure: false,
            }),
        ),
        EventKind::GpuRetiredPages => (
            Source::Nvml,
            gpu3(),
            EventData::GpuRetiredPages(RetiredPages {
                single_bit_total: 3,
                double_bit_total: 1,
                delta: 1,
                pending: false,
            }),
        ),
        EventKind::GpuPcieReplay => (
            Source::Nvml,
            gpu3(),
            EventData::GpuPcieReplay(CounterDelta {
                delta: 14,
                total: 230,
                reset: false,
            }),
        ),
        EventKind::GpuThermal => (
            Source::Nvml,
            gpu3(),
            EventData::GpuThermal(GpuThermal {
                gpu_temp_c: Some(87.0),
                memory_temp_c: Some(92.0),
                power_w: Some(612.5),
                clock_event_reasons: 0x48,
                throttle: ThrottleReason::from_mask(0x48),
            }),
        ),
        EventKind::GpuNvlink => (
            Source::Nvml,
            gpu3(),
            EventData::GpuNvlink(Nvlink {
                link: 5,
                counter: NvlinkCounter::CrcFlit,
                delta: 120,
                total: 4410,
                reset: false,
            }),
        ),
        EventKind::GpuLost => (
            Source::Nvml,
            gpu3(),
            EventData::GpuLost(GpuLost {
                reason: "NVML_ERROR_GPU_IS_LOST".to_owned(),
            }),
        ),
        EventKind::GpuRecoveryAction => (
            Source::Nvml,
            gpu3(),
            EventData::GpuRecoveryAction(RecoveryAction {
                action: 1,
                previous: Some(0),
            }),
        ),
        EventKind::NvswitchSxid => (
            Source::Kmsg,
            None,
            EventData::NvswitchSxid(Sxid {
                switch: "nvidia-nvswitch3".to_owned(),
                pci: pci("0000:05:00.0"),
                code: 12028,
                fatal: false,
                link: Some(32),
                message: Some("egress non-posted PRIV error".to_owned()),
            }),
        ),
        EventKind::PcieAer => (
            Source::Kmsg,
            None,
            EventData::PcieAer(Aer {
                device: pci("0000:00:1c.4"),
                severity: AerSeverity::UncorrectedFatal,
                layer: Some(PcieLayer::Transaction),
                agent: Some("Requester ID".to_owned()),
                vendor_device: Some("8086:9d14".to_owned()),
                status: Some(0x0000_4020),
                mask: Some(0),
                errors: vec!["SDES".to_owned(), "CmpltTO".to_owned()],
                first: Some("SDES".to_owned()),
            }),
        ),
        EventKind::PcieDpc => (
            Source::Kmsg,
            None,
            EventData::PcieDpc(Dpc {
                port: pci("0000:00:1c.4"),
                reason: Some("ERR_FATAL".to_owned()),
                source: Some(pci("0000:2b:00.0")),
            }),
        ),
        EventKind::PcieLinkDown => (
            Source::Kmsg,
            None,
            EventData::PcieLinkDown(LinkDown {
                port: Some(pci("0000:00:1c.4")),
                slot: Some("400".to_owned()),
            }),
        ),
        EventKind::HostEdac => (
            Source::Sysfs,
            None,
            EventData::HostEdac(Edac {
                controller: 3,
                severity: MemoryErrorSeverity::Ce,
                count: 1,
                location: Some("CPU_SrcID#0_Channel#0_DIMM#0".to_owned()),
                message: None,
            }),
        ),
        EventKind::HostMce => (
            Source::Kmsg,
            None,
            EventData::HostMce(Mce {
                cpu: Some(0),
                bank: Some(7),
                message: "Machine check events logged".to_owned(),
            }),
        ),
        EventKind::HostThermal => (
            Source::Kmsg,
            None,
            EventData::HostThermal(HostThermal {
                cpu: 3,
                scope: ThermalScope::Core,
                state: ThermalState::Throttled,
                total_events: Some(12),
            }),
        ),
        EventKind::HostSensor => (
            Source::Sysfs,
            None,
            EventData::HostSensor(Sensor {
                sensor: "coretemp/Package id 0".to_owned(),
                value: Some(101.0),
                unit: Some("degrees C".to_owned()),
                state: SensorState::Critical,
            }),
        ),
        EventKind::NetIbCounter => (
            Source::Sysfs,
            None,
            EventData::NetIbCounter(IbCounter {
                device: "mlx5_0".to_owned(),
                port: 1,
                counter: IbCounterName::LinkDowned,
                delta: 1,
                total: 3,
                reset: false,
            }),
        ),
        EventKind::NetLink => (
            Source::Sysfs,
            None,
            EventData::NetLink(NetLink {
                interface: "ib0".to_owned(),
                up: false,
                ..NetLink::default()
            }),
        ),
        EventKind::BmcSel => (
            Source::Ipmi,
            None,
            EventData::BmcSel(SelEntry {
                record_id: 0x0042,
                sensor_type: "Critical Interrupt".to_owned(),
                sensor: "#0x90".to_owned(),
                description: "Bus Fatal Error".to_owned(),
                asserted: true,
            }),
        ),
        EventKind::BmcSensor => (
            Source::Ipmi,
            None,
            EventData::BmcSensor(Sensor {
                sensor: "GPU0 Temp".to_owned(),
                value: Some(95.0),
                unit: Some("degrees C".to_owned()),
                state: SensorState::Critical,
            }),
        ),
        EventKind::NodeHeartbeat => (
            Source::Agent,
            None,
            EventData::NodeHeartbeat(Heartbeat {
                agent_version: "0.1.0".to_owned(),
                driver_version: Some("570.86.15".to_owned()),
                boot_id: "3f1c2a9e-6b0d-4c55-a0a4-9e1b7d2c8f10".to_owned(),
                uptime_s: 86_400,
                gpu_count: Some(8),
            }),
        ),
        EventKind::NodeCondition => (
            Source::K8s,
            None,
            EventData::NodeCondition(NodeCondition {
                condition: "Ready".to_owned(),
                status: ConditionStatus::False,
                reason: Some("KubeletNotReady".to_owned()),
                message: None,
            }),
        ),
        EventKind::NodeMaintenance => (
            Source::Other("maintenance-calendar".to_owned()),
            None,
            EventData::NodeMaintenance(Maintenance {
                state: WindowEdge::Start,
                until: Some(EXAMPLE_TIME.add_nanos(3_600_000_000_000)),
                reason: Some("BIOS update".to_owned()),
            }),
        ),
        EventKind::JobStarted => (
            Source::Slurm,
            None,
            EventData::JobStarted(JobStarted {
                job: "4242".to_owned(),
                rank: Some(136),
                ranks: Some(1024),
                owner: Some("alice".to_owned()),
            }),
        ),
        EventKind::JobFinished => (
            Source::Slurm,
            None,
            EventData::JobFinished(JobFinished {
                job: "4242".to_owned(),
                outcome: JobOutcome::Failed,
                exit_code: Some(134),
                rank: Some(136),
            }),
        ),
        EventKind::JobNcclTimeout => (
            Source::Job,
            None,
            EventData::JobNcclTimeout(NcclTimeout {
                job: "4242".to_owned(),
                rank: 136,
                collective: Some("AllReduce".to_owned()),
                timeout_s: Some(600.0),
            }),
        ),
        EventKind::JobStep => (
            Source::Job,
            None,
            EventData::JobStep(JobStep {
                job: "4242".to_owned(),
                rank: 136,
                step: 18_250,
                step_time_s: 1.82,
                traffic_bytes: Some(52_428_800_000),
            }),
        ),
        EventKind::FacilityPdu => (
            Source::Facility,
            None,
            EventData::FacilityPdu(PduReading {
                racks: vec!["r3".to_owned()],
                scope: PduScope::Outlet,
                index: Some(5),
                name: Some("n17-psu1".to_owned()),
                current_a: Some(13.4),
                voltage_v: Some(230.0),
                power_w: Some(3010.0),
                energy_kwh: Some(18_250.3),
                energy_delta_kwh: Some(0.8),
                rating_a: Some(16.0),
                load: Some(LoadState::NearOverload),
                state: Some(OutletState::On),
                temperature_c: None,
                humidity_pct: None,
            }),
        ),
        EventKind::FacilityUps => (
            Source::Facility,
            None,
            EventData::FacilityUps(UpsReading {
                racks: ["r1", "r2", "r3", "r4"].map(str::to_owned).to_vec(),
                source: UpsSource::Battery,
                battery: Some(BatteryStatus::Normal),
                charge_pct: Some(96.0),
                runtime_s: Some(720.0),
                on_battery_s: Some(14.0),
                load_pct: Some(61.0),
                input_voltage_v: Some(0.0),
                output_voltage_v: Some(230.0),
                output_power_w: Some(182_000.0),
                temperature_c: Some(24.0),
                alarms: vec!["on_battery".to_owned(), "input_bad".to_owned()],
            }),
        ),
        EventKind::FacilityCooling => (
            Source::Facility,
            None,
            EventData::FacilityCooling(CoolingReading {
                racks: ["r1", "r2", "r3", "r4"].map(str::to_owned).to_vec(),
                unit: CoolingUnit::Cdu,
                loop_name: Some("L2".to_owned()),
                supply_c: Some(43.5),
                return_c: Some(55.2),
                delta_t_c: Some(11.7),
                flow_lpm: Some(410.0),
                pressure_kpa: Some(120.0),
                setpoint_c: Some(42.0),
                pump_on: Some(true),
                fan_on: None,
                alarms: Vec::new(),
            }),
        ),
        EventKind::FacilityLeak => (
            Source::Facility,
            None,
            EventData::FacilityLeak(LeakReading {
                racks: vec!["r3".to_owned()],
                detector: "rope-r3-tray".to_owned(),
                leak: true,
                zone: Some("row-b".to_owned()),
            }),
        ),
        EventKind::FacilityDevice => (
            Source::Facility,
            None,
            EventData::FacilityDevice(DeviceReachability {
                racks: vec!["r3".to_owned()],
                up: false,
                protocol: FacilityProtocol::Snmp,
                profile: Some("apc-rpdu2".to_owned()),
                failures: 3,
                error: Some("snmp timeout after 2s".to_owned()),
            }),
        ),
    };
    let mut labels = BTreeMap::new();
    if kind.as_str().starts_with("job.") {
        labels.insert("cluster".to_owned(), "west-1".to_owned());
    }
    // A facility event is about its device, named like the inventory's
    // `[[facility]]` entry.
    let subject = match kind {
        EventKind::FacilityPdu | EventKind::FacilityDevice => "pdu-r3a",
        EventKind::FacilityUps => "ups-1",
        EventKind::FacilityCooling => "cdu-l2",
        EventKind::FacilityLeak => "leak-r3",
        _ => "n17",
    };
    Event {
        id: format!("{}-{subject}-{}", source.as_str(), kind.as_str()),
        node: subject.to_owned(),
        time: EXAMPLE_TIME,
        source,
        gpu,
        count: 1,
        labels,
        data,
    }
}

/// Every example event, one per kind.
pub fn all_events() -> Vec<Event> {
    EventKind::ALL.iter().map(|&k| event(k)).collect()
}

/// An example incident (scenario 1 of the fault reference).
pub fn incident() -> Incident {
    let rule = "gpu-fallen-off-bus";
    let first = "nvml-n17-gpu.xid";
    let mut params = BTreeMap::new();
    params.insert("gpu".to_owned(), serde_json::Value::from(3));
    Incident {
        v: V1,
        id: Incident::make_id(rule, "n17", first),
        status: IncidentStatus::Open,
        rule: rule.to_owned(),
        key: "n17".to_owned(),
        severity: Severity::Critical,
        blame: Target::node("n17"),
        summary: "GPU 3 (0000:2b:00.0) on n17 fell off the bus (Xid 79)".to_owned(),
        opened_at: EXAMPLE_TIME,
        at: EXAMPLE_TIME,
        events: vec![first.to_owned(), "kmsg-n17-pcie.aer".to_owned()],
        event_count: 2,
        plan: Some(PlanRequest {
            plan: "reboot-node".to_owned(),
            params,
        }),
        parent: None,
        labels: BTreeMap::new(),
    }
}

/// An example action request for [`incident`].
pub fn action() -> ActionRequest {
    let inc = incident();
    let target = Target::node("n17");
    ActionRequest {
        v: V1,
        id: ActionRequest::make_id(&inc.id, &target, "reboot-node", 0),
        incident: inc.id,
        rule: Some(inc.rule),
        target,
        plan: "reboot-node".to_owned(),
        params: inc.plan.map(|p| p.params).unwrap_or_default(),
        requested_at: EXAMPLE_TIME,
        reason: inc.summary,
        events: inc.events,
        dry_run: false,
    }
}

/// An example audit record: the governor refused a power cycle.
pub fn audit() -> AuditRecord {
    let act = action();
    AuditRecord {
        v: V1,
        id: deterministic_id("aud", &[&act.id, "refused", "power_cycle"]),
        at: EXAMPLE_TIME,
        target: act.target,
        actor: "remediate@ctl-1".to_owned(),
        action: Some(act.id),
        incident: Some(act.incident),
        events: act.events,
        plan: Some(act.plan),
        entry: AuditEntry::Refused {
            step: "power_cycle".to_owned(),
            reason: "rack r3 budget: 2 of 2 nodes out of service".to_owned(),
        },
    }
}

/// An example state record: a power cycle's intent is written.
pub fn state() -> RemediationState {
    let act = action();
    RemediationState {
        v: V1,
        target: act.target,
        phase: Phase::InProgress,
        action: Some(act.id.clone()),
        plan: Some(act.plan),
        step: 3,
        intent: Some(Intent {
            step: "power_cycle".to_owned(),
            action: act.id.clone(),
            written_at: EXAMPLE_TIME,
        }),
        owned: Owned {
            k8s_cordon: true,
            k8s_taint: true,
            slurm_drain: true,
        },
        attempts: vec![EXAMPLE_TIME],
        cooldown_until: None,
        handled: vec![act.id.clone()],
        request: Some(action()),
        queued: Vec::new(),
        approval_expires_at: None,
        open_pages: Vec::new(),
        verify_since: None,
        breaker: None,
        updated_at: EXAMPLE_TIME,
    }
}
