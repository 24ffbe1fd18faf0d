//! The compiler: rule files (TOML) to a [`Program`], with every problem
//! reported as a diagnostic at `file:line:column`.
//!
//! By grammar section: [`cx`] walks the spanned tree (keys, strings,
//! durations, numbers); [`matcher`] resolves fields, dimensions and `when`/
//! `where` clauses; [`rule`] reads a `[[rule]]` and its plan, summary,
//! key, blame and repeat; [`logic`] reads what a rule computes (threshold
//! over a window or value, sequence, absence, fan-in).
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

mod cx;
mod logic;
mod matcher;
mod rule;

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
pub(super) struct Pos {
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

pub(super) struct RawRule {
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

pub(super) type Table<'i> = DeTable<'i>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// Walks one file's tree, recording diagnostics.
pub(crate) struct Cx<'a, 'm> {
    pub(crate) map: &'a SourceMap<'m>,
    pub(crate) diags: &'a mut Diags,
    pub(super) labels: &'a mut Vec<String>,
}

impl SourceMap<'_> {
    pub(super) fn name_of(&self) -> String {
        self.diag(&(0..0), Level::Error, String::new()).file
    }
}

pub(super) trait MinStart {
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
