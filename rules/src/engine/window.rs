//! Sliding windows in fixed steps: a ring of buckets, whatever the event
//! rate.

use super::*;

#[derive(Debug)]
pub(super) struct Bucket {
    idx: i64,
    n: u32,
    v: f64,
}

/// A sliding window in fixed steps: a ring of buckets.
#[derive(Debug)]
pub(super) struct Ring {
    pub(super) slots: Box<[Bucket]>,
}

impl Ring {
    pub(super) fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n)
                .map(|_| Bucket {
                    idx: i64::MIN,
                    n: 0,
                    v: 0.0,
                })
                .collect(),
        }
    }

    pub(super) fn add(&mut self, w: &WindowSpec, t: Timestamp, x: f64) {
        let idx = t.unix_nanos().div_euclid(w.step.0);
        let len = self.slots.len() as i64;
        let slot = &mut self.slots[idx.rem_euclid(len) as usize];
        if slot.idx != idx {
            if slot.idx > idx {
                return; // older than the window: nothing to add to
            }
            *slot = Bucket {
                idx,
                n: 0,
                v: match w.agg {
                    Agg::Min => f64::INFINITY,
                    Agg::Max => f64::NEG_INFINITY,
                    _ => 0.0,
                },
            };
        }
        slot.n += 1;
        slot.v = match w.agg {
            Agg::Min => slot.v.min(x),
            Agg::Max => slot.v.max(x),
            _ => slot.v + x,
        };
    }

    pub(super) fn live(&self, w: &WindowSpec, now: Timestamp) -> impl Iterator<Item = &Bucket> {
        let cur = now.unix_nanos().div_euclid(w.step.0);
        let len = self.slots.len() as i64;
        self.slots
            .iter()
            .filter(move |b| b.n > 0 && b.idx > cur - len && b.idx <= cur)
    }

    pub(super) fn value(&self, w: &WindowSpec, now: Timestamp) -> Option<f64> {
        let (mut n, mut v) = (
            0u64,
            match w.agg {
                Agg::Min => f64::INFINITY,
                Agg::Max => f64::NEG_INFINITY,
                _ => 0.0,
            },
        );
        for b in self.live(w, now) {
            n += u64::from(b.n);
            v = match w.agg {
                Agg::Min => v.min(b.v),
                Agg::Max => v.max(b.v),
                _ => v + b.v,
            };
        }
        let secs = w.over.as_secs_f64();
        match w.agg {
            Agg::Count => Some(n as f64),
            Agg::Rate if w.field.is_none() => Some(n as f64 / secs),
            Agg::Rate => Some(v / secs),
            Agg::Sum => Some(v),
            _ if n == 0 => None,
            Agg::Avg => Some(v / n as f64),
            Agg::Min | Agg::Max => Some(v),
        }
    }

    /// When the oldest live bucket leaves the window.
    pub(super) fn next_expiry(&self, w: &WindowSpec, now: Timestamp) -> Option<Timestamp> {
        let len = self.slots.len() as i64;
        self.live(w, now)
            .map(|b| Timestamp::from_unix_nanos((b.idx + len) * w.step.0))
            .min()
    }

    pub(super) fn is_empty(&self, w: &WindowSpec, now: Timestamp) -> bool {
        self.live(w, now).next().is_none()
    }
}
