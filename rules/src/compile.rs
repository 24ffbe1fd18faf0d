//! The compiler: rule files (TOML) to a [`Program`], with every problem
//! reported as a diagnostic at `file:line:column`.
//!
//! The TOML is parsed into a spanned tree and walked by hand, so that an
//! unknown key, a bad duration or an unknown field points at the exact
//! place, and so that one run reports every problem instead of the first.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use pitcrew_contract::{EventKind, Severity, TargetKind};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diag::{Diagnostic, Diags, Level, SourceMap};
use crate::duration::Span;
use crate::field::{data_fields, DataField, FieldRef, Ty, DATA_FIELDS, ENVELOPE_FIELDS};
use crate::plans;
use crate::program::*;
use crate::template::{self, Part, Template};
use crate::testing::{parse_test, TestCase};

/// One rule file's name and text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// A compiled rule set: the program, the files' tests, and warnings.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub program: Program,
    pub tests: Vec<TestCase>,
    pub warnings: Vec<Diagnostic>,
}

/// Compiles rule files. Errors (and warnings) come back sorted by file and
/// position; a set with any error does not compile.
pub fn compile(files: &[SourceFile]) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut diags = Diags::default();
    let mut cx_rules: Vec<RawRule> = Vec::new();
    let mut program = Program::default();
    let mut tests = Vec::new();
    let mut label_names: Vec<String> = Vec::new();
    let mut extra_plans: Vec<(String, String, Range<usize>)> = Vec::new();

    let maps: Vec<SourceMap<'_>> = files
        .iter()
        .map(|f| SourceMap::new(&f.name, &f.text))
        .collect();
    let mut docs = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let (doc, errors) = DeTable::parse_recoverable(&f.text);
        for e in &errors {
            let span = e.span().unwrap_or(0..0);
            diags.list.push(maps[fi].diag(
                &span,
                Level::Error,
                format!("syntax: {}", e.message().trim_end_matches('.')),
            ));
        }
        if errors.is_empty() {
            docs.push((fi, doc));
        }
    }

    // Plans first: rules in any file may use a plan declared in another.
    for (fi, doc) in &docs {
        let mut cx = Cx {
            map: &maps[*fi],
            diags: &mut diags,
            labels: &mut label_names,
        };
        for (k, v) in doc.get_ref().iter() {
            if k.get_ref() == "plan" {
                for t in cx.tables(v, "plan") {
                    cx.keys(t.clone(), &["name", "description"], "[[plan]]");
                    if let Some((name, span)) = cx.req_str(t, "name", &v.span(), "[[plan]]") {
                        extra_plans.push((name, maps[*fi].name_of(), span));
                    }
                }
            }
        }
    }
    program.extra_plans = extra_plans.iter().map(|p| p.0.clone()).collect();

    for (fi, doc) in &docs {
        let mut cx = Cx {
            map: &maps[*fi],
            diags: &mut diags,
            labels: &mut label_names,
        };
        for (k, v) in doc.get_ref().iter() {
            match k.get_ref().as_ref() {
                "rule" => {
                    for t in cx.tables(v, "rule") {
                        if let Some(r) = cx.rule(t, &v.span(), &program.extra_plans) {
                            cx_rules.push(r);
                        }
                    }
                }
                "test" => {
                    for t in cx.tables(v, "test") {
                        if let Some(tc) = parse_test(&mut cx, t, &v.span()) {
                            tests.push(tc);
                        }
                    }
                }
                "plan" => {}
                other => cx.err(
                    &k.span(),
                    format!("unknown top-level key `{other}`; a rule file holds [[rule]], [[test]] and [[plan]]"),
                ),
            }
        }
    }

    // Cross-rule checks: unique names, suppressions that exist, no cycles.
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, r) in cx_rules.iter().enumerate() {
        if let Some(&j) = by_name.get(&r.rule.name) {
            let first = &cx_rules[j];
            let msg = format!(
                "rule `{}` is defined twice (first at {}:{})",
                r.rule.name, first.rule.file, first.rule.line
            );
            diags.list.push(Diagnostic {
                file: r.rule.file.clone(),
                line: r.rule.line,
                column: r.name_col,
                level: Level::Error,
                message: msg,
            });
        } else {
            by_name.insert(r.rule.name.clone(), i);
        }
    }
    for r in &mut cx_rules {
        for (name, pos) in &r.suppress_names {
            match by_name.get(name) {
                Some(&j) => r.rule.suppresses.push(j),
                None => diags.list.push(pos.diag(format!(
                    "`suppress` names unknown rule `{name}`{}",
                    suggest(name, by_name.keys().map(String::as_str))
                ))),
            }
        }
    }
    check_cycles(&cx_rules, &mut diags);
    check_group_placement(&cx_rules, &mut diags);

    let errors = diags.has_errors();
    let mut list = diags.list;
    list.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if errors {
        return Err(list);
    }
    program.rules = cx_rules.into_iter().map(|r| r.rule).collect();
    program.labels = label_names;
    program.index();
    Ok(RuleSet {
        program,
        tests,
        warnings: list,
    })
}

/// A position recorded for a check that runs after the file walk.
#[derive(Clone, Debug)]
struct Pos {
    file: String,
    line: usize,
    column: usize,
}

impl Pos {
    fn diag(&self, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            level: Level::Error,
            message,
        }
    }
}

struct RawRule {
    rule: Rule,
    name_col: usize,
    suppress_names: Vec<(String, Pos)>,
    suppress_pos: Option<Pos>,
}

fn check_cycles(rules: &[RawRule], diags: &mut Diags) {
    // Three-colour DFS over "suppresses" edges.
    fn visit(
        i: usize,
        rules: &[RawRule],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[i] = 1;
        stack.push(i);
        for &j in &rules[i].rule.suppresses {
            if colour[j] == 1 {
                let from = stack.iter().position(|&x| x == j).unwrap_or(0);
                return Some(stack[from..].to_vec());
            }
            if colour[j] == 0 {
                if let Some(c) = visit(j, rules, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; rules.len()];
    for i in 0..rules.len() {
        if colour[i] == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(i, rules, &mut colour, &mut stack) {
                let names: Vec<&str> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|&k| rules[k].rule.name.as_str())
                    .collect();
                let r = &rules[cycle[0]];
                let pos = r.suppress_pos.clone().unwrap_or(Pos {
                    file: r.rule.file.clone(),
                    line: r.rule.line,
                    column: 1,
                });
                diags.list.push(pos.diag(format!(
                    "suppression cycle: {} (an incident would wait for itself)",
                    names.join(" -> ")
                )));
            }
        }
    }
}

/// A rule claimed by a fan-in over a topology group runs in that group's
/// stage, so it cannot also be claimed from another group's stage.
fn check_group_placement(rules: &[RawRule], diags: &mut Diags) {
    let mut claimed: HashMap<usize, (String, String)> = HashMap::new();
    for r in rules {
        let Some(dim) = r.rule.group_dim() else {
            continue;
        };
        let gname = dim_name(dim);
        for &s in &r.rule.suppresses {
            if let Some((other_rule, other_dim)) = claimed.get(&s) {
                if *other_dim != gname {
                    if let Some(pos) = &r.suppress_pos {
                        diags.list.push(pos.diag(format!(
                            "rule `{}` is claimed by fan-in rules over two groups (`{}` by `{other_rule}`, `{gname}` by `{}`); a member rule can be claimed over one group only",
                            rules[s].rule.name, other_dim, r.rule.name
                        )));
                    }
                }
            } else {
                claimed.insert(s, (r.rule.name.clone(), gname.clone()));
            }
        }
    }
}

pub(crate) fn dim_name(d: &Dim) -> String {
    match d {
        Dim::Node => "node".into(),
        Dim::Gpu => "gpu".into(),
        Dim::Rack => "rack".into(),
        Dim::LeafSwitch => "leaf_switch".into(),
        Dim::Pdu => "pdu".into(),
        Dim::Bmc => "bmc".into(),
        Dim::DriverVersion => "driver_version".into(),
        Dim::Job => "job".into(),
        Dim::Label(_) => "label".into(),
        Dim::Field(_) => "field".into(),
    }
}

/// ` (did you mean `x`?)` when a candidate is close.
pub(crate) fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min();
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How often a periodic kind is sampled by default: a window shorter than
/// this sees at most one sample, and an absence shorter than three of these
/// fires on ordinary jitter.
pub(crate) fn cadence(kind: EventKind) -> Option<Span> {
    use EventKind::*;
    match kind {
        GpuEcc | GpuRowRemap | GpuRetiredPages | GpuPcieReplay | GpuThermal | GpuNvlink
        | NetIbCounter | NodeHeartbeat | HostSensor => Some(Span::from_secs(1)),
        BmcSel | BmcSensor | NodeCondition => Some(Span::from_secs(10)),
        _ => None,
    }
}

type Table<'i> = DeTable<'i>;
type Val<'i> = Spanned<DeValue<'i>>;

/// Walks one file's tree, recording diagnostics.
pub(crate) struct Cx<'a, 'm> {
    pub(crate) map: &'a SourceMap<'m>,
    pub(crate) diags: &'a mut Diags,
    labels: &'a mut Vec<String>,
}

impl SourceMap<'_> {
    fn name_of(&self) -> String {
        self.diag(&(0..0), Level::Error, String::new()).file
    }
}

impl<'a, 'm> Cx<'a, 'm> {
    pub(crate) fn new(
        map: &'a SourceMap<'m>,
        diags: &'a mut Diags,
        labels: &'a mut Vec<String>,
    ) -> Cx<'a, 'm> {
        Cx { map, diags, labels }
    }

    pub(crate) fn err(&mut self, span: &Range<usize>, msg: String) {
        self.diags.list.push(self.map.diag(span, Level::Error, msg));
    }

    fn pos(&self, span: &Range<usize>) -> Pos {
        let d = self.map.diag(span, Level::Error, String::new());
        Pos {
            file: d.file,
            line: d.line,
            column: d.column,
        }
    }

    /// The tables of an array of tables (`[[rule]]`).
    pub(crate) fn tables<'v, 'i>(
        &mut self,
        v: &'v Val<'i>,
        what: &str,
    ) -> Vec<(&'v Table<'i>, Range<usize>)> {
        match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|it| match it.get_ref() {
                    DeValue::Table(t) => Some((t, it.span())),
                    _ => {
                        self.err(&it.span(), format!("each [[{what}]] must be a table"));
                        None
                    }
                })
                .collect(),
            _ => {
                self.err(
                    &v.span(),
                    format!("`{what}` must be an array of tables: write [[{what}]]"),
                );
                Vec::new()
            }
        }
    }

    /// Reports keys outside `allowed`.
    pub(crate) fn keys(&mut self, t: (&Table<'_>, Range<usize>), allowed: &[&str], what: &str) {
        for (k, _) in t.0.iter() {
            let name = k.get_ref().as_ref();
            if !allowed.contains(&name) {
                let hint = suggest(name, allowed.iter().copied());
                self.err(
                    &k.span(),
                    format!(
                        "unknown key `{name}` in {what}{hint}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    pub(crate) fn get<'v, 'i>(
        &self,
        t: (&'v Table<'i>, Range<usize>),
        key: &str,
    ) -> Option<&'v Val<'i>> {
        t.0.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
    }

    pub(crate) fn opt_str(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(String, Range<usize>)> {
        let v = self.get(t, key)?;
        match v.get_ref().as_str() {
            Some(s) => Some((s.to_owned(), v.span())),
            None => {
                self.err(
                    &v.span(),
                    format!("`{key}` must be a string, not {}", v.get_ref().type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn req_str(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
        at: &Range<usize>,
        what: &str,
    ) -> Option<(String, Range<usize>)> {
        if self.get(t.clone(), key).is_none() {
            self.err(&t.1.clone().min_start(at), format!("{what} needs `{key}`"));
            return None;
        }
        self.opt_str(t, key)
    }

    pub(crate) fn opt_span(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(Span, Range<usize>)> {
        let v = self.get(t, key)?;
        let Some(s) = v.get_ref().as_str() else {
            self.err(
                &v.span(),
                format!("`{key}` must be a duration string like \"30s\", \"5m\" or \"7d\""),
            );
            return None;
        };
        match Span::parse(s) {
            Ok(d) => Some((d, v.span())),
            Err(m) => {
                self.err(&v.span(), m);
                None
            }
        }
    }

    pub(crate) fn opt_num(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
    ) -> Option<(f64, Range<usize>)> {
        let v = self.get(t, key)?;
        match num_of(v.get_ref()) {
            Some(n) => Some((n, v.span())),
            None => {
                self.err(&v.span(), format!("`{key}` must be a number"));
                None
            }
        }
    }

    /// A required whole number in `lo..=hi`.
    fn whole(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        key: &str,
        lo: u32,
        hi: u32,
        missing: &str,
    ) -> Option<u32> {
        match self.opt_num(t.clone(), key) {
            Some((n, _)) if n >= f64::from(lo) && n.fract() == 0.0 && n <= f64::from(hi) => {
                Some(n as u32)
            }
            Some((_, span)) => {
                self.err(
                    &span,
                    format!("`{key}` must be a whole number from {lo} to {hi}"),
                );
                None
            }
            None => {
                if self.get(t.clone(), key).is_none() {
                    self.err(&t.1, missing.to_owned());
                }
                None
            }
        }
    }

    pub(crate) fn opt_bool(&mut self, t: (&Table<'_>, Range<usize>), key: &str) -> Option<bool> {
        let v = self.get(t, key)?;
        match v.get_ref().as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(&v.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    pub(crate) fn opt_table<'v, 'i>(
        &mut self,
        t: (&'v Table<'i>, Range<usize>),
        key: &str,
    ) -> Option<(&'v Table<'i>, Range<usize>)> {
        let v = self.get(t, key)?;
        match v.get_ref().as_table() {
            Some(tt) => Some((tt, v.span())),
            None => {
                self.err(&v.span(), format!("`{key}` must be a table"));
                None
            }
        }
    }

    fn label_index(&mut self, name: &str) -> u16 {
        match self.labels.iter().position(|l| l == name) {
            Some(i) => i as u16,
            None => {
                self.labels.push(name.to_owned());
                (self.labels.len() - 1) as u16
            }
        }
    }

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

    fn dim(&mut self, name: &str, kinds: KindSet, span: &Range<usize>) -> Option<Dim> {
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

    fn preds(&mut self, w: &Table<'_>, prefix: &str, kinds: KindSet, out: &mut Vec<Pred>) {
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

    fn lit(&mut self, v: &Val<'_>, ty: Ty, path: &str) -> Option<Lit> {
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

    fn op(&mut self, name: &str, v: &Val<'_>, ty: Ty, path: &str) -> Option<Op> {
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

    fn plan(&mut self, v: &Val<'_>, extra: &[String]) -> Option<PlanSpec> {
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

    fn template(&mut self, text: &str, span: &Range<usize>, kinds: KindSet) -> Option<Template> {
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

    fn severity(&mut self, v: &Val<'_>) -> Option<Severity> {
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

    fn window_check(
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

    fn rule(
        &mut self,
        t: (&Table<'_>, Range<usize>),
        at: &Range<usize>,
        extra_plans: &[String],
    ) -> Option<RawRule> {
        const KEYS: [&str; 22] = [
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
        self.keys(t.clone(), &KEYS, "[[rule]]");
        let (name, name_span) = self.req_str(t.clone(), "name", at, "[[rule]]")?;
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
        let (line, name_col) = {
            let d = self.map.diag(&name_span, Level::Error, String::new());
            (d.line, d.column)
        };
        let errors_before = self
            .diags
            .list
            .iter()
            .filter(|d| d.level == Level::Error)
            .count();

        let logic_keys: Vec<&str> = ["sequence", "absence", "fan_in"]
            .into_iter()
            .filter(|k| self.get(t.clone(), k).is_some())
            .collect();
        if logic_keys.len() > 1 {
            self.err(
                &t.1.clone().min_start(at),
                format!(
                    "rule `{name}` has both {} and {}: pick one",
                    logic_keys[0], logic_keys[1]
                ),
            );
        }

        // The event filter: `when` for all but sequences.
        let when = match self.opt_table(t.clone(), "when") {
            Some(w) => self.matcher(w, "`when`"),
            None if logic_keys.first() == Some(&"sequence") => Some(Matcher::default()),
            None => {
                self.err(
                    &name_span,
                    format!("rule `{name}` needs `when` (which events it reads)"),
                );
                None
            }
        };
        let when = when.unwrap_or_default();

        let mut suppress_names = Vec::new();
        let mut suppress_pos = None;
        if let Some(v) = self.get(t.clone(), "suppress") {
            suppress_pos = Some(self.pos(&v.span()));
            match v.get_ref().as_array() {
                Some(a) => {
                    for it in a.iter() {
                        match it.get_ref().as_str() {
                            Some(s) => suppress_names.push((s.to_owned(), self.pos(&it.span()))),
                            None => self.err(&it.span(), "`suppress` holds rule names".into()),
                        }
                    }
                }
                None => self.err(
                    &v.span(),
                    "`suppress` must be an array of rule names".into(),
                ),
            }
        }

        let mut kinds_all = when.kinds;
        let mut key_dims: Option<Vec<Dim>> = None;
        let logic = match logic_keys.first().copied() {
            Some("sequence") => {
                let st = self.opt_table(t.clone(), "sequence")?;
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
                        self.err(&span, "sequence `within` must be longer than 0s: nothing can follow within no time".into());
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
                let (first, then, within) = (first?, then?, within?);
                kinds_all.0 |= first.kinds.0 | then.kinds.0;
                Logic::Sequence {
                    first,
                    then,
                    within,
                    negate,
                }
            }
            Some("absence") => {
                let at_ = self.opt_table(t.clone(), "absence")?;
                self.keys(at_.clone(), &["after", "inventory"], "[rule.absence]");
                let (after, aspan) = match self.opt_span(at_.clone(), "after") {
                    Some(x) => x,
                    None => {
                        if self.get(at_.clone(), "after").is_none() {
                            self.err(
                                &at_.1,
                                "an absence needs `after` (how long without the event)".into(),
                            );
                        }
                        return None;
                    }
                };
                self.window_check(after, when.kinds, &aspan, "absence `after`", 3);
                let inventory = self.opt_bool(at_, "inventory").unwrap_or(true);
                Logic::Absence { after, inventory }
            }
            Some("fan_in") => {
                let ft = self.opt_table(t.clone(), "fan_in")?;
                self.keys(
                    ft.clone(),
                    &["group", "member", "min", "within"],
                    "[rule.fan_in]",
                );
                if let Some(v) = self.get(t.clone(), "key") {
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
                key_dims = Some(vec![group]);
                Logic::FanIn {
                    member,
                    min,
                    within,
                }
            }
            _ => {
                let window = match self.opt_table(t.clone(), "window") {
                    Some(wt) => {
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
                                        format!(
                                            "a window aggregates numbers; `{f}` is a {}",
                                            ty.name()
                                        ),
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
                        match (over, agg, field) {
                            (Some((over, ospan)), Some(agg), Some(field)) => {
                                if over.0 <= 0 {
                                    self.err(&ospan, "a window must be longer than 0s".into());
                                    None
                                } else {
                                    self.window_check(over, when.kinds, &ospan, "window", 1);
                                    let step = match step {
                                        Some((s, sspan))
                                            if s.0 <= 0 || s.0 > over.0 || over.0 / s.0 > 1024 =>
                                        {
                                            self.err(
                                                &sspan,
                                                "window `step` must be between over/1024 and over"
                                                    .into(),
                                            );
                                            Span((over.0 + 11) / 12)
                                        }
                                        Some((s, _)) => s,
                                        None => Span((over.0 + 11) / 12),
                                    };
                                    let buckets =
                                        ((over.0 + step.0.max(1) - 1) / step.0.max(1)) as usize;
                                    Some(WindowSpec {
                                        over,
                                        agg,
                                        field,
                                        step,
                                        buckets,
                                    })
                                }
                            }
                            _ => None,
                        }
                    }
                    None => None,
                };
                let value = match self.get(t.clone(), "value") {
                    Some(v) if v.get_ref().is_table() => {
                        if window.is_some() {
                            self.err(&v.span(), "`value` reads one event; with a window, name the field in [rule.window]".into());
                        }
                        let mut preds = Vec::new();
                        if let Some(tt) = v.get_ref().as_table() {
                            self.preds(tt, "", when.kinds, &mut preds);
                        }
                        Some(ValueSrc::Pred(preds))
                    }
                    Some(_) => match self.opt_str(t.clone(), "value") {
                        Some((f, span)) => {
                            if window.is_some() {
                                self.err(&span, "`value` reads one event's field; with a window, name the field in [rule.window]".into());
                            }
                            match self.field(&f, when.kinds, &span) {
                                Some((fr, Ty::Num | Ty::Bool)) => Some(ValueSrc::Field(fr)),
                                Some((_, ty)) => {
                                    self.err(
                                        &span,
                                        format!(
                                            "`value` must be a number field; `{f}` is a {}",
                                            ty.name()
                                        ),
                                    );
                                    None
                                }
                                None => None,
                            }
                        }
                        None => None,
                    },
                    None => None,
                };
                let threshold = match self.opt_table(t.clone(), "threshold") {
                    Some(tt) => self.threshold(tt),
                    None => None,
                };
                match (window, value, threshold) {
                    (None, None, None) => Logic::Each,
                    (window, value, Some(threshold)) => Logic::Threshold {
                        window,
                        value,
                        threshold,
                    },
                    (_, _, None) => {
                        if self.get(t.clone(), "threshold").is_none() {
                            self.err(
                                &name_span,
                                format!(
                                    "rule `{name}` has a window or value but no [rule.threshold]"
                                ),
                            );
                        }
                        return None;
                    }
                }
            }
        };

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
                if let Some(v) = self.get(t.clone(), "key") {
                    self.err(&v.span(), "an inventory absence is keyed by node (set `inventory = false` for other keys)".into());
                }
            }
        }

        let blame = match self.opt_str(t.clone(), "blame") {
            Some((b, span)) => {
                let kind = match b.as_str() {
                    "node" => Some(TargetKind::Node),
                    "gpu" => Some(TargetKind::Gpu),
                    "rack" => Some(TargetKind::Rack),
                    "leaf_switch" => Some(TargetKind::LeafSwitch),
                    "pdu" => Some(TargetKind::Pdu),
                    "driver_version" => Some(TargetKind::DriverVersion),
                    "job" => Some(TargetKind::Job),
                    "link" => Some(TargetKind::Link),
                    _ => None,
                };
                match kind {
                    Some(TargetKind::Gpu) => Some((TargetKind::Gpu, Dim::Gpu)),
                    Some(TargetKind::Link) => Some((TargetKind::Link, Dim::Node)),
                    Some(k) => {
                        let dim = match k {
                            TargetKind::Node => Dim::Node,
                            TargetKind::Rack => Dim::Rack,
                            TargetKind::LeafSwitch => Dim::LeafSwitch,
                            TargetKind::Pdu => Dim::Pdu,
                            TargetKind::DriverVersion => Dim::DriverVersion,
                            _ => Dim::Job,
                        };
                        Some((k, dim))
                    }
                    None => {
                        self.err(&span, format!("unknown blame `{b}`; use node, gpu, rack, leaf_switch, pdu, driver_version, job or link"));
                        None
                    }
                }
            }
            None => {
                let d = key
                    .iter()
                    .find(|d| d.target_kind().is_some())
                    .cloned()
                    .unwrap_or(Dim::Node);
                Some((d.target_kind().unwrap_or(TargetKind::Node), d))
            }
        }?;

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
        let mut labels = BTreeMap::new();
        if let Some((lt, _)) = self.opt_table(t.clone(), "labels") {
            for (lk, lv) in lt.iter() {
                match lv.get_ref().as_str() {
                    Some(s) => {
                        labels.insert(lk.get_ref().to_string(), s.to_owned());
                    }
                    None => self.err(&lv.span(), "label values must be strings".into()),
                }
            }
        }
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
        let repeat = match self.opt_table(t.clone(), "repeat") {
            Some(rt) => {
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
                let within = match self.opt_span(rt.clone(), "within") {
                    Some((w, _)) => w,
                    None => {
                        self.err(&rt.1, "a repeat needs `within`".into());
                        return None;
                    }
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
                Some(Repeat {
                    count,
                    within,
                    plan,
                    severity,
                    summary,
                })
            }
            None => None,
        };
        if self.opt_bool(t.clone(), "enabled") == Some(false) {
            return None;
        }
        let errors_after = self
            .diags
            .list
            .iter()
            .filter(|d| d.level == Level::Error)
            .count();
        if errors_after > errors_before {
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

    fn threshold(&mut self, tt: (&Table<'_>, Range<usize>)) -> Option<Threshold> {
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
}

trait MinStart {
    fn min_start(self, other: &Range<usize>) -> Range<usize>;
}

impl MinStart for Range<usize> {
    /// An empty table's span may be empty; fall back to its header.
    fn min_start(self, other: &Range<usize>) -> Range<usize> {
        if self.is_empty() {
            other.clone()
        } else {
            self
        }
    }
}

pub(crate) fn num_of(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Integer(i) => {
            let s = i.as_str().replace('_', "");
            let (neg, digits) = match s.strip_prefix('-') {
                Some(d) => (true, d.to_owned()),
                None => (false, s.trim_start_matches('+').to_owned()),
            };
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            let n = i64::from_str_radix(digits, i.radix()).ok()? as f64;
            Some(if neg { -n } else { n })
        }
        DeValue::Float(f) => {
            let s = f.as_str().replace('_', "");
            match s.as_str() {
                "inf" | "+inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => None,
                _ => s.parse().ok(),
            }
        }
        _ => None,
    }
}

pub(crate) fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    match v {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Integer(_) => num_of(v)
            .map(|n| serde_json::Value::from(n as i64))
            .unwrap_or(serde_json::Value::Null),
        DeValue::Float(_) => num_of(v)
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect())
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref())))
                .collect(),
        ),
    }
}
