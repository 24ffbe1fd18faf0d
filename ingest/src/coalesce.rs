//! Coalescing identical repeats. A flapping link or a chatty corrected-AER
//! device can log the same record hundreds of times a second; the rules
//! need to know it happened and how often, not to read every copy.
//!
//! Contract: the first occurrence of an event is emitted at once (no
//! latency added to the first signal of a fault); identical events (same
//! kind, GPU and data; only id and time differ) within `window` of that
//! first one are absorbed, and when the window closes one summary event is
//! emitted with `count` = the number absorbed. Counts are conserved: the
//! `count`s of everything emitted add up to the number of events pushed.
//! State is bounded: past `max_keys` open windows, events pass through
//! uncoalesced.

use std::collections::HashMap;

use pitcrew_contract::{deterministic_id, encode, Event, Timestamp};

#[derive(Debug)]
struct Open {
    /// The first event's id, time, and how many copies came since.
    first: Event,
    repeats: u32,
    last_time: Timestamp,
}

/// Coalesces identical events within a window.
#[derive(Debug)]
pub struct Coalescer {
    window_nanos: i64,
    max_keys: usize,
    open: HashMap<Vec<u8>, Open>,
    passed_through: u64,
}

impl Coalescer {
    pub fn new(window: std::time::Duration, max_keys: usize) -> Coalescer {
        Coalescer {
            window_nanos: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            max_keys,
            open: HashMap::new(),
            passed_through: 0,
        }
    }

    /// What makes two events "identical": everything but id, time, count.
    fn signature(ev: &Event) -> Vec<u8> {
        let mut probe = ev.clone();
        probe.id = String::new();
        probe.time = Timestamp::EPOCH;
        probe.count = 1;
        encode(&probe)
    }

    /// Pushes one event; what should be emitted now goes to `out`.
    pub fn push(&mut self, ev: Event, out: &mut Vec<Event>) {
        self.expire(ev.time, out);
        let sig = Self::signature(&ev);
        if let Some(open) = self.open.get_mut(&sig) {
            open.repeats = open.repeats.saturating_add(ev.count.max(1));
            open.last_time = ev.time;
            return;
        }
        if self.open.len() >= self.max_keys {
            self.passed_through += 1;
            out.push(ev);
            return;
        }
        out.push(ev.clone());
        self.open.insert(
            sig,
            Open {
                last_time: ev.time,
                first: ev,
                repeats: 0,
            },
        );
    }

    /// Closes windows that ended before `now`.
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        let window = self.window_nanos;
        let closed: Vec<Vec<u8>> = self
            .open
            .iter()
            .filter(|(_, o)| now.unix_nanos().saturating_sub(o.first.time.unix_nanos()) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut summaries: Vec<Event> = closed
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .filter_map(summary)
            .collect();
        summaries.sort_by_key(|e| e.time);
        out.extend(summaries);
    }

    /// Closes every window (shutdown, end of a file).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        let mut summaries: Vec<Event> = self.open.drain().filter_map(|(_, o)| summary(o)).collect();
        summaries.sort_by_key(|e| e.time);
        out.extend(summaries);
    }

    /// Open windows (state size).
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Events that passed uncoalesced because the state was full.
    pub fn passed_through(&self) -> u64 {
        self.passed_through
    }
}

/// The event that stands for the absorbed copies of a window, if any.
fn summary(o: Open) -> Option<Event> {
    if o.repeats == 0 {
        return None;
    }
    let mut ev = o.first;
    ev.id = deterministic_id("repeat", &[&ev.id, &o.repeats.to_string()]);
    ev.time = o.last_time;
    ev.count = o.repeats;
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitcrew_contract::{examples, EventKind};
    use proptest::prelude::*;
    use std::time::Duration;

    fn at(ev: &Event, ms: i64) -> Event {
        let mut e = ev.clone();
        e.time = Timestamp::from_unix_millis(ms);
        e.id = format!("{}-{ms}", ev.id);
        e
    }

    #[test]
    fn first_now_repeats_as_one_summary() {
        let aer = examples::event(EventKind::PcieAer);
        let mut c = Coalescer::new(Duration::from_secs(1), 100);
        let mut out = Vec::new();
        for ms in 0..100 {
            c.push(at(&aer, ms * 5), &mut out);
        }
        assert_eq!(out.len(), 1, "only the first so far");
        assert_eq!(out[0].count, 1);
        c.expire(Timestamp::from_unix_millis(1000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].count, 99);
        assert_eq!(out[1].time, Timestamp::from_unix_millis(495));
        assert_ne!(out[1].id, out[0].id);
    }

    #[test]
    fn different_events_are_not_merged() {
        let a = examples::event(EventKind::PcieAer);
        let mut b = a.clone();
        b.node = "n18".to_owned();
        let mut c = Coalescer::new(Duration::from_secs(1), 100);
        let mut out = Vec::new();
        c.push(at(&a, 0), &mut out);
        c.push(at(&b, 1), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn full_state_passes_events_through() {
        let a = examples::event(EventKind::PcieAer);
        let mut c = Coalescer::new(Duration::from_secs(1), 1);
        let mut out = Vec::new();
        let mut other = a.clone();
        other.node = "n99".to_owned();
        c.push(at(&a, 0), &mut out);
        c.push(at(&other, 1), &mut out);
        c.push(at(&other, 2), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(c.passed_through(), 2);
    }

    proptest! {
        #[test]
        fn counts_are_conserved(gaps in proptest::collection::vec((0i64..400, 0usize..3), 1..200)) {
            let kinds = [EventKind::PcieAer, EventKind::HostEdac, EventKind::NetLink];
            let mut c = Coalescer::new(Duration::from_millis(500), 2);
            let mut out = Vec::new();
            let mut t = 0;
            for (gap, k) in &gaps {
                t += gap;
                c.push(at(&examples::event(kinds[*k]), t), &mut out);
            }
            c.flush(&mut out);
            let total: u64 = out.iter().map(|e| u64::from(e.count)).sum();
            prop_assert_eq!(total, gaps.len() as u64);
        }
    }
}
