//! pitcrew's wire contract.
//!
//! Every message on pitcrew's topics is one of these types, as JSON with a
//! `"v": 1` version field. This crate is the API boundary between stages
//! and with anything else that feeds pitcrew: `docs/schema.md` documents
//! every field, and a change here is a versioned change.
//!
//! Contract: [`decode`] never panics; every failure is a [`DecodeError`]
//! that names the field (or byte, or line and column). The crate does no
//! I/O and reads no clock except [`Timestamp::now`], which only binaries
//! and collectors call.

mod action;
mod audit;
mod decode;
pub mod dlq;
mod event;
pub mod examples;
mod id;
mod incident;
mod keyed;
mod pci;
mod state;
mod target;
mod time;
mod version;

pub use action::ActionRequest;
pub use audit::{AuditEntry, AuditRecord};
pub use decode::{decode, decode_with_limit, encode, DecodeError, DEFAULT_MAX_MESSAGE_BYTES};
pub use event::*;
pub use id::deterministic_id;
pub use incident::{Incident, IncidentStatus, PlanRequest, Severity};
pub use keyed::Keyed;
pub use pci::{PciAddress, PciAddressError};
pub use state::{BreakerState, Intent, OpenPage, Owned, Phase, RemediationState};
pub use target::{Target, TargetKind};
pub use time::{Timestamp, TimestampError};
pub use version::{V1, WIRE_VERSION};
