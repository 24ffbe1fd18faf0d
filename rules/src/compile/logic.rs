//! What a rule computes: a threshold over a window or an event's value
//! (or each event), a sequence, an absence, or a fan-in.

use super::*;

impl Cx<'_, '_> {
    /// `[rule.sequence]`: a first event followed (or not) by another
    /// within a time.
    pub(super) fn sequence(&mut self, t: (&Table<'_>, Range<usize>)) -> Option<Logic> {
        let st = self.opt_table(t, "sequence")?;
        self.keys(
            st.clone(),
            &["first", "followed_by", "not_followed_by", "within"],
            "[rule.sequence]",
        );
        let first = self
            .opt_table(st.clone(), "first")
            .and_then(|f| self.matcher(f, "`sequence.first`"));
        let fb = self.opt_table(st.clone(), "followed_by");
        let nfb = self.opt_table(st.clone(), "not_followed_by");
        let (then_t, negate) = match (fb, nfb) {
            (Some(f), None) => (Some(f), false),
            (None, Some(f)) => (Some(f), true),
            (Some(_), Some(_)) => {
                self.err(
                    &st.1,
                    "a sequence has `followed_by` or `not_followed_by`, not both".into(),
                );
                (None, false)
            }
            (None, None) => {
                self.err(
                    &st.1,
                    "a sequence needs `followed_by` or `not_followed_by`".into(),
                );
                (None, false)
            }
        };
        let then = then_t.and_then(|f| self.matcher(f, "the sequence's second step"));
        let within = match self.opt_span(st.clone(), "within") {
            Some((w, span)) if w.0 <= 0 => {
                self.err(
                    &span,
                    "sequence `within` must be longer than 0s: nothing can follow within no time"
                        .into(),
                );
                None
            }
            Some((w, _)) => Some(w),
            None => {
                if self.get(st.clone(), "within").is_none() {
                    self.err(&st.1, "a sequence needs `within`".into());
                }
                None
            }
        };
        if first.is_none() && self.get(st.clone(), "first").is_none() {
            self.err(&st.1, "a sequence needs `first`".into());
        }
        Some(Logic::Sequence {
            first: first?,
            then: then?,
            within: within?,
            negate,
        })
    }

    /// `[rule.absence]`: no event for `after`.
    pub(super) fn absence(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        when: &Matcher,
    ) -> Option<Logic> {
        let at_ = self.opt_table(t, "absence")?;
        self.keys(at_.clone(), &["after", "inventory"], "[rule.absence]");
        let Some((after, aspan)) = self.opt_span(at_.clone(), "after") else {
            if self.get(at_.clone(), "after").is_none() {
                self.err(
                    &at_.1,
                    "an absence needs `after` (how long without the event)".into(),
                );
            }
            return None;
        };
        self.window_check(after, when.kinds, &aspan, "absence `after`", 3);
        let inventory = self.opt_bool(at_, "inventory").unwrap_or(true);
        Some(Logic::Absence { after, inventory })
    }

    /// `[rule.fan_in]`: `min` distinct members of a group within a time;
    /// returns the logic and the group (the rule's key).
    pub(super) fn fan_in(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        when: &Matcher,
    ) -> Option<(Logic, Dim)> {
        let ft = self.opt_table(t.clone(), "fan_in")?;
        self.keys(
            ft.clone(),
            &["group", "member", "min", "within"],
            "[rule.fan_in]",
        );
        if let Some(v) = self.get(t, "key") {
            self.err(
                &v.span(),
                "a fan-in rule is keyed by its `group`; remove `key`".into(),
            );
        }
        let (gname, gspan) = self.req_str(ft.clone(), "group", &ft.1, "[rule.fan_in]")?;
        let group = self.dim(&gname, when.kinds, &gspan)?;
        let member = match self.opt_str(ft.clone(), "member") {
            Some((m, mspan)) => self.dim(&m, when.kinds, &mspan)?,
            None => Dim::Node,
        };
        let min = self.whole(
            ft.clone(),
            "min",
            2,
            100_000,
            "a fan-in needs `min` (distinct members)",
        )?;
        let within = match self.opt_span(ft.clone(), "within") {
            Some((w, span)) if w.0 <= 0 => {
                self.err(&span, "fan-in `within` must be longer than 0s".into());
                return None;
            }
            Some((w, _)) => w,
            None => {
                self.err(&ft.1, "a fan-in needs `within`".into());
                return None;
            }
        };
        Some((
            Logic::FanIn {
                member,
                min,
                within,
            },
            group,
        ))
    }

    /// A threshold over a window or a value, or each event when the rule
    /// has neither.
    pub(super) fn threshold_logic(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        when: &Matcher,
        name: &str,
        name_span: &Range<usize>,
    ) -> Option<Logic> {
        let window = match self.opt_table(t.clone(), "window") {
            Some(wt) => self.window(wt, when),
            None => None,
        };
        let value = self.value(t.clone(), when, window.is_some());
        let threshold = match self.opt_table(t.clone(), "threshold") {
            Some(tt) => self.threshold(tt),
            None => None,
        };
        match (window, value, threshold) {
            (None, None, None) => Some(Logic::Each),
            (window, value, Some(threshold)) => Some(Logic::Threshold {
                window,
                value,
                threshold,
            }),
            (_, _, None) => {
                if self.get(t, "threshold").is_none() {
                    self.err(
                        name_span,
                        format!("rule `{name}` has a window or value but no [rule.threshold]"),
                    );
                }
                None
            }
        }
    }

    /// `[rule.window]`: its length, aggregate, field and step.
    fn window(&mut self, wt: (&Table<'_>, Range<usize>), when: &Matcher) -> Option<WindowSpec> {
        self.keys(
            wt.clone(),
            &["over", "agg", "field", "step"],
            "[rule.window]",
        );
        let over = self.opt_span(wt.clone(), "over");
        if over.is_none() && self.get(wt.clone(), "over").is_none() {
            self.err(&wt.1, "a window needs `over` (its length)".into());
        }
        let agg = match self.opt_str(wt.clone(), "agg") {
            None => Some(Agg::Count),
            Some((a, span)) => match a.as_str() {
                "count" => Some(Agg::Count),
                "rate" => Some(Agg::Rate),
                "sum" | "delta" => Some(Agg::Sum),
                "min" => Some(Agg::Min),
                "max" => Some(Agg::Max),
                "avg" => Some(Agg::Avg),
                other => {
                    self.err(&span, format!("unknown aggregate `{other}`; use count, rate, sum, delta, min, max or avg"));
                    None
                }
            },
        };
        let field = match self.opt_str(wt.clone(), "field") {
            Some((f, span)) => match self.field(&f, when.kinds, &span) {
                Some((fr, Ty::Num | Ty::Bool)) => Some(Some(fr)),
                Some((_, ty)) => {
                    self.err(
                        &span,
                        format!("a window aggregates numbers; `{f}` is a {}", ty.name()),
                    );
                    None
                }
                None => None,
            },
            None => Some(None),
        };
        if let (Some(agg), Some(None)) = (agg, &field) {
            if !matches!(agg, Agg::Count | Agg::Rate) {
                self.err(
                    &wt.1,
                    "this aggregate needs `field` (the number to aggregate)".into(),
                );
            }
        }
        let step = self.opt_span(wt.clone(), "step");
        let (Some((over, ospan)), Some(agg), Some(field)) = (over, agg, field) else {
            return None;
        };
        if over.0 <= 0 {
            self.err(&ospan, "a window must be longer than 0s".into());
            return None;
        }
        self.window_check(over, when.kinds, &ospan, "window", 1);
        let step = match step {
            Some((s, sspan)) if s.0 <= 0 || s.0 > over.0 || over.0 / s.0 > 1024 => {
                self.err(
                    &sspan,
                    "window `step` must be between over/1024 and over".into(),
                );
                Span((over.0 + 11) / 12)
            }
            Some((s, _)) => s,
            None => Span((over.0 + 11) / 12),
        };
        let buckets = ((over.0 + step.0.max(1) - 1) / step.0.max(1)) as usize;
        Some(WindowSpec {
            over,
            agg,
            field,
            step,
            buckets,
        })
    }

    /// `value`: one event's number field, or a `where`-style predicate.
    fn value(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        when: &Matcher,
        has_window: bool,
    ) -> Option<ValueSrc> {
        match self.get(t.clone(), "value") {
            Some(v) if v.get_ref().is_table() => {
                if has_window {
                    self.err(
                        &v.span(),
                        "`value` reads one event; with a window, name the field in [rule.window]"
                            .into(),
                    );
                }
                let mut preds = Vec::new();
                if let Some(tt) = v.get_ref().as_table() {
                    self.preds(tt, "", when.kinds, &mut preds);
                }
                Some(ValueSrc::Pred(preds))
            }
            Some(_) => {
                let (f, span) = self.opt_str(t, "value")?;
                if has_window {
                    self.err(&span, "`value` reads one event's field; with a window, name the field in [rule.window]".into());
                }
                match self.field(&f, when.kinds, &span) {
                    Some((fr, Ty::Num | Ty::Bool)) => Some(ValueSrc::Field(fr)),
                    Some((_, ty)) => {
                        self.err(
                            &span,
                            format!("`value` must be a number field; `{f}` is a {}", ty.name()),
                        );
                        None
                    }
                    None => None,
                }
            }
            None => None,
        }
    }

    pub(super) fn threshold(&mut self, tt: (&Table<'_>, Range<usize>)) -> Option<Threshold> {
        self.keys(
            tt.clone(),
            &["op", "fire", "clear", "for", "clear_for"],
            "[rule.threshold]",
        );
        let cmp = match self.opt_str(tt.clone(), "op") {
            None => Cmp::Ge,
            Some((o, span)) => match o.as_str() {
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                other => {
                    self.err(
                        &span,
                        format!("unknown threshold op `{other}`; use >, >=, < or <="),
                    );
                    return None;
                }
            },
        };
        let Some((fire, _)) = self.opt_num(tt.clone(), "fire") else {
            if self.get(tt.clone(), "fire").is_none() {
                self.err(&tt.1, "a threshold needs `fire`".into());
            }
            return None;
        };
        let clear = match self.opt_num(tt.clone(), "clear") {
            Some((c, span)) => {
                let wrong = match cmp {
                    Cmp::Gt | Cmp::Ge => c > fire,
                    Cmp::Lt | Cmp::Le => c < fire,
                };
                if wrong {
                    self.err(&span, format!("`clear` {c} is on the firing side of `fire` {fire}: hysteresis needs it on the other side"));
                    return None;
                }
                c
            }
            None => fire,
        };
        let hold_for = self.opt_span(tt.clone(), "for").map_or(Span::ZERO, |x| x.0);
        let clear_for = self.opt_span(tt, "clear_for").map_or(Span::ZERO, |x| x.0);
        Some(Threshold {
            cmp,
            fire,
            clear,
            hold_for,
            clear_for,
        })
    }

    pub(super) fn window_check(
        &mut self,
        over: Span,
        kinds: KindSet,
        span: &Range<usize>,
        what: &str,
        factor: i64,
    ) {
        for k in kinds.iter() {
            if let Some(c) = cadence(k) {
                if over.0 < c.0 * factor {
                    let need = Span(c.0 * factor);
                    self.err(
                        span,
                        format!("{what} {over} is shorter than {need}: {k} is sampled every {c}, so it would see too few samples"),
                    );
                    return;
                }
            }
        }
    }
}
