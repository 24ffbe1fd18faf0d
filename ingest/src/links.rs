//! One link change, one event: the kernel log (the NIC driver's "NIC Link
//! is Down", bonding's "link status definitely down") and sysfs's carrier
//! reading both see the same transition. The first to arrive is kept; a
//! second saying the same state of the same interface within the window is
//! dropped and counted. Alternating states (a flapping link) always pass.
//!
//! State is one entry per interface, bounded by the host's interfaces
//! (and capped: past `MAX_INTERFACES` everything passes).

use std::collections::HashMap;

use pitcrew_contract::{Event, EventData, Timestamp};

const MAX_INTERFACES: usize = 1024;

/// The last reported state of each interface.
#[derive(Debug)]
pub struct LinkStates {
    window_nanos: i64,
    last: HashMap<String, (bool, Timestamp)>,
    dropped: u64,
}

impl LinkStates {
    pub fn new(window: std::time::Duration) -> LinkStates {
        LinkStates {
            window_nanos: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            last: HashMap::new(),
            dropped: 0,
        }
    }

    /// Whether `ev` should be sent: anything but a `net.link` repeating
    /// the state just reported for its interface.
    pub fn keep(&mut self, ev: &Event) -> bool {
        let EventData::NetLink(l) = &ev.data else {
            return true;
        };
        if let Some((up, at)) = self.last.get(&l.interface) {
            let close = (ev.time.unix_nanos() - at.unix_nanos()).abs() <= self.window_nanos;
            if *up == l.up && close {
                self.dropped += 1;
                return false;
            }
        }
        if self.last.len() < MAX_INTERFACES || self.last.contains_key(&l.interface) {
            self.last.insert(l.interface.clone(), (l.up, ev.time));
        }
        true
    }

    /// Duplicates dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pitcrew_contract::{examples, EventKind, NetLink, Source};

    fn link(source: Source, iface: &str, up: bool, secs: i64) -> Event {
        let mut e = examples::event(EventKind::NetLink);
        e.source = source;
        e.time = Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000);
        e.data = EventData::NetLink(NetLink {
            interface: iface.into(),
            up,
            ..NetLink::default()
        });
        e
    }

    #[test]
    fn the_driver_line_and_the_carrier_reading_make_one_event() {
        let mut s = LinkStates::new(std::time::Duration::from_secs(30));
        // The kernel line first, then sysfs's reading of the same change.
        assert!(s.keep(&link(Source::Kmsg, "eth1", false, 0)));
        assert!(!s.keep(&link(Source::Sysfs, "eth1", false, 1)));
        // Another interface is another link.
        assert!(s.keep(&link(Source::Sysfs, "eth2", false, 1)));
        // A flap: every change passes, each once.
        assert!(s.keep(&link(Source::Sysfs, "eth1", true, 2)));
        assert!(!s.keep(&link(Source::Kmsg, "eth1", true, 2)));
        assert!(s.keep(&link(Source::Kmsg, "eth1", false, 3)));
        // The same state long after is news again (a re-announcement).
        assert!(s.keep(&link(Source::Kmsg, "eth1", false, 100)));
        // Other kinds are untouched.
        assert!(s.keep(&examples::event(EventKind::GpuXid)));
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.len(), 2);
    }
}
