//! Where the worker's time comes from.
//!
//! Waits and deadlines are on tokio's clock (`tokio::time`), never the
//! thread's; timestamps in audit and state records come from a [`Clock`].
//! Under `#[tokio::test(start_paused = true)]` with [`Clock::tokio_at`],
//! both move together on virtual time: a test of a 10-minute approval TTL
//! or a verification window takes no wall time and no test sleeps.

use pitcrew_contract::Timestamp;

/// The source of the worker's timestamps.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock (production: audit times line up with every
    /// other system's).
    #[default]
    System,
    /// Tokio's clock, anchored at `base` when it was made.
    Tokio {
        base: Timestamp,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// Timestamps that follow tokio's clock from `base` on.
    pub fn tokio_at(base: Timestamp) -> Clock {
        Clock::Tokio {
            base,
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Tokio { base, origin } => {
                base.add_nanos(i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX))
            }
        }
    }
}
