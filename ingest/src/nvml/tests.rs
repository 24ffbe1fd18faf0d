use std::cell::RefCell;

use pitcrew_contract::{EventKind, NvlinkCounter, PciAddress, Timestamp};

use super::*;

/// A scripted GPU box: each `sample` call returns the next scripted
/// reading for that GPU.
struct FakeGpus {
    script: RefCell<Vec<Vec<Result<GpuSample, NvmlError>>>>,
}

impl FakeGpus {
    fn new(per_gpu: Vec<Vec<Result<GpuSample, NvmlError>>>) -> Self {
        FakeGpus {
            script: RefCell::new(
                per_gpu
                    .into_iter()
                    .map(|mut v| {
                        v.reverse();
                        v
                    })
                    .collect(),
            ),
        }
    }
}

impl Gpus for FakeGpus {
    fn driver_version(&self) -> Result<String, NvmlError> {
        Ok("580.159.04".to_owned())
    }
    fn count(&self) -> Result<u32, NvmlError> {
        Ok(self.script.borrow().len() as u32)
    }
    fn sample(&self, index: u32) -> Result<GpuSample, NvmlError> {
        self.script.borrow_mut()[index as usize]
            .pop()
            .unwrap_or(Err(NvmlError::Query {
                what: "script".to_owned(),
                message: "exhausted".to_owned(),
            }))
    }
}

fn h100(index: u32) -> GpuSample {
    GpuSample {
        index,
        uuid: format!("GPU-{index:08}"),
        pci: Some(PciAddress::parse(&format!("00000000:{:02X}:00.0", 0x18 + index)).unwrap()),
        ecc_volatile: Some(EccCounts {
            corrected: 0,
            uncorrected: 0,
        }),
        ecc_aggregate: Some(EccCounts {
            corrected: 4,
            uncorrected: 0,
        }),
        remapped_rows: Some(RemappedRows::default()),
        retired_pages: None,
        pcie_replay: Some(0),
        gpu_temp_c: Some(37.0),
        memory_temp_c: Some(38.0),
        power_w: Some(124.7),
        clock_event_reasons: Some(0x1),
        nvlink: vec![(0, NvlinkCounter::CrcFlit, 10)],
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_795_530_000_000 + s * 1000)
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(Event::kind).collect()
}

#[test]
fn a_quiet_gpu_gives_only_its_periodic_sample() {
    let gpus = FakeGpus::new(vec![vec![Ok(h100(0)), Ok(h100(0))]]);
    let mut src = NvmlSource::new("n17", "boot-1");
    let (first, errors) = src.sample(&gpus, t(0));
    assert!(errors.is_empty());
    assert_eq!(kinds(&first), [EventKind::GpuThermal]);
    let thermal = &first[0];
    assert_eq!(
        thermal.gpu.as_ref().unwrap().pci.unwrap().to_string(),
        "0000:18:00.0"
    );
    assert_eq!(
        thermal.gpu.as_ref().unwrap().uuid.as_deref(),
        Some("GPU-00000000")
    );
    let (second, _) = src.sample(&gpus, t(1));
    assert_eq!(kinds(&second), [EventKind::GpuThermal]);
    assert_ne!(
        first[0].id, second[0].id,
        "periodic samples are distinct observations"
    );
}

#[test]
fn counters_become_deltas_and_a_reset_is_not_negative() {
    let mut rising = h100(0);
    rising.ecc_volatile = Some(EccCounts {
        corrected: 12,
        uncorrected: 1,
    });
    rising.pcie_replay = Some(20);
    rising.nvlink = vec![(0, NvlinkCounter::CrcFlit, 130)];
    let mut after_reload = rising.clone();
    after_reload.ecc_volatile = Some(EccCounts {
        corrected: 0,
        uncorrected: 0,
    });
    after_reload.pcie_replay = Some(2);
    let gpus = FakeGpus::new(vec![vec![Ok(h100(0)), Ok(rising), Ok(after_reload)]]);
    let mut src = NvmlSource::new("n17", "boot-1");
    src.sample(&gpus, t(0));

    let (ev, _) = src.sample(&gpus, t(1));
    assert_eq!(
        kinds(&ev),
        [
            EventKind::GpuThermal,
            EventKind::GpuEcc,
            EventKind::GpuPcieReplay,
            EventKind::GpuNvlink
        ]
    );
    match &ev[1].data {
        EventData::GpuEcc(e) => {
            assert_eq!(
                (e.counter, e.corrected_delta, e.uncorrected_delta),
                (EccCounter::Volatile, 12, 1)
            );
        }
        other => panic!("{other:?}"),
    }
    match &ev[2].data {
        EventData::GpuPcieReplay(r) => assert_eq!((r.delta, r.total, r.reset), (20, 20, false)),
        other => panic!("{other:?}"),
    }
    match &ev[3].data {
        EventData::GpuNvlink(n) => assert_eq!((n.link, n.delta, n.total), (0, 120, 130)),
        other => panic!("{other:?}"),
    }

    let (ev, _) = src.sample(&gpus, t(2));
    let ecc = ev.iter().find(|e| e.kind() == EventKind::GpuEcc).unwrap();
    match &ecc.data {
        EventData::GpuEcc(e) => assert_eq!((e.corrected_delta, e.uncorrected_delta), (0, 0)),
        other => panic!("{other:?}"),
    }
    let replay = ev
        .iter()
        .find(|e| e.kind() == EventKind::GpuPcieReplay)
        .unwrap();
    match &replay.data {
        EventData::GpuPcieReplay(r) => assert_eq!((r.delta, r.total, r.reset), (0, 2, true)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_remap_state_changes_are_events() {
    let mut pending = h100(0);
    pending.remapped_rows = Some(RemappedRows {
        correctable: 0,
        uncorrectable: 1,
        pending: true,
        failure: false,
    });
    let mut failed = pending.clone();
    failed.remapped_rows = Some(RemappedRows {
        correctable: 0,
        uncorrectable: 1,
        pending: false,
        failure: true,
    });
    let gpus = FakeGpus::new(vec![vec![
        Ok(h100(0)),
        Ok(pending.clone()),
        Ok(pending),
        Ok(failed),
    ]]);
    let mut src = NvmlSource::new("n17", "boot-1");
    src.sample(&gpus, t(0));
    let (ev, _) = src.sample(&gpus, t(1));
    let remap: Vec<&Event> = ev
        .iter()
        .filter(|e| e.kind() == EventKind::GpuRowRemap)
        .collect();
    assert_eq!(remap.len(), 1);
    match &remap[0].data {
        EventData::GpuRowRemap(r) => assert_eq!(
            (r.uncorrectable_delta, r.pending, r.failure),
            (1, true, false)
        ),
        other => panic!("{other:?}"),
    }
    let (ev, _) = src.sample(&gpus, t(2));
    assert!(
        !kinds(&ev).contains(&EventKind::GpuRowRemap),
        "unchanged state is not news"
    );
    let (ev, _) = src.sample(&gpus, t(3));
    let remap = ev
        .iter()
        .find(|e| e.kind() == EventKind::GpuRowRemap)
        .unwrap();
    match &remap.data {
        EventData::GpuRowRemap(r) => assert_eq!(
            (r.uncorrectable_delta, r.pending, r.failure),
            (0, false, true)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_gpu_is_reported_once_and_named_by_its_last_identity() {
    let gpus = FakeGpus::new(vec![
        vec![Ok(h100(0)), Ok(h100(0)), Ok(h100(0))],
        vec![
            Ok(h100(1)),
            Err(NvmlError::GpuLost { index: 1 }),
            Err(NvmlError::GpuLost { index: 1 }),
        ],
    ]);
    let mut src = NvmlSource::new("n17", "boot-1");
    src.sample(&gpus, t(0));
    let (ev, _) = src.sample(&gpus, t(1));
    let lost: Vec<&Event> = ev
        .iter()
        .filter(|e| e.kind() == EventKind::GpuLost)
        .collect();
    assert_eq!(lost.len(), 1);
    let gpu = lost[0].gpu.as_ref().unwrap();
    assert_eq!(gpu.uuid.as_deref(), Some("GPU-00000001"));
    assert_eq!(gpu.pci.unwrap().to_string(), "0000:19:00.0");
    let (ev, _) = src.sample(&gpus, t(2));
    assert!(!kinds(&ev).contains(&EventKind::GpuLost));
    assert_eq!(
        kinds(&ev),
        [EventKind::GpuThermal],
        "gpu 0 goes on being sampled"
    );
}

#[test]
fn query_errors_are_returned_and_do_not_stop_other_gpus() {
    let gpus = FakeGpus::new(vec![
        vec![Err(NvmlError::Query {
            what: "gpu 0 ecc".to_owned(),
            message: "Unknown".to_owned(),
        })],
        vec![Ok(h100(1))],
    ]);
    let mut src = NvmlSource::new("n17", "boot-1");
    let (ev, errors) = src.sample(&gpus, t(0));
    assert_eq!(kinds(&ev), [EventKind::GpuThermal]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].is_retryable());
}

#[test]
fn ids_are_stable_across_restarts_of_the_agent() {
    let mut rising = h100(0);
    rising.ecc_aggregate = Some(EccCounts {
        corrected: 9,
        uncorrected: 0,
    });
    let run = || {
        let gpus = FakeGpus::new(vec![vec![Ok(h100(0)), Ok(rising.clone())]]);
        let mut src = NvmlSource::new("n17", "boot-1");
        src.sample(&gpus, t(0));
        src.sample(&gpus, t(5)).0
    };
    let a = run();
    let b = run();
    assert_eq!(
        a.iter().map(|e| &e.id).collect::<Vec<_>>(),
        b.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
}

#[test]
fn every_event_encodes_and_decodes() {
    let mut busy = h100(0);
    busy.ecc_volatile = Some(EccCounts {
        corrected: 3,
        uncorrected: 0,
    });
    let gpus = FakeGpus::new(vec![vec![Ok(h100(0)), Ok(busy)]]);
    let mut src = NvmlSource::new("n17", "boot-1");
    let mut all = src.sample(&gpus, t(0)).0;
    all.extend(src.sample(&gpus, t(1)).0);
    all.push(src.xid_event(&XidReport {
        index: Some(0),
        uuid: Some("GPU-00000000".to_owned()),
        pci: PciAddress::parse("0000:18:00.0").ok(),
        code: 79,
        at: t(2),
    }));
    for ev in all {
        let back: Event = pitcrew_contract::decode(&pitcrew_contract::encode(&ev)).unwrap();
        assert_eq!(back, ev);
    }
}

#[test]
fn kernel_log_gpus_are_enriched_with_index_and_uuid() {
    let gpus = FakeGpus::new(vec![vec![Ok(h100(0))], vec![Ok(h100(1))]]);
    let mut src = NvmlSource::new("n17", "boot-1");
    src.sample(&gpus, t(0));
    let mut from_kmsg = GpuRef {
        index: None,
        uuid: None,
        pci: PciAddress::parse("0000:19:00").ok(),
    };
    src.enrich(&mut from_kmsg);
    assert_eq!(from_kmsg.index, Some(1));
    assert_eq!(from_kmsg.uuid.as_deref(), Some("GPU-00000001"));
    let mut unknown = GpuRef {
        index: None,
        uuid: None,
        pci: PciAddress::parse("0000:99:00").ok(),
    };
    src.enrich(&mut unknown);
    assert_eq!(unknown.index, None);
}
