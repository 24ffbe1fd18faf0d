//! The facility poller's errors. Retryable ones (a device that does not
//! answer) make the device `down` and are tried again after a backoff;
//! permanent ones (a wrong credential, a bad profile) are configuration a
//! person must fix, reported at every poll until they do.

/// Why a device could not be polled, or a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FacilityError {
    #[error("{message}")]
    Config { message: String },
    /// No answer in time.
    #[error("{device}: {protocol} timeout after {after_ms} ms")]
    Timeout {
        device: String,
        protocol: &'static str,
        after_ms: u64,
    },
    /// The network said no (connection refused, unreachable).
    #[error("{device}: {protocol} unreachable: {detail}")]
    Unreachable {
        device: String,
        protocol: &'static str,
        detail: String,
    },
    /// The device refused our credentials (SNMPv3 authentication, HTTP 401).
    /// The message never holds the credential itself.
    #[error("{device}: {protocol} authentication failed: {detail}")]
    Auth {
        device: String,
        protocol: &'static str,
        detail: String,
    },
    /// The device answered with an error or something we cannot read
    /// (SNMP error status, a Modbus exception, invalid JSON).
    #[error("{device}: {protocol} {at}: {detail}")]
    Protocol {
        device: String,
        protocol: &'static str,
        /// The OID, register or path.
        at: String,
        detail: String,
    },
}

impl FacilityError {
    /// Worth polling again without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FacilityError::Timeout { .. }
                | FacilityError::Unreachable { .. }
                | FacilityError::Protocol { .. }
        )
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FacilityError::Config { .. } => "config",
            FacilityError::Timeout { .. } => "timeout",
            FacilityError::Unreachable { .. } => "unreachable",
            FacilityError::Auth { .. } => "auth",
            FacilityError::Protocol { .. } => "protocol",
        }
    }
}
