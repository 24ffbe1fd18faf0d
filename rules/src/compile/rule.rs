//! A `[[rule]]`: its name, filter, suppressions, key, blame, summary,
//! plan, labels and repeat; what it computes is read by [`super::logic`].

use super::*;

const RULE_KEYS: [&str; 22] = [
    "name",
    "description",
    "severity",
    "key",
    "blame",
    "summary",
    "plan",
    "labels",
    "group",
    "hold",
    "resolve_after",
    "suppress",
    "maintenance",
    "when",
    "window",
    "threshold",
    "value",
    "sequence",
    "absence",
    "fan_in",
    "repeat",
    "enabled",
];

/// The keys that choose a rule's logic besides a threshold; one at most.
const LOGIC_KEYS: [&str; 3] = ["sequence", "absence", "fan_in"];

impl Cx<'_, '_> {
    /// Reads one `[[rule]]`. Every problem is reported; a rule with any
    /// error is dropped (None).
    pub(super) fn rule(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        at: &Range<usize>,
        extra_plans: &[String],
    ) -> Option<RawRule> {
        self.keys(t.clone(), &RULE_KEYS, "[[rule]]");
        let (name, name_span) = self.rule_name(t.clone(), at)?;
        let (line, name_col) = {
            let d = self.map.diag(&name_span, Level::Error, String::new());
            (d.line, d.column)
        };
        let errors_before = self.error_count();

        let logic_key = self.logic_key(t.clone(), at, &name);
        let when = self.when(t.clone(), logic_key, &name, &name_span);
        let (suppress_names, suppress_pos) = self.suppress_list(t.clone());

        let mut kinds_all = when.kinds;
        let (logic, key_dims) = match logic_key {
            Some("sequence") => {
                let logic = self.sequence(t.clone())?;
                if let Logic::Sequence { first, then, .. } = &logic {
                    kinds_all.0 |= first.kinds.0 | then.kinds.0;
                }
                (logic, None)
            }
            Some("absence") => (self.absence(t.clone(), &when)?, None),
            Some("fan_in") => {
                let (logic, group) = self.fan_in(t.clone(), &when)?;
                (logic, Some(vec![group]))
            }
            _ => (
                self.threshold_logic(t.clone(), &when, &name, &name_span)?,
                None,
            ),
        };
        let key = self.rule_key(t.clone(), key_dims, kinds_all, &logic)?;
        let blame = self.blame(t.clone(), &key)?;

        // Problems below are all reported; the rule is dropped at the end.
        let severity = match self.get(t.clone(), "severity") {
            Some(v) => self.severity(v).unwrap_or(Severity::Warning),
            None => Severity::Warning,
        };
        let summary = match self.opt_str(t.clone(), "summary") {
            Some((s, span)) => self.template(&s, &span, kinds_all).unwrap_or_default(),
            None => Template {
                parts: vec![Part::Rule, Part::Lit(" on ".into()), Part::Key],
            },
        };
        let plan = match self.get(t.clone(), "plan") {
            Some(v) => self.plan(v, extra_plans),
            None => None,
        };
        let labels = self.rule_labels(t.clone());
        let group = self
            .opt_str(t.clone(), "group")
            .map_or_else(|| name.clone(), |g| g.0);
        let hold = self.opt_span(t.clone(), "hold").map_or(Span::ZERO, |h| h.0);
        let default_resolve = match &logic {
            Logic::Each | Logic::FanIn { .. } | Logic::Sequence { .. } => Span::from_secs(3600),
            _ => Span::ZERO,
        };
        let resolve_after = self
            .opt_span(t.clone(), "resolve_after")
            .map_or(default_resolve, |h| h.0);
        let respect_maintenance = self.opt_bool(t.clone(), "maintenance").unwrap_or(true);
        let description = self
            .opt_str(t.clone(), "description")
            .map(|d| d.0)
            .unwrap_or_default();
        let repeat = self.repeat(t.clone(), extra_plans, kinds_all)?;
        if self.opt_bool(t.clone(), "enabled") == Some(false) {
            return None;
        }
        if self.error_count() > errors_before {
            return None;
        }
        Some(RawRule {
            rule: Rule {
                name,
                description,
                file: self.map.name_of(),
                line,
                severity,
                key,
                blame,
                summary,
                plan,
                labels,
                when,
                logic,
                group,
                hold,
                resolve_after,
                suppresses: Vec::new(),
                repeat,
                respect_maintenance,
            },
            name_col,
            suppress_names,
            suppress_pos,
        })
    }

    fn error_count(&self) -> usize {
        self.diags
            .list
            .iter()
            .filter(|d| d.level == Level::Error)
            .count()
    }

    /// The rule's name (required), checked for the characters ids allow.
    fn rule_name(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        at: &Range<usize>,
    ) -> Option<(String, Range<usize>)> {
        let (name, name_span) = self.req_str(t, "name", at, "[[rule]]")?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.err(
                &name_span,
                format!("rule name `{name}` may use letters, digits, `-`, `_` and `.` only"),
            );
        }
        Some((name, name_span))
    }

    /// Which of `sequence`, `absence`, `fan_in` the rule uses, if any; more
    /// than one is an error (the first is used to go on checking).
    fn logic_key(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        at: &Range<usize>,
        name: &str,
    ) -> Option<&'static str> {
        let present: Vec<&'static str> = LOGIC_KEYS
            .into_iter()
            .filter(|k| self.get(t.clone(), k).is_some())
            .collect();
        if present.len() > 1 {
            self.err(
                &t.1.clone().min_start(at),
                format!(
                    "rule `{name}` has both {} and {}: pick one",
                    present[0], present[1]
                ),
            );
        }
        present.first().copied()
    }

    /// The event filter: `when`, required for all but sequences.
    fn when(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        logic_key: Option<&str>,
        name: &str,
        name_span: &Range<usize>,
    ) -> Matcher {
        let when = match self.opt_table(t, "when") {
            Some(w) => self.matcher(w, "`when`"),
            None if logic_key == Some("sequence") => Some(Matcher::default()),
            None => {
                self.err(
                    name_span,
                    format!("rule `{name}` needs `when` (which events it reads)"),
                );
                None
            }
        };
        when.unwrap_or_default()
    }

    /// `suppress`: the rules this one claims, by name (resolved once every
    /// file is read).
    fn suppress_list(
        &mut self,
        t: (&Table<'_>, Range<usize>),
    ) -> (Vec<(String, Pos)>, Option<Pos>) {
        let mut names = Vec::new();
        let Some(v) = self.get(t, "suppress") else {
            return (names, None);
        };
        let pos = Some(self.pos(&v.span()));
        match v.get_ref().as_array() {
            Some(a) => {
                for it in a.iter() {
                    match it.get_ref().as_str() {
                        Some(s) => names.push((s.to_owned(), self.pos(&it.span()))),
                        None => self.err(&it.span(), "`suppress` holds rule names".into()),
                    }
                }
            }
            None => self.err(
                &v.span(),
                "`suppress` must be an array of rule names".into(),
            ),
        }
        (names, pos)
    }

    /// The key: a fan-in's group, or `key` (default: the node). None when
    /// no dimension is left.
    fn rule_key(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key_dims: Option<Vec<Dim>>,
        kinds_all: KindSet,
        logic: &Logic,
    ) -> Option<Vec<Dim>> {
        let key = match key_dims {
            Some(k) => k,
            None => match self.get(t.clone(), "key") {
                Some(v) => {
                    let names: Vec<(String, Range<usize>)> = match v.get_ref() {
                        DeValue::String(s) => s
                            .split(',')
                            .map(|p| (p.trim().to_owned(), v.span()))
                            .collect(),
                        DeValue::Array(a) => a
                            .iter()
                            .filter_map(|it| {
                                it.get_ref().as_str().map(|s| (s.to_owned(), it.span()))
                            })
                            .collect(),
                        _ => {
                            self.err(
                                &v.span(),
                                "`key` must be \"node,gpu\" or [\"node\", \"gpu\"]".into(),
                            );
                            Vec::new()
                        }
                    };
                    names
                        .iter()
                        .filter_map(|(n, s)| self.dim(n, kinds_all, s))
                        .collect()
                }
                None => vec![Dim::Node],
            },
        };
        if key.is_empty() {
            return None;
        }
        if let Logic::Absence {
            inventory: true, ..
        } = logic
        {
            if !matches!(key.as_slice(), [Dim::Node]) {
                if let Some(v) = self.get(t, "key") {
                    self.err(&v.span(), "an inventory absence is keyed by node (set `inventory = false` for other keys)".into());
                }
            }
        }
        Some(key)
    }

    /// What an incident blames: `blame`, or the key's first dimension that
    /// names a target (default: the node).
    fn blame(&mut self, t: (&Table<'_>, Range<usize>), key: &[Dim]) -> Option<(TargetKind, Dim)> {
        let Some((b, span)) = self.opt_str(t, "blame") else {
            let d = key
                .iter()
                .find(|d| d.target_kind().is_some())
                .cloned()
                .unwrap_or(Dim::Node);
            return Some((d.target_kind().unwrap_or(TargetKind::Node), d));
        };
        let kind = match b.as_str() {
            "node" => TargetKind::Node,
            "gpu" => return Some((TargetKind::Gpu, Dim::Gpu)),
            "rack" => TargetKind::Rack,
            "leaf_switch" => TargetKind::LeafSwitch,
            "pdu" => TargetKind::Pdu,
            "driver_version" => TargetKind::DriverVersion,
            "job" => TargetKind::Job,
            "link" => return Some((TargetKind::Link, Dim::Node)),
            _ => {
                self.err(&span, format!("unknown blame `{b}`; use node, gpu, rack, leaf_switch, pdu, driver_version, job or link"));
                return None;
            }
        };
        let dim = match kind {
            TargetKind::Node => Dim::Node,
            TargetKind::Rack => Dim::Rack,
            TargetKind::LeafSwitch => Dim::LeafSwitch,
            TargetKind::Pdu => Dim::Pdu,
            TargetKind::DriverVersion => Dim::DriverVersion,
            _ => Dim::Job,
        };
        Some((kind, dim))
    }

    /// `labels`: strings the incident carries.
    fn rule_labels(&mut self, t: (&Table<'_>, Range<usize>)) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let Some((lt, _)) = self.opt_table(t, "labels") {
            for (lk, lv) in lt.iter() {
                match lv.get_ref().as_str() {
                    Some(s) => {
                        labels.insert(lk.get_ref().to_string(), s.to_owned());
                    }
                    None => self.err(&lv.span(), "label values must be strings".into()),
                }
            }
        }
        labels
    }

    /// `[rule.repeat]`: what the Nth incident within a time does instead.
    /// The outer None drops the rule.
    fn repeat(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        extra_plans: &[String],
        kinds_all: KindSet,
    ) -> Option<Option<Repeat>> {
        let Some(rt) = self.opt_table(t, "repeat") else {
            return Some(None);
        };
        self.keys(
            rt.clone(),
            &["count", "within", "plan", "severity", "summary"],
            "[rule.repeat]",
        );
        let count = self.whole(
            rt.clone(),
            "count",
            2,
            64,
            "a repeat needs `count` (this incident is the Nth)",
        )?;
        let Some((within, _)) = self.opt_span(rt.clone(), "within") else {
            self.err(&rt.1, "a repeat needs `within`".into());
            return None;
        };
        let plan = match self.get(rt.clone(), "plan") {
            Some(v) => Some(self.plan(v, extra_plans)?),
            None => None,
        };
        let severity = match self.get(rt.clone(), "severity") {
            Some(v) => Some(self.severity(v)?),
            None => None,
        };
        let summary = match self.opt_str(rt, "summary") {
            Some((s, span)) => Some(self.template(&s, &span, kinds_all)?),
            None => None,
        };
        Some(Some(Repeat {
            count,
            within,
            plan,
            severity,
            summary,
        }))
    }

    pub(super) fn plan(&mut self, v: &Val<'_>, extra: &[String]) -> Option<PlanSpec> {
        let (name, span, params) = match v.get_ref() {
            DeValue::String(s) => (s.to_string(), v.span(), BTreeMap::new()),
            DeValue::Table(t) => {
                let tt = (t, v.span());
                self.keys(tt.clone(), &["name", "params"], "plan");
                let (name, span) = self.req_str(tt.clone(), "name", &v.span(), "plan")?;
                let mut params = BTreeMap::new();
                if let Some((pt, _)) = self.opt_table(tt, "params") {
                    for (pk, pv) in pt.iter() {
                        params.insert(pk.get_ref().to_string(), to_json(pv.get_ref()));
                    }
                }
                (name, span, params)
            }
            _ => {
                self.err(
                    &v.span(),
                    "`plan` must be a plan name or { name = \"...\", params = {...} }".into(),
                );
                return None;
            }
        };
        if !plans::is_builtin(&name) && !extra.contains(&name) {
            let all = plans::BUILTIN_PLANS
                .iter()
                .map(|(n, _)| *n)
                .chain(extra.iter().map(String::as_str));
            let hint = suggest(&name, all);
            let known: Vec<&str> = plans::BUILTIN_PLANS.iter().map(|(n, _)| *n).collect();
            self.err(
                &span,
                format!(
                    "unknown plan `{name}`{hint}; known plans: {} (declare others with [[plan]])",
                    known.join(", ")
                ),
            );
            return None;
        }
        Some(PlanSpec { name, params })
    }

    pub(super) fn template(
        &mut self,
        text: &str,
        span: &Range<usize>,
        kinds: KindSet,
    ) -> Option<Template> {
        // Point into the string: the span starts at the opening quote.
        let base = span.start + 1;
        let parts = match template::split(text) {
            Ok(p) => p,
            Err((off, msg)) => {
                self.err(&(base + off..base + off), msg);
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (off, p) in parts {
            match p {
                Err(lit) => out.push(Part::Lit(lit)),
                Ok(name) => {
                    let at = base + off..base + off;
                    let part = match name.as_str() {
                        "key" => Part::Key,
                        "rule" => Part::Rule,
                        "count" => Part::Count,
                        "members" => Part::Members,
                        "value" => Part::Value,
                        "node" => Part::Dim(Dim::Node),
                        "gpu" => Part::Dim(Dim::Gpu),
                        "rack" => Part::Dim(Dim::Rack),
                        "leaf_switch" => Part::Dim(Dim::LeafSwitch),
                        "pdu" => Part::Dim(Dim::Pdu),
                        "bmc" => Part::Dim(Dim::Bmc),
                        "driver_version" => Part::Dim(Dim::DriverVersion),
                        "job" => Part::Dim(Dim::Job),
                        other if other.starts_with("data.") => {
                            // Any one of the rule's kinds may carry it.
                            let have: Vec<EventKind> = kinds
                                .iter()
                                .filter(|k| data_fields(*k).any(|f| f.path == other))
                                .collect();
                            if have.is_empty() {
                                let names = DATA_FIELDS
                                    .iter()
                                    .filter(|f| kinds.contains(f.kind))
                                    .map(|f| f.path);
                                self.err(
                                    &at,
                                    format!(
                                        "template names unknown field `{other}`{}",
                                        suggest(other, names)
                                    ),
                                );
                                ok = false;
                                continue;
                            }
                            let mut set = KindSet::default();
                            for k in have {
                                set.insert(k);
                            }
                            match self.field(other, set, &at) {
                                Some((f, _)) => Part::Field(f),
                                None => {
                                    ok = false;
                                    continue;
                                }
                            }
                        }
                        other => match self.field(other, kinds, &at) {
                            Some((f, _)) => Part::Field(f),
                            None => {
                                ok = false;
                                continue;
                            }
                        },
                    };
                    out.push(part);
                }
            }
        }
        ok.then_some(Template { parts: out })
    }

    pub(super) fn severity(&mut self, v: &Val<'_>) -> Option<Severity> {
        match v.get_ref().as_str() {
            Some("info") => Some(Severity::Info),
            Some("warning") => Some(Severity::Warning),
            Some("critical") => Some(Severity::Critical),
            _ => {
                self.err(
                    &v.span(),
                    "`severity` must be \"info\", \"warning\" or \"critical\"".into(),
                );
                None
            }
        }
    }
}
