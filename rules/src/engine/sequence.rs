//! Sequences: a first event followed by another within a time.

use super::*;

impl Engine {
    pub(super) fn eval_sequence(
        &mut self,
        ri: usize,
        event: &Event,
        is_first: bool,
        is_then: bool,
        within: Span,
        negate: bool,
    ) {
        let max_pending = self.cfg.max_pending_per_sequence;
        let t = event.time;
        let key = self.key_buf.clone();
        let exists = self.rules[ri].keys.contains_key(key.as_str());
        if !exists && !is_first {
            return;
        }
        let mut fire_with: Option<Vec<String>> = None;
        let mut schedule = None;
        let mut overflow = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::Sequence(VecDeque::new())) else {
                return;
            };
            let KeyData::Sequence(q) = &mut st.data else {
                return;
            };
            // Steps older than `within` can no longer pair.
            while q
                .front()
                .is_some_and(|(ft, _)| t.unix_nanos() - ft.unix_nanos() > within.0 && !negate)
            {
                q.pop_front();
            }
            if is_then {
                if negate {
                    // B arrived: every pending A at or before it is answered.
                    q.retain(|(ft, _)| *ft > t);
                } else if let Some((_, fid)) = q
                    .iter()
                    .find(|(ft, _)| *ft <= t && t.unix_nanos() - ft.unix_nanos() <= within.0)
                {
                    fire_with = Some(vec![fid.to_string(), event.id.clone()]);
                    q.clear();
                }
            }
            if is_first && fire_with.is_none() {
                if q.len() >= max_pending {
                    q.pop_front();
                    overflow = true;
                }
                q.push_back((t, event.id.as_str().into()));
                if negate {
                    schedule = Some(t.add_nanos(within.0));
                }
            }
        }
        if overflow {
            self.stats.overflow += 1;
        }
        if let Some(at) = schedule {
            self.push_timer(
                at,
                TimerKind::Key {
                    rule: ri,
                    key: key.as_str().into(),
                },
            );
        }
        if let Some(events) = fire_with {
            self.raise(Fire::of_event(ri, &key, event, events));
        }
        if self.rules[ri]
            .keys
            .get(key.as_str())
            .is_some_and(|s| matches!(&s.data, KeyData::Sequence(q) if q.is_empty()))
        {
            self.rules[ri].keys.remove(key.as_str());
        }
    }
}
