//! Fan-in: distinct members of a topology group within a window.

use super::*;

impl Engine {
    pub(super) fn eval_fan_in(
        &mut self,
        ri: usize,
        event: &Event,
        member: String,
        min: u32,
        within: Span,
    ) {
        let t = event.time;
        let key = self.key_buf.clone();
        let max_members = self.cfg.max_members_per_group;
        let mut overflow = false;
        let mut fire: Option<(Vec<String>, usize)> = None;
        let mut evidence = false;
        {
            let Some(st) = self.key_state(ri, event, || KeyData::FanIn {
                members: FxMap::default(),
                firing: false,
            }) else {
                return;
            };
            let KeyData::FanIn { members, firing } = &mut st.data else {
                return;
            };
            let cutoff = t.unix_nanos() - within.0;
            if members.len() >= max_members {
                members.retain(|_, (mt, _)| mt.unix_nanos() >= cutoff);
            }
            if members.len() >= max_members && !members.contains_key(member.as_str()) {
                overflow = true;
            } else {
                members.insert(member.into(), (t, event.id.as_str().into()));
            }
            let live = members
                .values()
                .filter(|(mt, _)| mt.unix_nanos() >= cutoff)
                .count();
            if !*firing && live >= min as usize {
                *firing = true;
                let mut ev: Vec<(Timestamp, &str)> = members
                    .values()
                    .filter(|(mt, _)| mt.unix_nanos() >= cutoff)
                    .map(|(mt, id)| (*mt, &**id))
                    .collect();
                ev.sort();
                fire = Some((ev.into_iter().map(|(_, id)| id.to_owned()).collect(), live));
                members.retain(|_, (mt, _)| mt.unix_nanos() >= cutoff);
            } else if *firing {
                evidence = true;
            }
        }
        if overflow {
            self.stats.overflow += 1;
        }
        if let Some((events, live)) = fire {
            self.raise(Fire {
                value: Some(live as f64),
                members: Some(live),
                ..Fire::of_event(ri, &key, event, events)
            });
        } else if evidence {
            let node = event.node.clone();
            self.evidence(ri, &key, &node, gpu_index(event), job_of(event), event);
        }
    }
}
