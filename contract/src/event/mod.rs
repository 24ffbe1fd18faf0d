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
    /// `pitcrew facility`, the poller of PDUs, UPSes and cooling units.
    Facility,
    /// The node agent's Redfish BMC reader.
    Redfish,
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
            Source::Facility => "facility",
            Source::Redfish => "redfish",
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
            "facility" => Source::Facility,
            "redfish" => Source::Redfish,
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
    /// A rack PDU's reading: the unit, a phase, a bank, an outlet or a probe.
    FacilityPdu(PduReading) = "facility.pdu";
    /// A UPS or battery storage system.
    FacilityUps(UpsReading) = "facility.ups";
    /// A CDU, CRAC or CRAH and its loop.
    FacilityCooling(CoolingReading) = "facility.cooling";
    /// A leak detector.
    FacilityLeak(LeakReading) = "facility.leak";
    /// A facility device answers its poll or not.
    FacilityDevice(DeviceReachability) = "facility.device";
}

impl EventKind {
    /// `gpu.*` events must name their GPU.
    pub fn requires_gpu(self) -> bool {
        self.as_str().starts_with("gpu.")
    }

    /// `facility.*` events are about a facility device (named in `node`)
    /// and the racks it serves, not about a node.
    pub fn is_facility(self) -> bool {
        self.as_str().starts_with("facility.")
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

mod body;
mod facility;
mod wire;

pub use body::*;
pub use facility::*;
pub(crate) use wire::{DATA_PREFIX, DATA_SEPARATOR, FIELD_PREFIX};
pub use wire::{MAX_ID_LEN, MAX_LABELS, MAX_NODE_LEN};
