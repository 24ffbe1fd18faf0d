use pitcrew_contract::{
    AerSeverity, EventData, EventKind, MemoryErrorSeverity, PcieLayer, ThermalScope, ThermalState,
};

use super::*;

const BOOT: Timestamp = Timestamp::from_unix_millis(1_795_528_000_000);
const NOW: Timestamp = Timestamp::from_unix_millis(1_795_530_000_000);

fn run(text: &str) -> Vec<Event> {
    let mut src = KmsgSource::new("n17", "boot-1", Some(BOOT));
    let mut out = Vec::new();
    for line in text.lines() {
        src.push(line, NOW, &mut out);
    }
    src.flush(NOW, &mut out);
    out
}

fn aers(events: &[Event]) -> Vec<&pitcrew_contract::Aer> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::PcieAer(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn corrected_aer_in_the_old_spelling_is_one_event_per_record() {
    let ev = run(include_str!(
        "../../testdata/kmsg/aer-corrected-old-spelling.log"
    ));
    let a = aers(&ev);
    // Two records with their details, then the port's announcement of a
    // third whose details the quote cut off: a header-only record.
    assert_eq!(ev.len(), 3, "{ev:#?}");
    assert_eq!(a.len(), 3);
    let last = a[2];
    assert_eq!(
        last.device.to_string(),
        "0000:00:1d.0",
        "id=00e8 is 00:1d.0"
    );
    assert_eq!(last.severity, AerSeverity::Corrected);
    assert_eq!((last.layer, last.vendor_device.as_ref()), (None, None));
    for r in &a[..2] {
        assert_eq!(r.device.to_string(), "0000:00:1d.0");
        assert_eq!(r.severity, AerSeverity::Corrected);
        assert_eq!(r.layer, Some(PcieLayer::Physical));
        assert_eq!(r.agent.as_deref(), Some("Receiver ID"));
        assert_eq!(r.vendor_device.as_deref(), Some("8086:a29a"));
        assert_eq!((r.status, r.mask), (Some(1), Some(0x2000)));
        assert_eq!(r.errors, ["RxErr"], "long name normalised");
    }
    // Monotonic stamp placed on the wall clock from boot time.
    assert_eq!(ev[0].time, BOOT.add_nanos(3_499_123_000));
}

#[test]
fn interleaved_records_of_two_devices_stay_apart() {
    let ev = run(include_str!(
        "../../testdata/kmsg/aer-corrected-new-prefix-interleaved.log"
    ));
    let a = aers(&ev);
    assert_eq!(a.len(), 3, "{a:#?}");
    let by_dev = |d: &str| a.iter().filter(|r| r.device.to_string() == d).count();
    assert_eq!(by_dev("0000:00:1d.0"), 2);
    assert_eq!(by_dev("0000:03:00.0"), 1);
    let nvme = a
        .iter()
        .find(|r| r.device.to_string() == "0000:03:00.0")
        .unwrap();
    assert_eq!(nvme.vendor_device.as_deref(), Some("144d:a808"));
    assert_eq!(nvme.mask, Some(0xe000));
    assert_eq!(nvme.errors, ["RxErr"]);
    for r in &a {
        assert_eq!(r.errors.len(), 1, "no bits leak between devices: {r:?}");
    }
}

#[test]
fn uncorrected_non_fatal_with_first_error() {
    let ev = run(include_str!(
        "../../testdata/kmsg/aer-uncorrected-nonfatal.log"
    ));
    let a = aers(&ev);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(a[0].severity, AerSeverity::UncorrectedNonFatal);
    assert_eq!(a[0].layer, Some(PcieLayer::Transaction));
    assert_eq!(a[0].agent.as_deref(), Some("Requester ID"));
    assert_eq!(a[0].errors, ["CmpltTO", "MalfTLP"]);
    assert_eq!(a[0].first.as_deref(), Some("MalfTLP"));
    assert_eq!(a[0].status, Some(0x0004_4000));
}

#[test]
fn data_link_layer_timeout() {
    let ev = run(include_str!(
        "../../testdata/kmsg/aer-data-link-timeout.log"
    ));
    let a = aers(&ev);
    // The announced record with its details, then one announced only.
    assert_eq!(a.len(), 2);
    assert!(a[1].errors.is_empty() && a[1].layer.is_none());
    assert_eq!(ev[1].time, BOOT.add_nanos(51_871_339_000));
    assert_eq!(a[0].layer, Some(PcieLayer::DataLink));
    assert_eq!(a[0].agent.as_deref(), Some("Transmitter ID"));
    assert_eq!(a[0].errors, ["Timeout"]);
}

#[test]
fn scenario_one_gpu_off_the_bus_with_fatal_aer_dpc_and_link_down() {
    let ev = run(include_str!(
        "../../testdata/kmsg/gpu-off-the-bus-fatal.log"
    ));
    let kinds: Vec<EventKind> = ev.iter().map(Event::kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::GpuXid,
            EventKind::PcieAer,
            EventKind::PcieLinkDown,
            EventKind::PcieDpc,
            EventKind::GpuXid
        ],
        "{ev:#?}"
    );
    match &ev[0].data {
        EventData::GpuXid(x) => {
            assert_eq!(
                (x.code, x.pid, x.process.as_deref()),
                (79, Some(2211), Some("python"))
            );
            assert_eq!(x.message.as_deref(), Some("GPU has fallen off the bus."));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ev[0].gpu.as_ref().unwrap().pci.unwrap().to_string(),
        "0000:2b:00.0"
    );
    let aer = aers(&ev)[0];
    assert_eq!(aer.severity, AerSeverity::UncorrectedFatal, "new spelling");
    assert_eq!(aer.errors, ["SDES", "CmpltTO"]);
    assert_eq!(aer.first.as_deref(), Some("SDES"));
    match &ev[2].data {
        EventData::PcieLinkDown(l) => assert_eq!(l.slot.as_deref(), Some("400")),
        other => panic!("{other:?}"),
    }
    match &ev[3].data {
        EventData::PcieDpc(d) => {
            assert_eq!(d.port.to_string(), "0000:00:1c.4");
            assert_eq!(d.source.unwrap().to_string(), "0000:2b:00.0");
        }
        other => panic!("{other:?}"),
    }
    // kmsg sequence numbers give stable ids and monotonic time.
    assert_eq!(ev[0].time, BOOT.add_nanos(1_843_300_001_000));
    let again = run(include_str!(
        "../../testdata/kmsg/gpu-off-the-bus-fatal.log"
    ));
    assert_eq!(
        ev.iter().map(|e| &e.id).collect::<Vec<_>>(),
        again.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
}

#[test]
fn nvrm_xids_in_both_tag_forms_and_154_values() {
    let ev = run(include_str!("../../testdata/kmsg/nvrm.log"));
    let xids: Vec<&pitcrew_contract::Xid> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::GpuXid(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(
        xids.iter().map(|x| x.code).collect::<Vec<_>>(),
        [13, 109, 79, 63, 154, 154]
    );
    assert_eq!((xids[0].pid, xids[0].process.as_deref()), (None, None));
    assert_eq!(
        (xids[1].pid, xids[1].process.as_deref()),
        (Some(1_797_828), Some("pt_main_thread"))
    );
    assert_eq!(
        xids[2].message.as_deref(),
        Some("GPU has fallen off the bus")
    );
    let r1 = xids[4].recovery_action.as_ref().unwrap();
    assert_eq!((r1.previous, r1.action), (Some(0), 1));
    let r2 = xids[5].recovery_action.as_ref().unwrap();
    assert_eq!((r2.previous, r2.action), (Some(1), 2));
    let pcis: Vec<String> = ev
        .iter()
        .filter(|e| e.kind() == EventKind::GpuXid)
        .map(|e| e.gpu.as_ref().unwrap().pci.unwrap().to_string())
        .collect();
    assert_eq!(
        pcis,
        [
            "0000:cb:00.0",
            "0000:cb:00.0",
            "0000:44:00.0",
            "0000:10:1c.0",
            "0000:01:00.0",
            "0000:01:00.0"
        ]
    );

    let sxid = ev
        .iter()
        .find(|e| e.kind() == EventKind::NvswitchSxid)
        .unwrap();
    match &sxid.data {
        EventData::NvswitchSxid(s) => {
            assert_eq!(
                (s.switch.as_str(), s.code, s.fatal, s.link),
                ("nvidia-nvswitch3", 12028, false, Some(32))
            );
            assert_eq!(s.pci.to_string(), "0000:05:00.0");
        }
        other => panic!("{other:?}"),
    }
    let lost: Vec<&Event> = ev
        .iter()
        .filter(|e| e.kind() == EventKind::GpuLost)
        .collect();
    assert_eq!(lost.len(), 1, "the three-line notice is one event");
    assert_eq!(
        lost[0].gpu.as_ref().unwrap().pci.unwrap().to_string(),
        "0000:b3:00.0"
    );
    assert_eq!(ev.len(), 8);
}

#[test]
fn host_memory_mce_and_thermal() {
    let ev = run(include_str!("../../testdata/kmsg/host.log"));
    let kinds: Vec<EventKind> = ev.iter().map(Event::kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::HostEdac,
            EventKind::HostEdac,
            EventKind::HostMce,
            EventKind::HostMce,
            EventKind::HostThermal,
            EventKind::HostThermal,
            EventKind::HostThermal,
            EventKind::HostThermal
        ]
    );
    match (&ev[0].data, &ev[1].data) {
        (EventData::HostEdac(ce), EventData::HostEdac(ue)) => {
            assert_eq!(
                (ce.controller, ce.severity, ce.count),
                (3, MemoryErrorSeverity::Ce, 1)
            );
            assert_eq!(ce.location.as_deref(), Some("CPU_SrcID#0_Channel#0_DIMM#0"));
            assert_eq!((ue.controller, ue.severity), (0, MemoryErrorSeverity::Ue));
        }
        other => panic!("{other:?}"),
    }
    match &ev[3].data {
        EventData::HostMce(m) => assert_eq!((m.cpu, m.bank), (Some(2), Some(7))),
        other => panic!("{other:?}"),
    }
    let thermal: Vec<(ThermalScope, ThermalState, Option<u64>)> = ev[4..]
        .iter()
        .map(|e| match &e.data {
            EventData::HostThermal(t) => (t.scope, t.state, t.total_events),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        thermal,
        [
            (ThermalScope::Core, ThermalState::Throttled, Some(12)),
            (ThermalScope::Package, ThermalState::Throttled, Some(13)),
            (ThermalScope::Core, ThermalState::Normal, None),
            (ThermalScope::Package, ThermalState::Normal, None),
        ]
    );
}

#[test]
fn look_alike_lines_produce_no_fault() {
    for corpus in [
        include_str!("../../testdata/kmsg/lookalikes.log"),
        include_str!("../../testdata/kmsg/h100-vm-boot-nvrm-lookalikes.txt"),
    ] {
        let ev = run(corpus);
        assert!(ev.is_empty(), "{ev:#?}");
    }
}

#[test]
fn every_event_is_valid_on_the_wire() {
    let mut all = Vec::new();
    for corpus in [
        include_str!("../../testdata/kmsg/aer-corrected-old-spelling.log"),
        include_str!("../../testdata/kmsg/aer-corrected-new-prefix-interleaved.log"),
        include_str!("../../testdata/kmsg/aer-uncorrected-nonfatal.log"),
        include_str!("../../testdata/kmsg/gpu-off-the-bus-fatal.log"),
        include_str!("../../testdata/kmsg/nvrm.log"),
        include_str!("../../testdata/kmsg/host.log"),
    ] {
        all.extend(run(corpus));
    }
    for ev in all {
        let back: Event = pitcrew_contract::decode(&pitcrew_contract::encode(&ev)).unwrap();
        assert_eq!(back, ev);
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn on_arbitrary_lines(lines in proptest::collection::vec("\\PC{0,120}", 0..20)) {
            run(&lines.join("\n"));
        }

        #[test]
        fn on_mutated_corpus_lines(pos in 0usize..4000, byte in 0u8..128, cut in 0usize..200) {
            let corpus = include_str!("../../testdata/kmsg/gpu-off-the-bus-fatal.log");
            let mut bytes = corpus.as_bytes().to_vec();
            let p = pos % bytes.len();
            bytes[p] = byte;
            let text = String::from_utf8_lossy(&bytes);
            let end = text.len().saturating_sub(cut);
            let end = (0..=end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            run(&text[..end]);
        }
    }
}

#[test]
fn nic_and_bond_link_changes_in_every_driver_format() {
    let ev = run(include_str!("../../testdata/kmsg/net-link.log"));
    let links: Vec<(String, bool, Option<String>, Option<u32>)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetLink(l) => Some((
                l.interface.clone(),
                l.up,
                l.pci.map(|p| p.to_string()),
                l.speed_mbps,
            )),
            _ => None,
        })
        .collect();
    let pci = |s: &str| Some(s.to_owned());
    assert_eq!(
        links,
        vec![
            ("eth3".into(), true, pci("0000:81:00.1"), Some(10_000)),
            ("enp1s0f0".into(), false, pci("0000:01:00.0"), None),
            ("enp1s0f0".into(), true, pci("0000:01:00.0"), Some(10_000)),
            ("enp1s0f0np0".into(), false, pci("0000:01:00.0"), None),
            ("enp1s0f1np1".into(), false, pci("0000:01:00.1"), None),
            ("enp2s0f0".into(), false, pci("0000:02:00.0"), None),
            ("eth1".into(), false, None, None),
            ("eth1".into(), true, None, Some(40_000)),
            ("eth2".into(), false, None, None),
            ("eth2".into(), false, None, None),
            ("ens1f0np0".into(), true, pci("0000:3b:00.0"), None),
            ("ens801f0".into(), true, pci("0000:51:00.0"), Some(100_000)),
            ("eno1".into(), true, pci("0000:3d:00.0"), Some(40_000)),
            ("ens2f0np0".into(), true, pci("0000:41:00.0"), Some(100_000)),
            ("enp5s0".into(), true, pci("0000:05:00.0"), Some(2_500)),
            ("eth0".into(), true, None, Some(1_000)),
            ("eth1".into(), false, None, None),
            ("eth0".into(), true, None, Some(1_000)),
            ("ib0".into(), true, None, None),
            ("mlx5_5/1".into(), true, pci("0000:ab:00.0"), None),
            ("mlx5_5/1".into(), false, pci("0000:ab:00.0"), None),
        ]
    );
    // The look-alikes (a bond's "active interface up!", VLAN, bridge port,
    // SFP detection, mlx5 errors, "link is not ready") give nothing else.
    assert_eq!(ev.len(), links.len(), "{ev:#?}");
    assert!(ev.iter().all(|e| e.kind() == EventKind::NetLink));
}

#[test]
fn events_carry_the_lines_own_time_not_the_time_they_were_read() {
    let ev = run(
        "2026-11-20T08:15:02.250000+01:00 gpu-7 kernel: NVRM: Xid (PCI:0000:2b:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n\
         Nov 21 09:00:00 gpu-7 kernel: ixgbe 0000:01:00.0 eth0: NIC Link is Down\n\
         [Sat Nov 22 10:00:00 2026] e1000e: eth1 NIC Link is Down\n\
         ixgbe 0000:01:00.0 eth2: NIC Link is Down\n",
    );
    let times: Vec<i64> = ev.iter().map(|e| e.time.unix_millis()).collect();
    let at = |s: &str| Timestamp::parse_rfc3339(s).unwrap().unix_millis();
    assert_eq!(
        times,
        [
            at("2026-11-20T07:15:02.250Z"),
            at("2026-11-21T09:00:00Z"),
            at("2026-11-22T10:00:00Z"),
            // A bare line has no time of its own: when it was read.
            NOW.unix_millis(),
        ]
    );
}

#[test]
fn a_record_whose_details_never_come_is_an_event_from_its_header() {
    // 4.x: the source id is bus/devfn on the port's domain; the details
    // never come when the device cannot be found (or are rate-limited).
    let ev = run(" pcieport 0000:00:1c.0: AER: Corrected error received: id=00e0\n pcieport 0000:00:1c.0: can't find device of ID00e0\n");
    let a = aers(&ev);
    assert_eq!(a.len(), 1, "{ev:#?}");
    assert_eq!(a[0].device.to_string(), "0000:00:1c.0");
    assert_eq!(a[0].severity, AerSeverity::Corrected);
    // 6.16: "error message received from", details lost.
    let ev = run("pcieport 0002:00:01.0: AER: Uncorrectable (Fatal) error message received from 0002:03:00.0 (no details found)\n");
    let a = aers(&ev);
    assert_eq!(a.len(), 1, "{ev:#?}");
    assert_eq!(
        a[0].device.to_string(),
        "0002:03:00.0",
        "the source, not the port"
    );
    assert_eq!(a[0].severity, AerSeverity::UncorrectedFatal);
    // The details, when they come, complete the announced record.
    let ev = run("pcieport 0000:00:01.0: AER: Multiple Uncorrected (Non-Fatal) error received: 0000:01:00.0\nnvidia 0000:01:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Completer ID)\nnvidia 0000:01:00.0:   device [10de:2330] error status/mask=00004000/00000000\nnvidia 0000:01:00.0:    [14] CmpltTO                (First)\n");
    let a = aers(&ev);
    assert_eq!(a.len(), 1, "{ev:#?}");
    assert_eq!(a[0].vendor_device.as_deref(), Some("10de:2330"));
    assert_eq!(a[0].first.as_deref(), Some("CmpltTO"));
}

#[test]
fn firmware_first_aer_registers_are_a_record() {
    // APEI (pci_print_aer): registers, bits, layer and agent, and for an
    // uncorrectable error the severity register.
    let ev = run("pcieport 0000:80:03.0: aer_status: 0x00004000, aer_mask: 0x00000000\npcieport 0000:80:03.0:    [14] CmpltTO                (First)\npcieport 0000:80:03.0: aer_layer=Transaction Layer, aer_agent=Requester ID\npcieport 0000:80:03.0: aer_uncor_severity: 0x00062030\n");
    let a = aers(&ev);
    assert_eq!(a.len(), 1, "{ev:#?}");
    assert_eq!(
        a[0].severity,
        AerSeverity::UncorrectedNonFatal,
        "bit 14 is not in the severity mask"
    );
    assert_eq!(a[0].layer, Some(PcieLayer::Transaction));
    assert_eq!(a[0].agent.as_deref(), Some("Requester ID"));
    assert_eq!(a[0].status, Some(0x4000));
    let ev = run("pcieport 0000:00:02.0: aer_status: 0x00000001, aer_mask: 0x00002000\npcieport 0000:00:02.0:    [ 0] RxErr\npcieport 0000:00:02.0: aer_layer=Physical Layer, aer_agent=Receiver ID\n");
    assert_eq!(aers(&ev)[0].severity, AerSeverity::Corrected);
}

#[test]
fn dpc_in_every_kernels_words() {
    let dpcs = |ev: &[Event]| -> Vec<pitcrew_contract::Dpc> {
        ev.iter()
            .filter_map(|e| match &e.data {
                EventData::PcieDpc(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    };
    // 4.x service device, two lines, ERR_FATAL: the source is valid.
    let ev = run("dpc 0000:00:1d.0:pcie010: DPC containment event, status:0x1f05 source:0x0300\ndpc 0000:00:1d.0:pcie010: DPC ERR_FATAL detected\n");
    let d = dpcs(&ev);
    assert_eq!(d.len(), 1, "{ev:#?}");
    assert_eq!(d[0].reason.as_deref(), Some("ERR_FATAL"));
    assert_eq!(
        d[0].source.map(|s| s.to_string()).as_deref(),
        Some("0000:03:00.0")
    );
    // 5.x: the reason line alone completes it; a software trigger's
    // source register is not an error source.
    let ev = run("pcieport 0000:00:1d.0: DPC: containment event, status:0x1f21 source:0x0300\npcieport 0000:00:1d.0: DPC: software trigger detected\n");
    let d = dpcs(&ev);
    assert_eq!(
        (d[0].reason.as_deref(), d[0].source),
        (Some("software trigger"), None)
    );
    // Nothing follows: the event stands without a reason.
    let ev = run("pcieport 0000:00:1d.0: DPC: containment event, status:0x1f01 source:0x0000\n");
    assert_eq!(dpcs(&ev).len(), 1);
    // 6.16: one line.
    let ev = run("pcieport 0000:00:1d.0: DPC: containment event, status:0x0005, ERR_NONFATAL received from 0000:04:00.1\n");
    let d = dpcs(&ev);
    assert_eq!(d[0].reason.as_deref(), Some("ERR_NONFATAL"));
    assert_eq!(
        d[0].source.map(|s| s.to_string()).as_deref(),
        Some("0000:04:00.1")
    );
}

#[test]
fn xid_on_a_mig_instance_and_the_gpus_uuid() {
    let ev = run("NVRM: GPU at PCI:0000:07:00: GPU-0898a861-78ae-cdaf-4f1a-68992223505a\nNVRM: Xid (PCI:0000:07:00 GPU-I:05 GPU-CI:01): 43, pid=2211, name=python3, Ch 00000010\nNVRM: Xid (PCI:0000:08:00 GPU-I:02): 31, pid=10, name=x, Ch 00000001\n");
    assert_eq!(ev.len(), 2, "{ev:#?}");
    let EventData::GpuXid(x) = &ev[0].data else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (x.code, x.gpu_instance, x.compute_instance),
        (43, Some(5), Some(1))
    );
    let gpu = ev[0].gpu.as_ref().unwrap();
    assert_eq!(
        gpu.pci.map(|p| p.to_string()).as_deref(),
        Some("0000:07:00.0")
    );
    assert_eq!(
        gpu.uuid.as_deref(),
        Some("GPU-0898a861-78ae-cdaf-4f1a-68992223505a")
    );
    let EventData::GpuXid(x) = &ev[1].data else {
        panic!("{ev:?}")
    };
    assert_eq!((x.gpu_instance, x.compute_instance), (Some(2), None));
    assert_eq!(ev[1].gpu.as_ref().unwrap().uuid, None, "another GPU");
}

#[test]
fn host_lines_of_older_kernels_and_other_vendors() {
    let ev = run("<133>Mar 11 08:44:43 precision kernel: [765135.424096] mce: CPU6: Package temperature/speed normal\n[    2.119004] CPU1: Temperature above threshold, cpu clock throttled (total events = 1)\n[    2.119010] CPU0: Temperature/speed normal\n[Hardware Error]: CPU:2 (17:71:0) MC27_STATUS[-|CE|MiscV|-|-|-|SyndV|-|-|-]: 0x982000000002080b\nmce: Uncorrected hardware memory error in user-access at 3c7b1b040\nKernel panic - not syncing: Fatal machine check\n");
    let kinds: Vec<&str> = ev.iter().map(|e| e.data.kind().as_str()).collect();
    assert_eq!(
        kinds,
        [
            "host.thermal",
            "host.thermal",
            "host.thermal",
            "host.mce",
            "host.mce",
            "host.mce"
        ],
        "{ev:#?}"
    );
    let EventData::HostMce(m) = &ev[3].data else {
        panic!()
    };
    assert_eq!((m.cpu, m.bank), (Some(2), Some(27)));
    let EventData::HostThermal(t) = &ev[1].data else {
        panic!()
    };
    assert_eq!(
        (t.cpu, t.state, t.total_events),
        (1, ThermalState::Throttled, Some(1))
    );
}

#[test]
fn a_ghes_memory_record_is_one_memory_error() {
    let ev = run("{3}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 4\n{3}[Hardware Error]: event severity: recoverable\n{3}[Hardware Error]:  Error 0, type: recoverable\n{3}[Hardware Error]:   section_type: memory error\n{3}[Hardware Error]:   node: 1 card: 4 module: 0 rank: 0 bank: 1 device: 14 row: 58165 column: 816\n{3}[Hardware Error]:   error_type: 3, multi-bit ECC\n{3}[Hardware Error]:   DIMM location: CPU 2 DIMM 30\nEDAC skx MC0: HANDLING MCE MEMORY ERROR\n");
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let EventData::HostEdac(e) = &ev[0].data else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (e.controller, e.severity, e.count),
        (1, MemoryErrorSeverity::Ue, 1)
    );
    assert_eq!(e.location.as_deref(), Some("CPU 2 DIMM 30"));
}

#[test]
fn prefixes_of_dmesg_x_printk_caller_and_rfc5424() {
    for raw in [
        "kern  :err   : 2025-01-25T10:34:54,859532+00:00 nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Fatal, Link 32 egress non-posted PRIV error",
        "[   36.1][  T291] nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Fatal, Link 32 egress non-posted PRIV error",
        "<3>1 2025-01-25T10:34:54.859Z gpu-7 kernel - - - nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Fatal, Link 32 egress non-posted PRIV error",
    ] {
        let ev = run(raw);
        assert_eq!(ev.len(), 1, "{raw}: {ev:#?}");
        let EventData::NvswitchSxid(x) = &ev[0].data else { panic!() };
        assert!(x.fatal && x.link == Some(32), "{raw}");
    }
}

#[test]
fn open_records_stay_bounded_on_garbage() {
    let mut p = Parser::new();
    let mut out = Vec::new();
    for i in 0..2000u32 {
        let line = format!(
            "pcieport {:04x}:{:02x}:00.0: DPC: containment event, status:0x1f01 source:0x0000",
            i >> 8,
            i & 0xff
        );
        p.push(&line, &mut out);
        assert!(p.open_records() <= 256, "{}", p.open_records());
    }
    p.flush(&mut out);
    assert_eq!(out.len(), 2000, "every containment event comes out once");
}
