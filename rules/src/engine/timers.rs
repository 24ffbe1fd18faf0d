//! What timers do when the watermark passes them: key timers (absence,
//! `for`, sequences, fan-in expiry), holds and quiet-time resolves.

use super::*;

impl Engine {
    pub(super) fn on_key_timer(&mut self, ri: usize, key: &str, at: Timestamp) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        match &rule.logic {
            Logic::Threshold { window, .. } => {
                let value = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let KeyData::Threshold(ts) = &mut st.data else {
                        return;
                    };
                    if ts.timer_at != Some(at) {
                        return;
                    }
                    ts.timer_at = None;
                    match (window, ts.ring.as_ref()) {
                        (Some(w), Some(r)) => r.value(w, at),
                        _ => Some(ts.last_value),
                    }
                };
                self.step_threshold(rule, ri, key, at, value, None);
            }
            Logic::Absence { after, .. } => {
                let (node, due) = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let node = st.node.to_string();
                    let KeyData::Absence { last_seen, firing } = &mut st.data else {
                        return;
                    };
                    if *firing {
                        return;
                    }
                    let due = last_seen.add_nanos(after.0);
                    if due > at {
                        (node, Some(due))
                    } else {
                        *firing = true;
                        (node, None)
                    }
                };
                match due {
                    Some(d) => self.push_timer(
                        d,
                        TimerKind::Key {
                            rule: ri,
                            key: key.into(),
                        },
                    ),
                    None => {
                        let last_seen = match self.rules[ri].keys.get(key).map(|s| &s.data) {
                            Some(KeyData::Absence { last_seen, .. }) => *last_seen,
                            _ => at,
                        };
                        let marker = format!("absent:{key}:{}", last_seen.unix_nanos());
                        self.raise(Fire::of_timer(ri, key, &node, at, marker));
                    }
                }
            }
            Logic::Sequence {
                within,
                negate: true,
                ..
            } => {
                let fired: Option<(String, String)> = {
                    let Some(st) = self.rules[ri].keys.get_mut(key) else {
                        return;
                    };
                    let node = st.node.to_string();
                    let KeyData::Sequence(q) = &mut st.data else {
                        return;
                    };
                    match q.front() {
                        Some((ft, id)) if ft.add_nanos(within.0) <= at => {
                            let id = id.to_string();
                            q.pop_front();
                            Some((node, id))
                        }
                        _ => None,
                    }
                };
                if let Some((node, id)) = fired {
                    self.raise(Fire::of_timer(ri, key, &node, at, id));
                }
                if self.rules[ri]
                    .keys
                    .get(key)
                    .is_some_and(|s| matches!(&s.data, KeyData::Sequence(q) if q.is_empty()))
                {
                    self.rules[ri].keys.remove(key);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_held_timer(&mut self, slot: &str, at: Timestamp) {
        let Some(o) = self.open.get(slot) else { return };
        if o.held_until != Some(at) {
            return;
        }
        let Some(mut o) = self.open.remove(slot) else {
            return;
        };
        o.held_until = None;
        if let Some(parent) = self.parent_for(o.rule, &o) {
            o.inc.status = IncidentStatus::Suppressed;
            o.inc.parent = Some(parent);
        }
        self.publish_open(slot.to_owned(), o);
    }

    pub(super) fn on_quiet_timer(&mut self, slot: &str) {
        let Some(o) = self.open.get(slot) else { return };
        if o.held_until.is_some() {
            return;
        }
        let Some(q) = o.quiet else { return };
        let due = o.last_at.add_nanos(q.0);
        if due > self.watermark {
            self.push_timer(due, TimerKind::Quiet { slot: slot.into() });
            return;
        }
        self.close(slot, due);
    }
}
