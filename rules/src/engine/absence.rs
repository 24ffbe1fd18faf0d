//! Absence: a key (or an inventory node) silent for longer than `after`.

use super::*;

impl Engine {
    pub(super) fn eval_absence(&mut self, rule: &Rule, ri: usize, event: &Event) {
        let Logic::Absence { after, .. } = rule.logic else {
            return;
        };
        let t = event.time;
        let key = self.key_buf.clone();
        let mut new_key = false;
        let mut was_firing = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::Absence {
                last_seen: Timestamp::EPOCH,
                firing: false,
            }) else {
                return;
            };
            if let KeyData::Absence { last_seen, firing } = &mut st.data {
                if *last_seen == Timestamp::EPOCH {
                    new_key = true;
                }
                if t > *last_seen {
                    *last_seen = t;
                }
                was_firing = std::mem::take(firing);
            }
        }
        if new_key {
            self.push_timer(
                t.add_nanos(after.0),
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
        if was_firing {
            let node = event.node.clone();
            self.resolve_rule_key(ri, &key, &node, gpu_index(event), job_of(event), t);
            self.push_timer(
                t.add_nanos(after.0),
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
    }
}
