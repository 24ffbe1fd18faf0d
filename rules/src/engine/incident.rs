//! Incidents: blame, summaries, open/hold/suppress, evidence, keep-firing
//! updates and resolves.

use super::*;

impl Engine {
    // ---- incidents --------------------------------------------------------

    pub(super) fn blame(&self, rule: &Rule, f: &Fire<'_>) -> Target {
        let (kind, dim) = &rule.blame;
        let name = match (kind, dim) {
            (TargetKind::Gpu, _) => match f.gpu {
                Some(g) => format!("{}/{g}", f.node),
                None => f.key.to_owned(),
            },
            (TargetKind::Node, _) | (TargetKind::Link, _) => f.node.to_owned(),
            (TargetKind::Job, _) => f.job.map_or_else(|| f.key.to_owned(), str::to_owned),
            (_, d) => {
                if matches!(rule.logic, Logic::FanIn { .. }) {
                    f.key.to_owned()
                } else {
                    self.topology(d, f.node)
                        .map_or_else(|| f.key.to_owned(), str::to_owned)
                }
            }
        };
        Target::new(*kind, name)
    }

    pub(super) fn render(&self, tpl: &Template, rule: &Rule, f: &Fire<'_>, count: u64) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for p in &tpl.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Key => s.push_str(f.key),
                Part::Rule => s.push_str(&rule.name),
                Part::Count => {
                    let _ = write!(s, "{count}");
                }
                Part::Members => {
                    let _ = write!(s, "{}", f.members.unwrap_or(0));
                }
                Part::Value => match f.value {
                    Some(v) => Val::Num((v * 1000.0).round() / 1000.0).render(&mut s),
                    None => s.push('?'),
                },
                Part::Dim(Dim::Node) => s.push_str(f.node),
                Part::Dim(Dim::Gpu) => match f.gpu {
                    Some(g) => {
                        let _ = write!(s, "{g}");
                    }
                    None => s.push('?'),
                },
                Part::Dim(Dim::Job) => s.push_str(f.job.unwrap_or("?")),
                Part::Dim(d) => {
                    if matches!(rule.logic, Logic::FanIn { .. })
                        && rule
                            .key
                            .first()
                            .is_some_and(|k| std::mem::discriminant(k) == std::mem::discriminant(d))
                    {
                        s.push_str(f.key);
                    } else {
                        s.push_str(self.topology(d, f.node).unwrap_or("?"));
                    }
                }
                Part::Field(fr) => match f.event {
                    Some(e) => read(fr, e, &self.program.labels).render(&mut s),
                    None => s.push('?'),
                },
            }
        }
        s
    }

    /// A rule fired for a key: open (or hold, or suppress) an incident, or
    /// add evidence to the open one of the same group and target.
    pub(super) fn raise(&mut self, f: Fire<'_>) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[f.rule];
        let target = self.blame(rule, &f);
        let slot = slot_key(rule, &target, f.key);
        if let Some(open) = self.open.get_mut(&slot) {
            add_evidence(open, &f.events, f.at, self.cfg.max_events_per_incident);
            self.maybe_update(&slot);
            return;
        }
        let first = f.events.first().cloned().unwrap_or_default();
        let id = Incident::make_id(&rule.group, &target.key(), &first);
        let mut severity = rule.severity;
        let mut plan = rule.plan.clone();
        let mut summary_tpl = &rule.summary;
        // A repeat offender asks for more.
        let hist = self.history.entry(slot.clone()).or_default();
        if let Some(rep) = &rule.repeat {
            while hist
                .front()
                .is_some_and(|t| f.at.unix_nanos() - t.unix_nanos() > rep.within.0)
            {
                hist.pop_front();
            }
            if hist.len() + 1 >= rep.count as usize {
                severity = rep.severity.unwrap_or(severity);
                if rep.plan.is_some() {
                    plan = rep.plan.clone();
                }
                if let Some(s) = &rep.summary {
                    summary_tpl = s;
                }
            }
        }
        hist.push_back(f.at);
        if hist.len() > 64 {
            hist.pop_front();
        }
        let summary = self.render(summary_tpl, rule, &f, f.events.len() as u64);
        let mut labels = rule.labels.clone();
        if let Some(j) = f.job {
            labels.entry("job".into()).or_insert_with(|| j.to_owned());
        }
        let mut events = f.events.clone();
        events.truncate(self.cfg.max_events_per_incident);
        let inc = Incident {
            v: V1,
            id,
            status: IncidentStatus::Open,
            rule: rule.name.clone(),
            key: f.key.to_owned(),
            severity,
            blame: target,
            summary,
            opened_at: f.at,
            at: f.at,
            events,
            event_count: f.events.len() as u64,
            plan: plan.map(|p| PlanRequest {
                plan: p.name,
                params: p.params,
            }),
            parent: None,
            labels,
        };
        let quiet = match rule.logic {
            Logic::Threshold { .. } | Logic::Absence { .. } => None,
            _ => Some(rule.resolve_after),
        };
        let mut open = Open {
            inc,
            rule: f.rule,
            node: Some(f.node.to_owned()),
            gpu: f.gpu,
            job: f.job.map(str::to_owned),
            last_at: f.at,
            next_update: 2,
            quiet,
            held_until: None,
        };
        // Claimed already by an open parent?
        if let Some(parent) = self.parent_for(f.rule, &open) {
            open.inc.status = IncidentStatus::Suppressed;
            open.inc.parent = Some(parent);
        } else if rule.respect_maintenance && self.in_maintenance(f.node, f.at) {
            open.inc.status = IncidentStatus::Suppressed;
            open.inc
                .labels
                .insert("suppressed_by".into(), "maintenance".into());
        } else if rule.hold.0 > 0 {
            let until = f.at.add_nanos(rule.hold.0);
            open.held_until = Some(until);
            self.open.insert(slot.clone(), open);
            self.push_timer(until, TimerKind::Held { id: slot.into() });
            return;
        }
        self.publish_open(slot, open);
    }

    pub(super) fn publish_open(&mut self, slot: String, open: Open) {
        self.stats.incidents_by_rule[open.rule] += 1;
        let inc = open.inc.clone();
        self.out.push(Output::Incident(inc.clone()));
        if inc.status == IncidentStatus::Open {
            if let Some(p) = &inc.plan {
                self.stats.actions += 1;
                let mut params = p.params.clone();
                // The hit job, so an app restart requeues that job only.
                if let Some(job) = inc.labels.get("job") {
                    params
                        .entry("job".to_owned())
                        .or_insert_with(|| job.clone().into());
                }
                self.out.push(Output::Action(ActionRequest {
                    v: V1,
                    id: ActionRequest::make_id(&inc.id, &inc.blame, &p.plan, 0),
                    incident: inc.id.clone(),
                    rule: Some(inc.rule.clone()),
                    target: inc.blame.clone(),
                    plan: p.plan.clone(),
                    params,
                    requested_at: inc.at,
                    reason: inc.summary.clone(),
                    events: inc.events.clone(),
                    dry_run: self.cfg.dry_run,
                }));
            }
        }
        if let Some(q) = open.quiet {
            self.push_timer(
                open.last_at.add_nanos(q.0),
                TimerKind::Quiet {
                    slot: slot.as_str().into(),
                },
            );
        }
        let (rule, is_open) = (open.rule, inc.status == IncidentStatus::Open);
        self.open.insert(slot.clone(), open);
        if is_open {
            self.claim_children(&slot, rule);
        }
    }

    pub(super) fn close(&mut self, slot: &str, at: Timestamp) {
        let Some(mut o) = self.open.remove(slot) else {
            return;
        };
        if o.held_until.is_some() {
            return; // never published: nothing to resolve
        }
        o.inc.status = IncidentStatus::Resolved;
        o.inc.at = at;
        self.out.push(Output::Incident(o.inc));
    }

    /// A threshold or absence key cleared: resolve its incident.
    pub(super) fn resolve_rule_key(
        &mut self,
        ri: usize,
        key: &str,
        node: &str,
        gpu: Option<u32>,
        job: Option<&str>,
        at: Timestamp,
    ) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        let f = Fire {
            rule: ri,
            key,
            node,
            gpu,
            job,
            at,
            event: None,
            events: Vec::new(),
            value: None,
            members: None,
        };
        let slot = slot_key(rule, &self.blame(rule, &f), key);
        if self.open.get(&slot).is_some_and(|o| o.rule == ri) {
            self.close(&slot, at);
        }
    }

    pub(super) fn evidence(
        &mut self,
        ri: usize,
        key: &str,
        node: &str,
        gpu: Option<u32>,
        job: Option<&str>,
        e: &Event,
    ) {
        let program = Arc::clone(&self.program);
        let rule = &program.rules[ri];
        let f = Fire {
            rule: ri,
            key,
            node,
            gpu,
            job,
            at: e.time,
            event: Some(e),
            events: vec![e.id.clone()],
            value: None,
            members: None,
        };
        let slot = slot_key(rule, &self.blame(rule, &f), key);
        if let Some(o) = self.open.get_mut(&slot) {
            add_evidence(o, &f.events, e.time, self.cfg.max_events_per_incident);
            self.maybe_update(&slot);
        }
    }

    /// Keep-firing updates at 2, 4, 8... events: a storm writes a handful
    /// of messages, not one per event.
    pub(super) fn maybe_update(&mut self, slot: &str) {
        let Some(o) = self.open.get_mut(slot) else {
            return;
        };
        if o.held_until.is_some() || o.inc.event_count < o.next_update {
            return;
        }
        o.next_update = o.inc.event_count.saturating_mul(2);
        let mut inc = o.inc.clone();
        if inc.status == IncidentStatus::Open {
            inc.status = IncidentStatus::Update;
        }
        self.out.push(Output::Incident(inc));
    }
}

/// The dedup slot of an incident: its group, the target it blames, its key.
pub(super) fn slot_key(rule: &Rule, target: &Target, key: &str) -> String {
    format!("{}\u{0}{target}\u{0}{key}", rule.group)
}

pub(super) fn add_evidence(o: &mut Open, events: &[String], at: Timestamp, max: usize) {
    o.inc.event_count += events.len().max(1) as u64;
    for id in events {
        if o.inc.events.len() < max && !o.inc.events.contains(id) {
            o.inc.events.push(id.clone());
        }
    }
    if at > o.last_at {
        o.last_at = at;
        o.inc.at = at;
    }
}
