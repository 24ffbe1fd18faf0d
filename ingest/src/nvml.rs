//! The NVML source: GPU health counters sampled into events, and Xid
//! events from NVML's event API.
//!
//! NVML sits behind the [`Gpus`] trait: [`NvmlGpus`] is the real library,
//! loaded at run time (so the agent runs on machines without GPUs and says
//! that NVML is absent), and tests use a fake. [`NvmlSource`] is pure: it
//! turns successive samples into events (counters into deltas, GPU lost as
//! a transition) and never calls NVML itself.
//!
//! Which events a sample gives:
//! - `gpu.thermal` every sample (temperatures, power, clock-event reasons):
//!   the one periodic, low-severity sample.
//! - `gpu.ecc`, `gpu.pcie_replay`, `gpu.nvlink`, `gpu.retired_pages`: when a
//!   counter rose or restarted (a restart is `reset: true`, delta 0).
//! - `gpu.row_remap`: when a count rose, or `pending`/`failure` changed, or
//!   on the first sample if either is set.
//! - `gpu.lost`: when a GPU starts answering `GPU_IS_LOST` (once, until it
//!   answers again).

use std::collections::{HashMap, HashSet};

use pitcrew_contract::{
    deterministic_id, CounterDelta, Ecc, EccCounter, Event, EventData, GpuLost, GpuRef, GpuThermal,
    Nvlink, NvlinkCounter, PciAddress, RetiredPages, RowRemap, Source, ThrottleReason, Timestamp,
};

use crate::counters::Counters;

/// ECC counts of one GPU, one counter type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EccCounts {
    pub corrected: u64,
    pub uncorrected: u64,
}

/// `nvmlDeviceGetRemappedRows`, through NVML's field values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemappedRows {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failure: bool,
}

/// Retired pages (GPUs before Ampere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetiredPageCounts {
    pub single_bit: u64,
    pub double_bit: u64,
    pub pending: bool,
}

/// One reading of one GPU. Every query is optional: what the GPU or driver
/// does not support is left out, not reported as zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub pci: Option<PciAddress>,
    pub ecc_volatile: Option<EccCounts>,
    pub ecc_aggregate: Option<EccCounts>,
    pub remapped_rows: Option<RemappedRows>,
    pub retired_pages: Option<RetiredPageCounts>,
    pub pcie_replay: Option<u64>,
    pub gpu_temp_c: Option<f64>,
    pub memory_temp_c: Option<f64>,
    pub power_w: Option<f64>,
    pub clock_event_reasons: Option<u64>,
    /// (link, counter, value) for active links.
    pub nvlink: Vec<(u32, NvlinkCounter, u64)>,
}

/// Errors of the NVML source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NvmlError {
    /// libnvidia-ml could not be loaded or initialised: no GPUs here, or no
    /// driver. Permanent for this process.
    #[error("nvml is absent: {0}")]
    Absent(String),
    /// The GPU fell off the bus or stopped answering.
    #[error("gpu {index} is lost")]
    GpuLost { index: u32 },
    /// A query failed; may work next time.
    #[error("nvml {what}: {message}")]
    Query { what: String, message: String },
}

impl NvmlError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, NvmlError::Query { .. })
    }
}

/// NVML as the source needs it.
pub trait Gpus {
    fn driver_version(&self) -> Result<String, NvmlError>;
    fn count(&self) -> Result<u32, NvmlError>;
    fn sample(&self, index: u32) -> Result<GpuSample, NvmlError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CounterId {
    Ecc(EccCounter, bool),
    Remap(bool),
    Retired(bool),
    PcieReplay,
    Nvlink(u32, NvlinkCounter),
}

/// Turns samples into events. Holds the counter baselines of every GPU.
/// Used for NVML and, with [`NvmlSource::with_source`], for readings that
/// came from elsewhere (the dcgm-exporter adapter).
#[derive(Debug)]
pub struct NvmlSource {
    source: Source,
    node: String,
    boot_id: String,
    counters: Counters<(String, CounterId)>,
    remap_state: HashMap<String, (bool, bool)>,
    lost: HashSet<u32>,
    /// Last identity seen per index, so a lost GPU is still named.
    identity: HashMap<u32, GpuRef>,
}

impl NvmlSource {
    pub fn new(node: &str, boot_id: &str) -> NvmlSource {
        NvmlSource::with_source(Source::Nvml, node, boot_id)
    }

    /// A sampler whose events say they came from `source`.
    pub fn with_source(source: Source, node: &str, boot_id: &str) -> NvmlSource {
        let mut counters = Counters::default();
        counters.observe_boot(boot_id);
        NvmlSource {
            source,
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            counters,
            remap_state: HashMap::new(),
            lost: HashSet::new(),
            identity: HashMap::new(),
        }
    }

    /// Samples every GPU once and returns the events at `now`. Query
    /// errors of one GPU do not stop the others; they are returned.
    pub fn sample<G: Gpus + ?Sized>(
        &mut self,
        gpus: &G,
        now: Timestamp,
    ) -> (Vec<Event>, Vec<NvmlError>) {
        let mut events = Vec::new();
        let mut errors = Vec::new();
        let count = match gpus.count() {
            Ok(c) => c,
            Err(e) => return (events, vec![e]),
        };
        for index in 0..count {
            match gpus.sample(index) {
                Ok(s) => {
                    self.lost.remove(&index);
                    self.events_of(&s, now, &mut events);
                }
                Err(NvmlError::GpuLost { index }) => {
                    if self.lost.insert(index) {
                        let gpu = self.identity.get(&index).cloned().unwrap_or(GpuRef {
                            index: Some(index),
                            uuid: None,
                            pci: None,
                        });
                        let uuid = gpu.uuid.clone().unwrap_or_else(|| index.to_string());
                        events.push(self.event(
                            now,
                            gpu,
                            &[&uuid, "lost", &now.unix_nanos().to_string()],
                            EventData::GpuLost(GpuLost {
                                reason: "NVML_ERROR_GPU_IS_LOST".to_owned(),
                            }),
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (events, errors)
    }

    /// Fills in the index and UUID of a GPU known only by its PCI address
    /// (kernel-log events), from the identities NVML reported, so every GPU
    /// event names its GPU all three ways where NVML is present.
    pub fn enrich(&self, gpu: &mut GpuRef) {
        let Some(pci) = gpu.pci else { return };
        if let Some(known) = self.identity.values().find(|g| g.pci == Some(pci)) {
            gpu.index = gpu.index.or(known.index);
            if gpu.uuid.is_none() {
                gpu.uuid.clone_from(&known.uuid);
            }
        }
    }

    /// The event for an Xid NVML delivered.
    pub fn xid_event(&self, r: &XidReport) -> Event {
        let gpu = GpuRef {
            index: r.index,
            uuid: r.uuid.clone(),
            pci: r.pci,
        };
        let code = u32::try_from(r.code).unwrap_or(u32::MAX);
        let uuid = r.uuid.clone().unwrap_or_default();
        self.event(
            r.at,
            gpu,
            &[&uuid, &code.to_string(), &r.at.unix_nanos().to_string()],
            EventData::GpuXid(pitcrew_contract::Xid {
                code,
                pid: None,
                process: None,
                message: None,
                recovery_action: None,
                gpu_instance: None,
                compute_instance: None,
            }),
        )
    }

    /// Counter baselines held (state size).
    pub fn tracked_counters(&self) -> usize {
        self.counters.len()
    }

    fn event(&self, time: Timestamp, gpu: GpuRef, id_parts: &[&str], data: EventData) -> Event {
        let mut parts: Vec<&str> = vec![&self.node, &self.boot_id, data.kind().as_str()];
        parts.extend_from_slice(id_parts);
        Event {
            id: deterministic_id(self.source.as_str(), &parts),
            node: self.node.clone(),
            time,
            source: self.source.clone(),
            gpu: Some(gpu),
            count: 1,
            labels: Default::default(),
            data,
        }
    }

    fn events_of(&mut self, s: &GpuSample, now: Timestamp, out: &mut Vec<Event>) {
        let gpu = GpuRef {
            index: Some(s.index),
            uuid: Some(s.uuid.clone()),
            pci: s.pci,
        };
        self.identity.insert(s.index, gpu.clone());
        let uuid = s.uuid.as_str();
        let now_id = now.unix_nanos().to_string();

        let reasons = s.clock_event_reasons.unwrap_or(0);
        out.push(self.event(
            now,
            gpu.clone(),
            &[uuid, &now_id],
            EventData::GpuThermal(GpuThermal {
                gpu_temp_c: s.gpu_temp_c,
                memory_temp_c: s.memory_temp_c,
                power_w: s.power_w,
                clock_event_reasons: reasons,
                throttle: ThrottleReason::from_mask(reasons),
            }),
        ));

        for (counter, counts) in [
            (EccCounter::Volatile, s.ecc_volatile),
            (EccCounter::Aggregate, s.ecc_aggregate),
        ] {
            let Some(c) = counts else { continue };
            let corr = self
                .counters
                .update((s.uuid.clone(), CounterId::Ecc(counter, true)), c.corrected);
            let unc = self.counters.update(
                (s.uuid.clone(), CounterId::Ecc(counter, false)),
                c.uncorrected,
            );
            if corr.is_news() || unc.is_news() {
                let label = if counter == EccCounter::Volatile {
                    "volatile"
                } else {
                    "aggregate"
                };
                out.push(self.event(
                    now,
                    gpu.clone(),
                    &[
                        uuid,
                        label,
                        &c.corrected.to_string(),
                        &c.uncorrected.to_string(),
                    ],
                    EventData::GpuEcc(Ecc {
                        counter,
                        corrected_delta: corr.delta,
                        uncorrected_delta: unc.delta,
                        corrected_total: c.corrected,
                        uncorrected_total: c.uncorrected,
                    }),
                ));
            }
        }

        if let Some(r) = s.remapped_rows {
            let corr = self
                .counters
                .update((s.uuid.clone(), CounterId::Remap(true)), r.correctable);
            let unc = self
                .counters
                .update((s.uuid.clone(), CounterId::Remap(false)), r.uncorrectable);
            let state = (r.pending, r.failure);
            let previous = self.remap_state.insert(s.uuid.clone(), state);
            let changed = match previous {
                Some(p) => p != state,
                None => r.pending || r.failure,
            };
            if corr.is_news() || unc.is_news() || changed {
                out.push(self.event(
                    now,
                    gpu.clone(),
                    &[
                        uuid,
                        &r.correctable.to_string(),
                        &r.uncorrectable.to_string(),
                        &r.pending.to_string(),
                        &r.failure.to_string(),
                    ],
                    EventData::GpuRowRemap(RowRemap {
                        correctable_total: saturate(r.correctable),
                        uncorrectable_total: saturate(r.uncorrectable),
                        correctable_delta: saturate(corr.delta),
                        uncorrectable_delta: saturate(unc.delta),
                        pending: r.pending,
                        failure: r.failure,
                    }),
                ));
            }
        }

        if let Some(p) = s.retired_pages {
            let sbe = self
                .counters
                .update((s.uuid.clone(), CounterId::Retired(true)), p.single_bit);
            let dbe = self
                .counters
                .update((s.uuid.clone(), CounterId::Retired(false)), p.double_bit);
            if sbe.is_news() || dbe.is_news() || (p.pending && (sbe.first || dbe.first)) {
                out.push(self.event(
                    now,
                    gpu.clone(),
                    &[
                        uuid,
                        &p.single_bit.to_string(),
                        &p.double_bit.to_string(),
                        &p.pending.to_string(),
                    ],
                    EventData::GpuRetiredPages(RetiredPages {
                        single_bit_total: saturate(p.single_bit),
                        double_bit_total: saturate(p.double_bit),
                        delta: saturate(sbe.delta + dbe.delta),
                        pending: p.pending,
                    }),
                ));
            }
        }

        if let Some(total) = s.pcie_replay {
            let d = self
                .counters
                .update((s.uuid.clone(), CounterId::PcieReplay), total);
            if d.is_news() {
                out.push(self.event(
                    now,
                    gpu.clone(),
                    &[uuid, &total.to_string(), &now_id],
                    EventData::GpuPcieReplay(CounterDelta {
                        delta: d.delta,
                        total,
                        reset: d.reset,
                    }),
                ));
            }
        }

        for &(link, counter, total) in &s.nvlink {
            let d = self
                .counters
                .update((s.uuid.clone(), CounterId::Nvlink(link, counter)), total);
            if d.is_news() {
                out.push(self.event(
                    now,
                    gpu.clone(),
                    &[
                        uuid,
                        &link.to_string(),
                        &format!("{counter:?}"),
                        &total.to_string(),
                        &now_id,
                    ],
                    EventData::GpuNvlink(Nvlink {
                        link,
                        counter,
                        delta: d.delta,
                        total,
                        reset: d.reset,
                    }),
                ));
            }
        }
    }
}

fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

mod real;
pub use real::{spawn_xid_watcher, NvmlGpus, XidReport};

#[cfg(test)]
mod tests;

/// A simulated box of GPUs: healthy H100-like readings whose ECC and PCIe
/// replay counters creep up now and then. For the simulator, the demo and
/// measuring the agent on machines without GPUs.
#[derive(Debug)]
pub struct SimulatedGpus {
    count: u32,
    tick: std::sync::atomic::AtomicU64,
}

impl SimulatedGpus {
    pub fn new(count: u32) -> SimulatedGpus {
        SimulatedGpus {
            count,
            tick: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Gpus for SimulatedGpus {
    fn driver_version(&self) -> Result<String, NvmlError> {
        Ok("580.159.04".to_owned())
    }

    fn count(&self) -> Result<u32, NvmlError> {
        Ok(self.count)
    }

    fn sample(&self, index: u32) -> Result<GpuSample, NvmlError> {
        let t = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            / u64::from(self.count.max(1));
        let creep = |every: u64| t / every;
        Ok(GpuSample {
            index,
            uuid: format!("GPU-5a3c1f0e-8d2b-4c1e-9f4a-{index:012x}"),
            pci: Some(PciAddress {
                domain: 0,
                bus: 0x18 + u8::try_from(index % 200).unwrap_or(0),
                device: 0,
                function: 0,
            }),
            ecc_volatile: Some(EccCounts {
                corrected: creep(300),
                uncorrected: 0,
            }),
            ecc_aggregate: Some(EccCounts {
                corrected: 40 + creep(300),
                uncorrected: 0,
            }),
            remapped_rows: Some(RemappedRows::default()),
            retired_pages: None,
            pcie_replay: Some(creep(120)),
            gpu_temp_c: Some(55.0 + f64::from(index)),
            memory_temp_c: Some(60.0 + f64::from(index)),
            power_w: Some(450.0 + f64::from(index) * 3.0),
            clock_event_reasons: Some(0),
            nvlink: (0..18)
                .map(|l| (l, NvlinkCounter::CrcFlit, creep(600)))
                .collect(),
        })
    }
}
