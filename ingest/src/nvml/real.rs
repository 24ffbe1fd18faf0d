//! The real NVML, through nvml-wrapper (libnvidia-ml loaded at run time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter as WEcc, MemoryError, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError as W;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::Nvml;
use pitcrew_contract::{NvlinkCounter, PciAddress, Timestamp};

use super::{EccCounts, GpuSample, Gpus, NvmlError, RemappedRows, RetiredPageCounts};

// NVML field ids (nvml.h).
const FI_DEV_MEMORY_TEMP: u32 = 82;
const FI_DEV_REMAPPED_COR: u32 = 142;
const FI_DEV_REMAPPED_UNC: u32 = 143;
const FI_DEV_REMAPPED_PENDING: u32 = 144;
const FI_DEV_REMAPPED_FAILURE: u32 = 145;
/// NVML_NVLINK_MAX_LINKS on current drivers.
const MAX_NVLINKS: u32 = 18;

/// The machine's GPUs through libnvidia-ml.
pub struct NvmlGpus {
    nvml: Arc<Nvml>,
}

impl std::fmt::Debug for NvmlGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlGpus").finish_non_exhaustive()
    }
}

impl NvmlGpus {
    /// Loads and initialises NVML; [`NvmlError::Absent`] when this machine
    /// has no NVIDIA driver.
    pub fn load() -> Result<NvmlGpus, NvmlError> {
        Nvml::init()
            .map(|nvml| NvmlGpus {
                nvml: Arc::new(nvml),
            })
            .map_err(|e| NvmlError::Absent(e.to_string()))
    }

    /// A shared handle, for the Xid watcher thread.
    pub fn handle(&self) -> Arc<Nvml> {
        Arc::clone(&self.nvml)
    }
}

/// Unsupported queries are absent readings, not errors.
fn opt<T>(index: u32, what: &str, r: Result<T, W>) -> Result<Option<T>, NvmlError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(
            W::NotSupported
            | W::NoPermission
            | W::FunctionNotFound
            | W::FailedToLoadSymbol(_)
            | W::InvalidArg
            | W::NoData
            | W::NotFound,
        ) => Ok(None),
        Err(W::GpuLost) => Err(NvmlError::GpuLost { index }),
        Err(e) => Err(NvmlError::Query {
            what: format!("gpu {index} {what}"),
            message: e.to_string(),
        }),
    }
}

fn value_u64(v: &SampleValue) -> Option<u64> {
    match *v {
        SampleValue::U32(x) => Some(u64::from(x)),
        SampleValue::U64(x) => Some(x),
        SampleValue::I64(x) => u64::try_from(x).ok(),
        SampleValue::F64(x) if x >= 0.0 => Some(x as u64),
        SampleValue::F64(_) => None,
    }
}

impl Gpus for NvmlGpus {
    fn driver_version(&self) -> Result<String, NvmlError> {
        self.nvml
            .sys_driver_version()
            .map_err(|e| NvmlError::Query {
                what: "driver version".to_owned(),
                message: e.to_string(),
            })
    }

    fn count(&self) -> Result<u32, NvmlError> {
        self.nvml.device_count().map_err(|e| NvmlError::Query {
            what: "device count".to_owned(),
            message: e.to_string(),
        })
    }

    fn sample(&self, index: u32) -> Result<GpuSample, NvmlError> {
        let dev = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            Err(W::GpuLost) => return Err(NvmlError::GpuLost { index }),
            Err(e) => {
                return Err(NvmlError::Query {
                    what: format!("gpu {index} handle"),
                    message: e.to_string(),
                })
            }
        };
        let uuid = opt(index, "uuid", dev.uuid())?.unwrap_or_else(|| format!("index-{index}"));
        let pci =
            opt(index, "pci info", dev.pci_info())?.and_then(|p| PciAddress::parse(&p.bus_id).ok());
        let ecc = |counter| -> Result<Option<EccCounts>, NvmlError> {
            let c = opt(
                index,
                "ecc",
                dev.total_ecc_errors(MemoryError::Corrected, counter),
            )?;
            let u = opt(
                index,
                "ecc",
                dev.total_ecc_errors(MemoryError::Uncorrected, counter),
            )?;
            Ok(c.zip(u).map(|(corrected, uncorrected)| EccCounts {
                corrected,
                uncorrected,
            }))
        };
        let ecc_volatile = ecc(WEcc::Volatile)?;
        let ecc_aggregate = ecc(WEcc::Aggregate)?;

        let fields = [
            FieldId(FI_DEV_REMAPPED_COR),
            FieldId(FI_DEV_REMAPPED_UNC),
            FieldId(FI_DEV_REMAPPED_PENDING),
            FieldId(FI_DEV_REMAPPED_FAILURE),
            FieldId(FI_DEV_MEMORY_TEMP),
        ];
        let values: Vec<Option<u64>> = opt(index, "field values", dev.field_values_for(&fields))?
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                r.ok()
                    .and_then(|s| s.value.ok())
                    .as_ref()
                    .and_then(value_u64)
            })
            .collect();
        let field = |i: usize| values.get(i).copied().flatten();
        let remapped_rows = match (field(0), field(1), field(2), field(3)) {
            (Some(c), Some(u), Some(p), Some(f)) => Some(RemappedRows {
                correctable: c,
                uncorrectable: u,
                pending: p != 0,
                failure: f != 0,
            }),
            _ => None,
        };
        let memory_temp_c = field(4).filter(|&t| t > 0).map(|t| t as f64);

        let sbe = opt(
            index,
            "retired pages",
            dev.retired_pages(RetirementCause::MultipleSingleBitEccErrors),
        )?;
        let dbe = opt(
            index,
            "retired pages",
            dev.retired_pages(RetirementCause::DoubleBitEccError),
        )?;
        let pending = opt(index, "pending retirement", dev.are_pages_pending_retired())?;
        let retired_pages = match (sbe, dbe) {
            (Some(s), Some(d)) => Some(RetiredPageCounts {
                single_bit: s.len() as u64,
                double_bit: d.len() as u64,
                pending: pending.unwrap_or(false),
            }),
            _ => None,
        };

        let pcie_replay = opt(index, "pcie replay", dev.pcie_replay_counter())?.map(u64::from);
        let gpu_temp_c = opt(
            index,
            "temperature",
            dev.temperature(TemperatureSensor::Gpu),
        )?
        .map(f64::from);
        let power_w = opt(index, "power", dev.power_usage())?.map(|mw| f64::from(mw) / 1000.0);
        let clock_event_reasons =
            opt(index, "clock event reasons", dev.current_throttle_reasons())?.map(|r| r.bits());

        let mut nvlink = Vec::new();
        for link in 0..MAX_NVLINKS {
            let l = dev.link_wrapper_for(link);
            match opt(index, "nvlink state", l.is_active())? {
                Some(true) => {
                    for (wc, c) in [
                        (ErrorCounter::DlReplay, NvlinkCounter::Replay),
                        (ErrorCounter::DlRecovery, NvlinkCounter::Recovery),
                        (ErrorCounter::DlCrcFlit, NvlinkCounter::CrcFlit),
                        (ErrorCounter::DlCrcData, NvlinkCounter::CrcData),
                    ] {
                        if let Some(v) = opt(index, "nvlink errors", l.error_counter(wc))? {
                            nvlink.push((link, c, v));
                        }
                    }
                }
                Some(false) => {}
                // No NVLink on this GPU (PCIe card, VM): stop asking.
                None => break,
            }
        }

        Ok(GpuSample {
            index,
            uuid,
            pci,
            ecc_volatile,
            ecc_aggregate,
            remapped_rows,
            retired_pages,
            pcie_replay,
            gpu_temp_c,
            memory_temp_c,
            power_w,
            clock_event_reasons,
            nvlink,
        })
    }
}

/// An Xid NVML delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XidReport {
    pub index: Option<u32>,
    pub uuid: Option<String>,
    pub pci: Option<PciAddress>,
    pub code: u64,
    pub at: Timestamp,
}

/// Starts the Xid thread: registers every GPU for critical Xid events and
/// forwards each one until `stop` is set. Returns once registration is done,
/// with how many GPUs are registered (0: the driver delivers no Xid events
/// here, and the kernel log is the only source of Xids).
pub fn spawn_xid_watcher(
    nvml: Arc<Nvml>,
    tx: Sender<XidReport>,
    stop: Arc<AtomicBool>,
) -> Result<(JoinHandle<()>, u32), NvmlError> {
    let (ready_tx, ready_rx) = sync_channel::<u32>(1);
    let handle = std::thread::Builder::new()
        .name("nvml-xid".to_owned())
        .spawn(move || xid_loop(&nvml, &tx, &stop, &ready_tx))
        .map_err(|e| NvmlError::Query {
            what: "xid thread".to_owned(),
            message: e.to_string(),
        })?;
    let registered = ready_rx.recv().unwrap_or(0);
    Ok((handle, registered))
}

fn xid_loop(
    nvml: &Nvml,
    tx: &Sender<XidReport>,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::SyncSender<u32>,
) {
    let mut registered = 0u32;
    let mut set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "nvml event set unavailable: xids come from the kernel log only");
            let _ = ready.send(0);
            return;
        }
    };
    for index in 0..nvml.device_count().unwrap_or(0) {
        let Ok(dev) = nvml.device_by_index(index) else {
            continue;
        };
        let supported = dev
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            tracing::warn!(gpu = index, "xid events not supported for this gpu");
            continue;
        }
        match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                set = s;
                registered += 1;
            }
            Err(e) => {
                // NVML released the set with the failure: no Xid events from
                // NVML in this process; the kernel log still has them.
                tracing::warn!(gpu = index, error = %e.error, "xid event registration failed");
                let _ = ready.send(0);
                return;
            }
        }
    }
    let _ = ready.send(registered);
    if registered == 0 {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match set.wait(500) {
            Ok(data) => {
                let code = match data.event_data {
                    Some(XidError::Value(v)) => v,
                    _ => continue,
                };
                let report = XidReport {
                    index: data.device.index().ok(),
                    uuid: data.device.uuid().ok(),
                    pci: data
                        .device
                        .pci_info()
                        .ok()
                        .and_then(|p| PciAddress::parse(&p.bus_id).ok()),
                    code,
                    at: Timestamp::now(),
                };
                if tx.send(report).is_err() {
                    return;
                }
            }
            Err(W::Timeout) => {}
            Err(e) => {
                tracing::warn!(error = %e, "nvml event wait failed");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
