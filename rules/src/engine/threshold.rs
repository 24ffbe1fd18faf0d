//! Thresholds over windows: hysteresis, `for` and `clear_for`.

use super::*;

impl Engine {
    pub(super) fn eval_threshold(
        &mut self,
        rule: &Rule,
        ri: usize,
        event: &Event,
        window: Option<&WindowSpec>,
        th: &Threshold,
        x: f64,
    ) {
        let t = event.time;
        let exists = self.rules[ri].keys.contains_key(self.key_buf.as_str());
        if !exists && window.is_none() && !th.firing_condition(x) {
            return;
        }
        let Some(st) = self.key_state(ri, event, || {
            KeyData::Threshold(ThresholdState {
                ring: window.map(|w| Ring::new(w.buckets)),
                ..ThresholdState::default()
            })
        }) else {
            return;
        };
        let KeyData::Threshold(ts) = &mut st.data else {
            return;
        };
        let value = match (window, ts.ring.as_mut()) {
            (Some(w), Some(r)) => {
                r.add(w, t, x);
                r.value(w, t)
            }
            _ => Some(x),
        };
        let key: String = self.key_buf.clone();
        self.step_threshold(rule, ri, &key, t, value, Some(event));
    }

    /// Moves a threshold key's state machine at `t` given the current value.
    pub(super) fn step_threshold(
        &mut self,
        rule: &Rule,
        ri: usize,
        key: &str,
        t: Timestamp,
        value: Option<f64>,
        event: Option<&Event>,
    ) {
        let Logic::Threshold {
            window,
            threshold: th,
            ..
        } = &rule.logic
        else {
            return;
        };
        let Some(st) = self.rules[ri].keys.get_mut(key) else {
            return;
        };
        let (node, gpu, job) = (
            st.node.to_string(),
            st.gpu,
            st.job.as_deref().map(str::to_owned),
        );
        let KeyData::Threshold(ts) = &mut st.data else {
            return;
        };
        if let Some(v) = value {
            ts.last_value = v;
        }
        let mut fire = false;
        let mut resolve = false;
        let mut next: Option<Timestamp> = None;
        if !ts.firing {
            let cond = value.is_some_and(|v| th.firing_condition(v));
            match debounce(&mut ts.pending_since, cond, t, th.hold_for) {
                Held::Done => {
                    fire = true;
                    ts.firing = true;
                    ts.clear_since = None;
                }
                Held::Until(due) => next = Some(due),
                Held::No => {}
            }
        } else {
            let clear = value.is_none_or(|v| th.clear_condition(v));
            match debounce(&mut ts.clear_since, clear, t, th.clear_for) {
                Held::Done => {
                    resolve = true;
                    ts.firing = false;
                }
                Held::Until(due) => next = Some(due),
                Held::No => {}
            }
        }
        // Windows change as buckets leave them: look again then.
        if let (Some(w), Some(r)) = (window, ts.ring.as_ref()) {
            if ts.firing || ts.pending_since.is_some() {
                if let Some(e) = r.next_expiry(w, t) {
                    next = Some(next.map_or(e, |n| n.min(e)));
                }
            }
        }
        let remove = !ts.firing
            && ts.pending_since.is_none()
            && match (window, ts.ring.as_ref()) {
                (Some(w), Some(r)) => r.is_empty(w, t),
                _ => true,
            };
        let schedule = match next {
            Some(n) if ts.timer_at != Some(n) => {
                ts.timer_at = Some(n);
                Some(n)
            }
            _ => None,
        };
        let last_value = ts.last_value;
        if remove {
            self.rules[ri].keys.remove(key);
        }
        if let Some(n) = schedule {
            self.push_timer(
                n,
                TimerKind::Key {
                    rule: ri,
                    key: key.into(),
                },
            );
        }
        if fire {
            let events = event.map(|e| vec![e.id.clone()]).unwrap_or_default();
            self.raise(Fire {
                rule: ri,
                key,
                node: &node,
                gpu,
                job: job.as_deref(),
                at: t,
                event,
                events,
                value: Some(last_value),
                members: None,
            });
        } else if resolve {
            self.resolve_rule_key(ri, key, &node, gpu, job.as_deref(), t);
        } else if event.is_some() && !remove {
            // Keep-firing: a further event feeds the open incident.
            if let Some(e) = event {
                if self.rules[ri]
                    .keys
                    .get(key)
                    .is_some_and(|s| matches!(&s.data, KeyData::Threshold(ts) if ts.firing))
                {
                    self.evidence(ri, key, &node, gpu, job.as_deref(), e);
                }
            }
        }
    }
}

/// Where a condition that must hold for a while stands.
pub(super) enum Held {
    /// It does not hold (and its start is forgotten).
    No,
    /// It holds, and will have held long enough at this time.
    Until(Timestamp),
    /// It has held long enough (and its start is forgotten).
    Done,
}

/// Tracks how long `cond` has held (`for`, `clear_for`) in `since`.
pub(super) fn debounce(
    since: &mut Option<Timestamp>,
    cond: bool,
    t: Timestamp,
    hold: Span,
) -> Held {
    if !cond {
        *since = None;
        return Held::No;
    }
    let start = *since.get_or_insert(t);
    if t.unix_nanos() - start.unix_nanos() >= hold.0 {
        *since = None;
        Held::Done
    } else {
        Held::Until(start.add_nanos(hold.0))
    }
}
