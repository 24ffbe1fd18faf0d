//! Monotonic counters become deltas.
//!
//! Contract: a delta is never negative. A counter that went down (driver
//! reload, reboot, rollover) gives `delta: 0, reset: true` and becomes the
//! new baseline; so does every counter after [`Counters::new_boot`]. The
//! first reading of a counter is a baseline too: nothing is known about
//! what happened before the agent looked.

use std::collections::HashMap;
use std::hash::Hash;

/// What one reading of a counter means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    pub delta: u64,
    pub total: u64,
    /// The counter restarted (went down, or a new boot): `delta` is 0.
    pub reset: bool,
    /// First reading since the agent (or this boot) started.
    pub first: bool,
}

impl Delta {
    /// Worth an event: new errors, or a reset to report.
    pub fn is_news(&self) -> bool {
        self.delta > 0 || self.reset
    }
}

/// The last value of every counter, by key.
#[derive(Debug)]
pub struct Counters<K> {
    last: HashMap<K, u64>,
    boot_id: Option<String>,
}

impl<K: Eq + Hash> Default for Counters<K> {
    fn default() -> Self {
        Counters {
            last: HashMap::new(),
            boot_id: None,
        }
    }
}

impl<K: Eq + Hash> Counters<K> {
    /// Records `value` for `key` and returns its delta.
    pub fn update(&mut self, key: K, value: u64) -> Delta {
        match self.last.insert(key, value) {
            None => Delta {
                delta: 0,
                total: value,
                reset: false,
                first: true,
            },
            Some(prev) if value < prev => Delta {
                delta: 0,
                total: value,
                reset: true,
                first: false,
            },
            Some(prev) => Delta {
                delta: value - prev,
                total: value,
                reset: false,
                first: false,
            },
        }
    }

    /// Tells the tracker which boot it is in; a change of boot id forgets
    /// every baseline, so counters that restarted at 0 are not read as a
    /// huge negative or positive delta.
    pub fn observe_boot(&mut self, boot_id: &str) {
        if self.boot_id.as_deref() != Some(boot_id) {
            if self.boot_id.is_some() {
                self.last.clear();
            }
            self.boot_id = Some(boot_id.to_owned());
        }
    }

    /// Counters tracked (state size).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_reading_is_a_baseline_then_deltas() {
        let mut c = Counters::default();
        assert_eq!(
            c.update("ecc", 40),
            Delta {
                delta: 0,
                total: 40,
                reset: false,
                first: true
            }
        );
        assert_eq!(
            c.update("ecc", 52),
            Delta {
                delta: 12,
                total: 52,
                reset: false,
                first: false
            }
        );
        assert!(!c.update("ecc", 52).is_news());
    }

    #[test]
    fn a_counter_that_goes_down_is_a_reset_not_a_negative_delta() {
        let mut c = Counters::default();
        c.update("replay", 230);
        let d = c.update("replay", 3);
        assert_eq!(
            d,
            Delta {
                delta: 0,
                total: 3,
                reset: true,
                first: false
            }
        );
        assert!(d.is_news());
        assert_eq!(c.update("replay", 5).delta, 2);
    }

    #[test]
    fn a_new_boot_forgets_baselines() {
        let mut c = Counters::default();
        c.observe_boot("boot-a");
        c.update("link_downed", 3);
        c.observe_boot("boot-a");
        assert_eq!(c.update("link_downed", 4).delta, 1);
        c.observe_boot("boot-b");
        // After the reboot the counter restarted and then rose to 7: that is
        // a baseline, not +3 and not -... anything.
        let d = c.update("link_downed", 7);
        assert!(d.first && d.delta == 0);
    }

    proptest! {
        #[test]
        fn deltas_sum_to_the_rise_and_are_never_negative(values in proptest::collection::vec(0u64..1000, 1..50)) {
            let mut c = Counters::default();
            let mut sum = 0u64;
            let mut expected = 0u64;
            for (i, &v) in values.iter().enumerate() {
                let d = c.update(0u8, v);
                sum += d.delta;
                if i > 0 && v >= values[i - 1] {
                    expected += v - values[i - 1];
                }
                prop_assert_eq!(d.total, v);
            }
            prop_assert_eq!(sum, expected);
        }
    }
}
