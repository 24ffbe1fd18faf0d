//! Each kind's own fields: what `data` holds.

use super::*;

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
    /// MIG: the GPU instance the Xid is attributed to (`GPU-I:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<u32>,
    /// MIG: the compute instance (`GPU-CI:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance: Option<u32>,
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetLink {
    pub interface: String,
    pub up: bool,
    /// The NIC's PCI address, when the source names it (the kernel log's
    /// driver messages do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciAddress>,
    /// The negotiated speed of a link that came up, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
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
