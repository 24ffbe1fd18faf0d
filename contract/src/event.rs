//! Telemetry events: what collectors and adapters write to `pitcrew.events`.
//!
//! ```json
//! {"v":1,"id":"kmsg-n17-1042","node":"n17","time":"2026-11-24T14:23:32.123Z",
//!  "source":"kmsg","kind":"gpu.xid","gpu":{"index":3,"pci":"0000:2b:00.0"},
//!  "data":{"code":79,"message":"GPU has fallen off the bus."}}
//! ```
//!
//! The envelope is the same for every kind; `data` holds the kind's own
//! fields. `Event`'s deserialiser is hand-written so that `data` is parsed
//! straight into the right struct when `kind` comes first (as pitcrew
//! writes it), without buffering: this is the decode hot path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{PciAddress, Timestamp, V1};

/// Where an event came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Nvml,
    Kmsg,
    Sysfs,
    Ipmi,
    Dcgm,
    K8s,
    Slurm,
    Agent,
    Job,
    Simulator,
    /// Any other producer: anything that writes this schema can feed pitcrew.
    Other(String),
}

impl Source {
    pub fn as_str(&self) -> &str {
        match self {
            Source::Nvml => "nvml",
            Source::Kmsg => "kmsg",
            Source::Sysfs => "sysfs",
            Source::Ipmi => "ipmi",
            Source::Dcgm => "dcgm",
            Source::K8s => "k8s",
            Source::Slurm => "slurm",
            Source::Agent => "agent",
            Source::Job => "job",
            Source::Simulator => "simulator",
            Source::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Source {
        match s {
            "nvml" => Source::Nvml,
            "kmsg" => Source::Kmsg,
            "sysfs" => Source::Sysfs,
            "ipmi" => Source::Ipmi,
            "dcgm" => Source::Dcgm,
            "k8s" => Source::K8s,
            "slurm" => Source::Slurm,
            "agent" => Source::Agent,
            "job" => Source::Job,
            "simulator" => Source::Simulator,
            other => Source::Other(other.to_owned()),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Source;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a source name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Source, E> {
                if v.is_empty() || v.len() > 64 {
                    return Err(E::custom("source must be 1 to 64 characters"));
                }
                Ok(Source::parse(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// Which GPU an event is about. Collectors fill in what they know: the
/// kernel log gives the PCI address, NVML gives all three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciAddress>,
}

impl GpuRef {
    pub fn is_empty(&self) -> bool {
        self.index.is_none() && self.uuid.is_none() && self.pci.is_none()
    }
}

/// One telemetry event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Stable id: the same observation always gets the same id, so
    /// downstream dedup works across redeliveries.
    pub id: String,
    /// The node the event is about (inventory name).
    pub node: String,
    /// When it happened, from the source (not when it was read).
    pub time: Timestamp,
    pub source: Source,
    /// Required for `gpu.*` kinds, absent otherwise.
    pub gpu: Option<GpuRef>,
    /// Identical repeats coalesced into this event (1 when not coalesced).
    pub count: u32,
    /// Free labels (job id, rank, firmware...), bounded in size by the decoder.
    pub labels: BTreeMap<String, String>,
    pub data: EventData,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $variant:ident($ty:ident) = $name:literal; )*) => {
        /// The kind of an event, written as `kind` on the wire.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind { $( $(#[$doc])* $variant, )* }

        impl EventKind {
            /// Every kind this build knows.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }

            pub fn parse(s: &str) -> Option<EventKind> {
                match s { $($name => Some(EventKind::$variant),)* _ => None }
            }
        }

        /// The kind-specific fields of an event.
        #[derive(Clone, Debug, PartialEq)]
        pub enum EventData { $( $(#[$doc])* $variant($ty), )* }

        impl EventData {
            pub fn kind(&self) -> EventKind {
                match self { $(EventData::$variant(_) => EventKind::$variant,)* }
            }

            fn serialize_as_field<S: SerializeStruct>(&self, s: &mut S) -> Result<(), S::Error> {
                match self { $(EventData::$variant(d) => s.serialize_field("data", d),)* }
            }
        }

        struct DataSeed(EventKind);

        impl<'de> DeserializeSeed<'de> for DataSeed {
            type Value = EventData;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventData, D::Error> {
                match self.0 { $(EventKind::$variant => $ty::deserialize(d).map(EventData::$variant),)* }
            }
        }
    };
}

event_kinds! {
    /// An Xid reported by the driver (NVML event or kernel log).
    GpuXid(Xid) = "gpu.xid";
    /// ECC error counters (deltas since the last sample, and totals).
    GpuEcc(Ecc) = "gpu.ecc";
    /// Row remapping state (HBM).
    GpuRowRemap(RowRemap) = "gpu.row_remap";
    /// Retired pages (pre-Ampere page retirement).
    GpuRetiredPages(RetiredPages) = "gpu.retired_pages";
    /// PCIe replay counter.
    GpuPcieReplay(CounterDelta) = "gpu.pcie_replay";
    /// Temperatures, power and clock-event (throttle) reasons.
    GpuThermal(GpuThermal) = "gpu.thermal";
    /// NVLink error counter on one link.
    GpuNvlink(Nvlink) = "gpu.nvlink";
    /// The GPU no longer answers (NVML_ERROR_GPU_IS_LOST).
    GpuLost(GpuLost) = "gpu.lost";
    /// The driver's current recovery action for the GPU.
    GpuRecoveryAction(RecoveryAction) = "gpu.recovery_action";
    /// An NVSwitch SXid.
    NvswitchSxid(Sxid) = "nvswitch.sxid";
    /// One PCIe AER record (a multi-line kernel record becomes one event).
    PcieAer(Aer) = "pcie.aer";
    /// PCIe downstream port containment.
    PcieDpc(Dpc) = "pcie.dpc";
    /// pciehp reports a slot's link down.
    PcieLinkDown(LinkDown) = "pcie.link_down";
    /// EDAC memory controller errors.
    HostEdac(Edac) = "host.edac";
    /// Machine-check events.
    HostMce(Mce) = "host.mce";
    /// CPU thermal throttling and its return to normal.
    HostThermal(HostThermal) = "host.thermal";
    /// A host sensor (hwmon) reading and its threshold state.
    HostSensor(Sensor) = "host.sensor";
    /// InfiniBand port error counter.
    NetIbCounter(IbCounter) = "net.ib_counter";
    /// Network link carrier change.
    NetLink(NetLink) = "net.link";
    /// A BMC system event log entry.
    BmcSel(SelEntry) = "bmc.sel";
    /// A BMC sensor reading and its threshold state.
    BmcSensor(Sensor) = "bmc.sensor";
    /// The agent is alive.
    NodeHeartbeat(Heartbeat) = "node.heartbeat";
    /// A Kubernetes node condition (NotReady, node-problem-detector's...).
    NodeCondition(NodeCondition) = "node.condition";
    /// Planned maintenance starts or ends (suppresses remediation).
    NodeMaintenance(Maintenance) = "node.maintenance";
    /// A job (or one rank of it) started on the node.
    JobStarted(JobStarted) = "job.started";
    /// A job (or one rank of it) ended.
    JobFinished(JobFinished) = "job.finished";
    /// A rank reports a collective (NCCL) timeout.
    JobNcclTimeout(NcclTimeout) = "job.nccl_timeout";
    /// Per-rank training progress: step time and traffic.
    JobStep(JobStep) = "job.step";
}

impl EventKind {
    /// `gpu.*` events must name their GPU.
    pub fn requires_gpu(self) -> bool {
        self.as_str().starts_with("gpu.")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Prefix of the serde error an unknown kind produces.
pub(crate) const UNKNOWN_KIND: &str = "unknown event kind ";

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EventKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event kind such as gpu.xid")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventKind, E> {
                EventKind::parse(v).ok_or_else(|| {
                    let shown: String = v.chars().take(64).collect();
                    E::custom(format_args!("{UNKNOWN_KIND}`{shown}`"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

// ---- kind-specific bodies -------------------------------------------------

/// `gpu.xid`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Xid {
    pub code: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process name when the driver gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Xid 154 only: the recovery action the driver now asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_action: Option<RecoveryAction>,
}

/// Whether an ECC counter is volatile (since driver load) or aggregate
/// (lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EccCounter {
    Volatile,
    Aggregate,
}

/// `gpu.ecc`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ecc {
    pub counter: EccCounter,
    /// Single-bit (corrected) errors since the previous sample.
    pub corrected_delta: u64,
    /// Double-bit (uncorrected) errors since the previous sample.
    pub uncorrected_delta: u64,
    pub corrected_total: u64,
    pub uncorrected_total: u64,
}

/// `gpu.row_remap`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowRemap {
    pub correctable_total: u32,
    pub uncorrectable_total: u32,
    pub correctable_delta: u32,
    pub uncorrectable_delta: u32,
    /// A remap is pending: it takes effect at the next GPU reset.
    pub pending: bool,
    /// A remap failed: the GPU needs diagnostics / RMA.
    pub failure: bool,
}

/// `gpu.retired_pages`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiredPages {
    pub single_bit_total: u32,
    pub double_bit_total: u32,
    pub delta: u32,
    pub pending: bool,
}

/// A monotonic counter sampled as a delta (`gpu.pcie_replay`). A counter
/// that went down (reset, reboot) gives `delta: 0` and `reset: true`, never
/// a negative delta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterDelta {
    pub delta: u64,
    pub total: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
}

/// A named clock-event (throttle) reason, from NVML's bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleReason {
    GpuIdle,
    ApplicationsClocksSetting,
    SwPowerCap,
    HwSlowdown,
    SyncBoost,
    SwThermal,
    HwThermal,
    HwPowerBrake,
    DisplayClockSetting,
}

impl ThrottleReason {
    const BITS: [(u64, ThrottleReason); 9] = [
        (0x1, ThrottleReason::GpuIdle),
        (0x2, ThrottleReason::ApplicationsClocksSetting),
        (0x4, ThrottleReason::SwPowerCap),
        (0x8, ThrottleReason::HwSlowdown),
        (0x10, ThrottleReason::SyncBoost),
        (0x20, ThrottleReason::SwThermal),
        (0x40, ThrottleReason::HwThermal),
        (0x80, ThrottleReason::HwPowerBrake),
        (0x100, ThrottleReason::DisplayClockSetting),
    ];

    /// The reasons set in an NVML clock-event-reasons mask.
    pub fn from_mask(mask: u64) -> Vec<ThrottleReason> {
        Self::BITS
            .iter()
            .filter(|(bit, _)| mask & bit != 0)
            .map(|&(_, r)| r)
            .collect()
    }
}

/// `gpu.thermal`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuThermal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_temp_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// NVML's raw clock-event-reasons mask.
    pub clock_event_reasons: u64,
    /// The same mask, named.
    #[serde(default)]
    pub throttle: Vec<ThrottleReason>,
}

/// NVLink error counters NVML exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NvlinkCounter {
    Replay,
    Recovery,
    CrcFlit,
    CrcData,
    EccData,
}

/// `gpu.nvlink`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nvlink {
    pub link: u32,
    pub counter: NvlinkCounter,
    pub delta: u64,
    pub total: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
}

/// `gpu.lost`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuLost {
    pub reason: String,
}

/// `gpu.recovery_action`, and the value carried by Xid 154: 0 none,
/// 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain P2P and reset,
/// 5 recover IMEX domain, 6 bus reset, 7 system reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryAction {
    /// The action asked for now.
    pub action: u8,
    /// The action before the change, when known (Xid 154 gives both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u8>,
}

impl RecoveryAction {
    /// The driver's name for a recovery action value.
    pub fn name(action: u8) -> &'static str {
        match action {
            0 => "none",
            1 => "gpu_reset",
            2 => "node_reboot",
            3 => "drain_p2p",
            4 => "drain_p2p_and_reset",
            5 => "recover_imex_domain",
            6 => "bus_reset",
            7 => "system_reboot",
            _ => "unknown",
        }
    }
}

/// `nvswitch.sxid`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sxid {
    /// The switch device, e.g. `nvidia-nvswitch3`.
    pub switch: String,
    pub pci: PciAddress,
    pub code: u32,
    pub fatal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// AER severity; the kernel's old (`Corrected`, `Uncorrected (Fatal)`) and
/// new (`Correctable`, `Uncorrectable (Fatal)`) spellings map to the same
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AerSeverity {
    Corrected,
    UncorrectedNonFatal,
    UncorrectedFatal,
}

/// The PCIe layer an AER error was detected in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcieLayer {
    Physical,
    DataLink,
    Transaction,
}

/// `pcie.aer`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aer {
    /// The port or device that logged the record.
    pub device: PciAddress,
    pub severity: AerSeverity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<PcieLayer>,
    /// `Receiver ID`, `Requester ID`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `vendor:device` of the reporting function, e.g. `8086:9d14`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<u32>,
    /// Error names as the kernel prints them: `RxErr`, `BadTLP`, `CmpltTO`...
    #[serde(default)]
    pub errors: Vec<String>,
    /// The error marked `(First)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// `pcie.dpc`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dpc {
    pub port: PciAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PciAddress>,
}

/// `pcie.link_down`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkDown {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PciAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// Corrected or uncorrected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryErrorSeverity {
    Ce,
    Ue,
}

/// `host.edac`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edac {
    /// Memory controller index (`mc3` is 3).
    pub controller: u32,
    pub severity: MemoryErrorSeverity,
    /// New errors (a delta, never negative).
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `host.mce`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mce {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<u32>,
    pub message: String,
}

/// Throttled or back to normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThermalState {
    Throttled,
    Normal,
}

/// Core or package scope of a CPU thermal event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThermalScope {
    Core,
    Package,
}

/// `host.thermal`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostThermal {
    pub cpu: u32,
    pub scope: ThermalScope,
    pub state: ThermalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_events: Option<u64>,
}

/// InfiniBand port counters (`/sys/class/infiniband/<dev>/ports/<n>/counters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IbCounterName {
    SymbolError,
    LinkErrorRecovery,
    LinkDowned,
    PortRcvErrors,
    PortRcvRemotePhysicalErrors,
    PortXmitDiscards,
    LocalLinkIntegrityErrors,
    ExcessiveBufferOverrunErrors,
    PortXmitData,
    PortRcvData,
}

/// `net.ib_counter`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbCounter {
    /// HCA name, e.g. `mlx5_0`.
    pub device: String,
    pub port: u32,
    pub counter: IbCounterName,
    pub delta: u64,
    pub total: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
}

/// `net.link`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetLink {
    pub interface: String,
    pub up: bool,
}

/// `bmc.sel`: one SEL record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelEntry {
    pub record_id: u32,
    /// `Critical Interrupt`, `Memory`, `Temperature`...
    pub sensor_type: String,
    /// Sensor name or number, e.g. `#0x90`.
    pub sensor: String,
    /// `Bus Fatal Error`, `Uncorrectable ECC`...
    pub description: String,
    /// false for a "Deasserted" record, which clears.
    pub asserted: bool,
}

/// A sensor's threshold state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorState {
    Ok,
    NonCritical,
    Critical,
    NonRecoverable,
}

/// `bmc.sensor`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    pub sensor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub state: SensorState,
}

/// `node.heartbeat`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    pub boot_id: String,
    pub uptime_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
}

/// A condition's status, as Kubernetes writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// `node.condition`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeCondition {
    /// `Ready`, `KernelDeadlock`, `GpuProblem`...
    pub condition: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Start or end of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowEdge {
    Start,
    End,
}

/// `node.maintenance`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Maintenance {
    pub state: WindowEdge,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `job.started`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStarted {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Completed,
    Failed,
    Cancelled,
    NodeFail,
    Timeout,
    Requeued,
}

/// `job.finished`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFinished {
    pub job: String,
    pub outcome: JobOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
}

/// `job.nccl_timeout`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NcclTimeout {
    pub job: String,
    pub rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collective: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

/// `job.step`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStep {
    pub job: String,
    pub rank: u32,
    pub step: u64,
    pub step_time_s: f64,
    /// Bytes sent and received on the fabric during the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_bytes: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---- envelope serde -------------------------------------------------------

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 10)?;
        st.serialize_field("v", &V1)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("node", &self.node)?;
        st.serialize_field("time", &self.time)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("kind", &self.kind())?;
        if let Some(gpu) = &self.gpu {
            st.serialize_field("gpu", gpu)?;
        }
        if self.count != 1 {
            st.serialize_field("count", &self.count)?;
        }
        if !self.labels.is_empty() {
            st.serialize_field("labels", &self.labels)?;
        }
        self.data.serialize_as_field(&mut st)?;
        st.end()
    }
}

enum Field {
    V,
    Id,
    Node,
    Time,
    Source,
    Kind,
    Gpu,
    Count,
    Labels,
    Data,
    Unknown,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "v" => Field::V,
                    "id" => Field::Id,
                    "node" => Field::Node,
                    "time" => Field::Time,
                    "source" => Field::Source,
                    "kind" => Field::Kind,
                    "gpu" => Field::Gpu,
                    "count" => Field::Count,
                    "labels" => Field::Labels,
                    "data" => Field::Data,
                    _ => Field::Unknown,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Bounds on free-form envelope fields, so one message cannot carry
/// unbounded state into the rule engine.
pub const MAX_NODE_LEN: usize = 253;
pub const MAX_ID_LEN: usize = 256;
pub const MAX_LABELS: usize = 32;

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut version = None;
        let mut id: Option<String> = None;
        let mut node: Option<String> = None;
        let mut time = None;
        let mut source = None;
        let mut kind: Option<EventKind> = None;
        let mut gpu: Option<GpuRef> = None;
        let mut count = None;
        let mut labels: Option<BTreeMap<String, String>> = None;
        let mut data: Option<EventData> = None;
        // `data` before `kind`: keep the raw text until the kind is known.
        let mut raw_data: Option<Box<serde_json::value::RawValue>> = None;

        macro_rules! once {
            ($slot:ident, $name:literal, $value:expr) => {{
                if $slot.is_some() {
                    return Err(de::Error::duplicate_field($name));
                }
                $slot = Some($value);
            }};
        }

        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::V => once!(version, "v", map.next_value::<V1>()?),
                Field::Id => once!(id, "id", map.next_value()?),
                Field::Node => once!(node, "node", map.next_value()?),
                Field::Time => once!(time, "time", map.next_value::<Timestamp>()?),
                Field::Source => once!(source, "source", map.next_value::<Source>()?),
                Field::Kind => once!(kind, "kind", map.next_value::<EventKind>()?),
                Field::Gpu => once!(gpu, "gpu", map.next_value()?),
                Field::Count => once!(count, "count", map.next_value::<u32>()?),
                Field::Labels => once!(labels, "labels", map.next_value()?),
                Field::Data => {
                    if data.is_some() || raw_data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    match kind {
                        Some(k) => data = Some(map.next_value_seed(DataSeed(k))?),
                        None => raw_data = Some(map.next_value()?),
                    }
                }
                Field::Unknown => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }

        version.ok_or_else(|| de::Error::missing_field("v"))?;
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let node = node.ok_or_else(|| de::Error::missing_field("node"))?;
        let time = time.ok_or_else(|| de::Error::missing_field("time"))?;
        let source = source.ok_or_else(|| de::Error::missing_field("source"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        let data = match (data, raw_data) {
            (Some(d), _) => d,
            (None, Some(raw)) => {
                let mut track = serde_path_to_error::Track::new();
                let mut inner = serde_json::Deserializer::from_str(raw.get());
                DataSeed(kind)
                    .deserialize(serde_path_to_error::Deserializer::new(
                        &mut inner, &mut track,
                    ))
                    .map_err(|e| {
                        de::Error::custom(format_args!(
                            "{DATA_PREFIX}{}{DATA_SEPARATOR}{e}",
                            track.path()
                        ))
                    })?
            }
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}id: must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
        if node.is_empty() || node.len() > MAX_NODE_LEN {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}node: must be 1 to {MAX_NODE_LEN} bytes"
            )));
        }
        let labels = labels.unwrap_or_default();
        if labels.len() > MAX_LABELS {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}labels: at most {MAX_LABELS} labels"
            )));
        }
        if kind.requires_gpu() && gpu.as_ref().is_none_or(GpuRef::is_empty) {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}gpu: required for kind {kind} (index, uuid or pci)"
            )));
        }
        Ok(Event {
            id,
            node,
            time,
            source,
            gpu,
            count: count.unwrap_or(1),
            labels,
            data,
        })
    }
}

/// A validation error that names its own field: `field-error:NAME: msg`.
pub(crate) const FIELD_PREFIX: &str = "field-error:";
/// An error inside a `data` that arrived before `kind`.
pub(crate) const DATA_PREFIX: &str = "data-error:";
pub(crate) const DATA_SEPARATOR: char = '\u{1f}';

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}
