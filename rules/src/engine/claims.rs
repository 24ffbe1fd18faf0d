//! Claims: a parent incident (a fan-in, a more specific rule) suppresses
//! the incidents of the rules it names whose member falls in its group.

use super::*;

impl Engine {
    /// The id of an open parent incident that claims `child` (of rule `ri`).
    pub(super) fn parent_for(&self, ri: usize, child: &Open) -> Option<String> {
        let mut best: Option<&Open> = None;
        for o in self.open.values() {
            if o.inc.status != IncidentStatus::Open || o.held_until.is_some() {
                continue;
            }
            let p = &self.program.rules[o.rule];
            if o.rule != ri
                && p.suppresses.contains(&ri)
                && self.claims(p, o, child)
                && best.is_none_or(|b| o.inc.id < b.inc.id)
            {
                best = Some(o);
            }
        }
        best.map(|o| o.inc.id.clone())
    }

    /// Whether a parent incident covers a child's member: the child's node
    /// is in the fan-in's group, or (a more specific rule superseding a
    /// general one) the child is on the same node and GPU.
    pub(super) fn claims(&self, parent_rule: &Rule, parent: &Open, child: &Open) -> bool {
        let Some(node) = child.node.as_deref() else {
            return false;
        };
        if let Logic::FanIn { .. } = parent_rule.logic {
            let Some(dim) = parent_rule.key.first() else {
                return false;
            };
            let name = match dim {
                Dim::Node => Some(node),
                Dim::Job => child.job.as_deref(),
                d => self.topology(d, node),
            };
            name.is_some_and(|n| n == parent.inc.blame.name)
        } else {
            parent.node.as_deref() == Some(node)
                && match (parent.gpu, child.gpu) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        }
    }

    /// A parent opened: claim the held and open incidents of the rules it
    /// suppresses whose member falls in its group.
    pub(super) fn claim_children(&mut self, slot_of_parent: &str, pi: usize) {
        let program = Arc::clone(&self.program);
        let prule = &program.rules[pi];
        if prule.suppresses.is_empty() {
            return;
        }
        let Some(parent) = self.open.get(slot_of_parent).cloned() else {
            return;
        };
        let mut claimed = Vec::new();
        for (slot, o) in &self.open {
            if !prule.suppresses.contains(&o.rule) || o.inc.status != IncidentStatus::Open {
                continue;
            }
            if self.claims(prule, &parent, o) {
                claimed.push(slot.clone());
            }
        }
        for slot in claimed {
            let Some(mut o) = self.open.remove(&slot) else {
                continue;
            };
            o.inc.status = IncidentStatus::Suppressed;
            o.inc.parent = Some(parent.inc.id.clone());
            let was_held = o.held_until.take().is_some();
            if was_held {
                // Never published: it appears once, as suppressed.
                self.publish_open(slot, o);
            } else {
                o.inc.at = parent.inc.at;
                self.out.push(Output::Incident(o.inc.clone()));
                self.open.insert(slot, o);
            }
        }
    }
}
