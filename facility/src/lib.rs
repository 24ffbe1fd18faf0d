//! pitcrew's facility poller: rack PDUs, UPS/battery storage, cooling units
//! and leak detectors, read over SNMP (v2c, v3), Modbus TCP and Redfish, and
//! turned into `facility.*` events.
//!
//! Contract:
//! - one reading of a device part (an outlet, a phase, the UPS, a CDU) per
//!   poll is one event, units normalised (see docs/schema.md);
//! - a device that fails its poll becomes a `facility.device` down event
//!   (at every poll while down) and is polled again after a backoff; it
//!   never holds up another device's poll;
//! - every problem inside an answer (a missing OID, a wrong type, a Modbus
//!   exception, invalid JSON) is counted and logged naming the device and the
//!   OID, register or path, and the rest of the poll is kept;
//! - no secret reaches a log, an error, an event or a metric.
//!
//! [`profile`] (which OIDs mean what) and [`assemble`] (readings into
//! events) are pure; [`snmp`], [`modbus`] and [`redfish`] do the I/O;
//! [`poller`] schedules devices. The Kafka side lives in the binary.

pub mod assemble;
pub mod config;
pub mod error;
pub mod metrics;
pub mod modbus;
pub mod poller;
pub mod profile;
pub mod redfish;
pub mod snmp;
pub mod snmprec;

pub use config::{Address, Credentials, Device, FacilityConfig, PollerSettings};
pub use error::FacilityError;
pub use poller::{PollOutcome, Poller};
pub use profile::{DeviceKind, Profile};
