//! Fields, dimensions, and the `when` and `where` clauses built from them.

use super::*;

impl Cx<'_, '_> {
    /// Resolves a field path for events of `kinds`.
    pub(crate) fn field(
        &mut self,
        path: &str,
        kinds: KindSet,
        span: &Range<usize>,
    ) -> Option<(FieldRef, Ty)> {
        if let Some(label) = path.strip_prefix("labels.") {
            if label.is_empty() {
                self.err(span, "`labels.` needs a label name".into());
                return None;
            }
            return Some((FieldRef::Label(self.label_index(label)), Ty::Str));
        }
        let env = match path {
            "node" => Some(FieldRef::Node),
            "source" => Some(FieldRef::Source),
            "id" => Some(FieldRef::Id),
            "count" => Some(FieldRef::Count),
            "gpu.index" | "gpu" => Some(FieldRef::GpuIndex),
            "gpu.uuid" => Some(FieldRef::GpuUuid),
            _ => None,
        };
        if let Some(f) = env {
            let ty = ENVELOPE_FIELDS
                .iter()
                .find(|(n, _)| *n == path || (path == "gpu" && *n == "gpu.index"))
                .map_or(Ty::Str, |(_, t)| *t);
            return Some((f, ty));
        }
        if !path.starts_with("data.") {
            let all: Vec<&str> = ENVELOPE_FIELDS.iter().map(|(n, _)| *n).collect();
            self.err(
                span,
                format!(
                    "unknown field `{path}`{}; fields are {}, labels.NAME and data.NAME",
                    suggest(path, all.iter().copied()),
                    all.join(", ")
                ),
            );
            return None;
        }
        if kinds.0 == 0 {
            self.err(
                span,
                format!("`{path}` needs the rule to name its event `kind`"),
            );
            return None;
        }
        let mut found: Vec<&'static DataField> = Vec::new();
        let mut ty = None;
        for k in kinds.iter() {
            match data_fields(k).find(|f| f.path == path) {
                Some(f) => {
                    if ty.is_some_and(|t| t != f.ty) {
                        self.err(
                            span,
                            format!("`{path}` has different types in the rule's kinds"),
                        );
                        return None;
                    }
                    ty = Some(f.ty);
                    found.push(f);
                }
                None => {
                    let names: Vec<&str> = data_fields(k).map(|f| f.path).collect();
                    self.err(
                        span,
                        format!(
                            "unknown field `{path}` for kind {k}{}; {k} has {}",
                            suggest(path, names.iter().copied()),
                            names.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
        let ty = ty?;
        if found.len() == 1 {
            Some((FieldRef::Data(found[0]), ty))
        } else {
            Some((FieldRef::DataAny(Arc::from(found)), ty))
        }
    }

    pub(super) fn dim(&mut self, name: &str, kinds: KindSet, span: &Range<usize>) -> Option<Dim> {
        Some(match name.trim() {
            "node" => Dim::Node,
            "gpu" => Dim::Gpu,
            "rack" => Dim::Rack,
            "leaf_switch" => Dim::LeafSwitch,
            "pdu" => Dim::Pdu,
            "bmc" => Dim::Bmc,
            "driver_version" => Dim::DriverVersion,
            "job" => Dim::Job,
            other if other.starts_with("labels.") || other.starts_with("data.") => {
                let (f, _) = self.field(other, kinds, span)?;
                match f {
                    FieldRef::Label(i) => Dim::Label(i),
                    f => Dim::Field(f),
                }
            }
            other => {
                const DIMS: [&str; 8] = [
                    "node",
                    "gpu",
                    "rack",
                    "leaf_switch",
                    "pdu",
                    "bmc",
                    "driver_version",
                    "job",
                ];
                self.err(
                    span,
                    format!(
                        "unknown key dimension `{other}`{}; use {}, labels.NAME or data.NAME",
                        suggest(other, DIMS.iter().copied()),
                        DIMS.join(", ")
                    ),
                );
                return None;
            }
        })
    }

    /// `kind = "gpu.xid"` or `kinds = [...]`, and `where = {...}`.
    pub(crate) fn matcher(&mut self, t: (&Table<'_>, Range<usize>), what: &str) -> Option<Matcher> {
        self.keys(t.clone(), &["kind", "kinds", "where"], what);
        let mut m = Matcher::default();
        let mut kind_values: Vec<(String, Range<usize>)> = Vec::new();
        if let Some(v) = self.get(t.clone(), "kind") {
            match v.get_ref().as_str() {
                Some(s) => kind_values.push((s.to_owned(), v.span())),
                None => self.err(
                    &v.span(),
                    "`kind` must be a string such as \"gpu.xid\"".into(),
                ),
            }
        }
        if let Some(v) = self.get(t.clone(), "kinds") {
            match v.get_ref().as_array() {
                Some(a) => {
                    for it in a.iter() {
                        match it.get_ref().as_str() {
                            Some(s) => kind_values.push((s.to_owned(), it.span())),
                            None => self.err(&it.span(), "`kinds` must hold strings".into()),
                        }
                    }
                }
                None => self.err(&v.span(), "`kinds` must be an array of strings".into()),
            }
        }
        if kind_values.is_empty() {
            self.err(&t.1, format!("{what} needs `kind` (or `kinds`)"));
            return None;
        }
        let mut ok = true;
        for (s, span) in &kind_values {
            match EventKind::parse(s) {
                Some(k) => m.kinds.insert(k),
                None => {
                    ok = false;
                    let hint = suggest(s, EventKind::ALL.iter().map(|k| k.as_str()));
                    self.err(span, format!("unknown event kind `{s}`{hint}"));
                }
            }
        }
        if !ok {
            return None;
        }
        if let Some(v) = self.get(t, "where") {
            match v.get_ref().as_table() {
                Some(w) => self.preds(w, "", m.kinds, &mut m.preds),
                None => self.err(
                    &v.span(),
                    "`where` must be a table: where = { \"data.code\" = 79 }".into(),
                ),
            }
        }
        Some(m)
    }

    pub(super) fn preds(
        &mut self,
        w: &Table<'_>,
        prefix: &str,
        kinds: KindSet,
        out: &mut Vec<Pred>,
    ) {
        const OPS: [&str; 11] = [
            "eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "contains", "prefix", "exists",
        ];
        for (k, v) in w.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let span = k.span();
            match v.get_ref() {
                DeValue::Table(inner)
                    if inner
                        .iter()
                        .all(|(ik, _)| OPS.contains(&ik.get_ref().as_ref()))
                        && !inner.is_empty() =>
                {
                    let Some((field, ty)) = self.field(&path, kinds, &span) else {
                        continue;
                    };
                    for (ok, ov) in inner.iter() {
                        if let Some(op) = self.op(ok.get_ref(), ov, ty, &path) {
                            out.push(Pred {
                                field: field.clone(),
                                op,
                            });
                        }
                    }
                }
                DeValue::Table(inner) => {
                    // A dotted key (`data.code = 79`) nests; so may a
                    // mistyped operator: say which.
                    if inner
                        .iter()
                        .any(|(ik, _)| OPS.contains(&ik.get_ref().as_ref()))
                    {
                        self.err(
                            &v.span(),
                            format!(
                                "`{path}` mixes operators ({}) with field names",
                                OPS.join(", ")
                            ),
                        );
                        continue;
                    }
                    self.preds(inner, &path, kinds, out);
                }
                DeValue::Array(_) => {
                    let Some((field, ty)) = self.field(&path, kinds, &span) else {
                        continue;
                    };
                    if let Some(op) = self.op("in", v, ty, &path) {
                        out.push(Pred { field, op });
                    }
                }
                _ => {
                    let Some((field, ty)) = self.field(&path, kinds, &span) else {
                        continue;
                    };
                    if let Some(op) = self.op("eq", v, ty, &path) {
                        out.push(Pred { field, op });
                    }
                }
            }
        }
    }

    pub(super) fn lit(&mut self, v: &Val<'_>, ty: Ty, path: &str) -> Option<Lit> {
        let lit = match v.get_ref() {
            DeValue::String(s) => Lit::Str(s.to_string()),
            DeValue::Boolean(b) => Lit::Bool(*b),
            other => match num_of(other) {
                Some(n) => Lit::Num(n),
                None => {
                    self.err(
                        &v.span(),
                        format!("`{path}`: expected a string, number or boolean"),
                    );
                    return None;
                }
            },
        };
        let fits = matches!(
            (&lit, ty),
            (Lit::Num(_), Ty::Num)
                | (Lit::Str(_), Ty::Str | Ty::List)
                | (Lit::Bool(_), Ty::Bool)
                | (Lit::Bool(_), Ty::Num)
        );
        if !fits {
            self.err(
                &v.span(),
                format!("`{path}` is a {}; this value is not", ty.name()),
            );
            return None;
        }
        Some(lit)
    }

    pub(super) fn op(&mut self, name: &str, v: &Val<'_>, ty: Ty, path: &str) -> Option<Op> {
        let numeric = |cx: &mut Self| -> Option<f64> {
            if ty != Ty::Num {
                cx.err(
                    &v.span(),
                    format!("`{name}` compares numbers; `{path}` is a {}", ty.name()),
                );
                return None;
            }
            let n = num_of(v.get_ref());
            if n.is_none() {
                cx.err(&v.span(), format!("`{name}` needs a number"));
            }
            n
        };
        Some(match name {
            "eq" => Op::Eq(self.lit(v, ty, path)?),
            "ne" => Op::Ne(self.lit(v, ty, path)?),
            "in" | "not_in" => {
                let Some(items) = v.get_ref().as_array() else {
                    self.err(&v.span(), format!("`{name}` needs an array"));
                    return None;
                };
                let lits: Vec<Lit> = items
                    .iter()
                    .filter_map(|it| self.lit(it, ty, path))
                    .collect();
                if lits.len() != items.len() {
                    return None;
                }
                if name == "in" {
                    Op::In(lits)
                } else {
                    Op::NotIn(lits)
                }
            }
            "gt" => Op::Gt(numeric(self)?),
            "ge" => Op::Ge(numeric(self)?),
            "lt" => Op::Lt(numeric(self)?),
            "le" => Op::Le(numeric(self)?),
            "contains" | "prefix" => {
                let Some(s) = v.get_ref().as_str() else {
                    self.err(&v.span(), format!("`{name}` needs a string"));
                    return None;
                };
                if name == "contains" {
                    Op::Contains(s.to_owned())
                } else {
                    Op::Prefix(s.to_owned())
                }
            }
            "exists" => match v.get_ref().as_bool() {
                Some(b) => Op::Exists(b),
                None => {
                    self.err(&v.span(), "`exists` needs true or false".into());
                    return None;
                }
            },
            _ => return None,
        })
    }
}
