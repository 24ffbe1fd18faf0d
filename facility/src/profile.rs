//! SNMP profiles: which OIDs a device kind is read from and how each
//! becomes a field of a facility event. The shipped profiles (APC rPDU2,
//! Raritan PDU2-MIB, ServerTech Sentry4, RFC 1628 UPS-MIB) are TOML files in
//! `facility/profiles/`, in the same format an operator uses for anything
//! else; see docs/facility.md, "Profiles".
//!
//! This module is pure: [`Profile::assemble`] turns the values a poll
//! read (a [`Walk`]) into readings, with every problem it met listed, so it
//! is tested on recorded walks without a network.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::error::FacilityError;

/// An OID as its numbers.
pub type Oid = Vec<u32>;

/// Parses `1.3.6.1...` (a leading dot is allowed).
pub fn parse_oid(s: &str) -> Option<Oid> {
    let s = s.trim().trim_start_matches('.');
    if s.is_empty() {
        return None;
    }
    s.split('.').map(|p| p.parse::<u32>().ok()).collect()
}

pub fn oid_string(oid: &[u32]) -> String {
    let parts: Vec<String> = oid.iter().map(u32::to_string).collect();
    parts.join(".")
}

/// One value as the agent returned it.
#[derive(Clone, Debug, PartialEq)]
pub enum Raw {
    Int(i64),
    /// Counter32: wraps at 2^32.
    Counter32(u64),
    /// Counter64 (and anything else that only grows).
    Counter64(u64),
    Str(String),
    Oid(String),
    /// noSuchObject, noSuchInstance or endOfMibView.
    NoSuch(&'static str),
}

impl Raw {
    fn number(&self) -> Option<f64> {
        match self {
            Raw::Int(i) => Some(*i as f64),
            Raw::Counter32(u) | Raw::Counter64(u) => Some(*u as f64),
            // Some agents (APC's older firmware among them) answer numbers
            // as strings.
            Raw::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Raw::Int(i) => Some(*i),
            Raw::Counter32(u) | Raw::Counter64(u) => i64::try_from(*u).ok(),
            Raw::Str(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Raw::Str(s) => Some(s.clone()),
            Raw::Oid(o) => Some(o.clone()),
            Raw::Int(i) => Some(i.to_string()),
            Raw::Counter32(u) | Raw::Counter64(u) => Some(u.to_string()),
            Raw::NoSuch(_) => None,
        }
    }
}

/// What one poll read: every varbind by OID.
pub type Walk = BTreeMap<Oid, Raw>;

/// A profile file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// `pdu`, `ups`, `cooling` or `leak`: the event kind it makes.
    pub kind: DeviceKind,
    #[serde(default)]
    pub description: Option<String>,
    /// sysObjectID prefixes that select this profile.
    #[serde(default)]
    pub sys_object_id: Vec<String>,
    /// An OID whose presence selects the profile when no sysObjectID
    /// prefix matched (a standard MIB any vendor may implement).
    #[serde(default)]
    pub detect_oid: Option<String>,
    /// Raw values meaning "not supported" (APC and ServerTech answer -1).
    #[serde(default)]
    pub absent: Vec<i64>,
    #[serde(default)]
    pub group: Vec<Group>,
    /// Constant fields (`unit = "cdu"` for a cooling profile).
    #[serde(default)]
    pub constants: BTreeMap<String, toml::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Pdu,
    Ups,
    Cooling,
    Leak,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Pdu => "pdu",
            DeviceKind::Ups => "ups",
            DeviceKind::Cooling => "cooling",
            DeviceKind::Leak => "leak",
        }
    }
}

/// A set of fields read together: one reading per table row (`table`
/// given), or one reading of scalars.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// `pdu`, `phase`, `bank`, `outlet`, `probe` (PDU profiles).
    #[serde(default)]
    pub scope: Option<String>,
    /// The table's entry OID; fields name its columns.
    #[serde(default)]
    pub table: Option<String>,
    /// The column whose value numbers the part (outlet 5); else
    /// `index_part`, else the row index's last number.
    #[serde(default)]
    pub index_column: Option<u32>,
    /// Which number of the row index numbers the part (1-based).
    #[serde(default)]
    pub index_part: Option<usize>,
    /// Rows are indexed `...part.sub`: fields pick their `sub`.
    #[serde(default)]
    pub pivot: bool,
    #[serde(default)]
    pub fields: BTreeMap<String, Field>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// A scalar's full OID.
    #[serde(default)]
    pub oid: Option<String>,
    /// A column of the group's table (or of `table`).
    #[serde(default)]
    pub column: Option<u32>,
    /// A table read into one value with `agg`.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub agg: Option<Agg>,
    /// A scalar giving how many rows of `table` are real.
    #[serde(default)]
    pub rows_from: Option<String>,
    /// The pivot's sub-index (the sensor type).
    #[serde(default)]
    pub sub: Option<u32>,
    #[serde(default)]
    pub scale: Option<f64>,
    /// Raw value -> the contract's word.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Decimal digits per row from another table's column (Raritan).
    #[serde(default)]
    pub decimals_table: Option<String>,
    #[serde(default)]
    pub decimals_column: Option<u32>,
    /// The field is a meter: the poller writes its difference since the
    /// previous poll into this field.
    #[serde(default)]
    pub delta: Option<String>,
    /// More raw values meaning "not supported", for this field only.
    #[serde(default)]
    pub absent: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    Min,
    Max,
    Sum,
    List,
}

/// A field's value in a reading.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

/// One reading: a part of the device (an outlet, a phase) or the whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// A reading of another kind than its device's (a CDU's leak rope).
    pub kind: Option<DeviceKind>,
    pub scope: Option<String>,
    pub index: Option<u32>,
    pub fields: BTreeMap<String, Value>,
    /// The meter values behind `delta` fields: (target field, value, the
    /// span at which it wraps when it is a Counter32).
    pub meters: Vec<(String, f64, Option<f64>)>,
}

/// A problem met while assembling: counted and logged by the poller, never
/// fatal to the poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// `no_such_object`, `wrong_type`, `truncated_table`, `unmapped_value`.
    pub reason: &'static str,
    pub oid: String,
    pub detail: String,
}

/// The profiles pitcrew ships.
pub const BUILTIN: &[(&str, &str)] = &[
    ("apc-rpdu2", include_str!("../profiles/apc-rpdu2.toml")),
    (
        "raritan-pdu2",
        include_str!("../profiles/raritan-pdu2.toml"),
    ),
    ("sentry4", include_str!("../profiles/sentry4.toml")),
    ("ups-mib", include_str!("../profiles/ups-mib.toml")),
];

/// Every field a profile may fill, per kind: the contract's own names.
fn known_fields(kind: DeviceKind) -> &'static [&'static str] {
    match kind {
        DeviceKind::Pdu => &[
            "name",
            "current_a",
            "voltage_v",
            "power_w",
            "energy_kwh",
            "energy_delta_kwh",
            "rating_a",
            "load",
            "state",
            "temperature_c",
            "humidity_pct",
        ],
        DeviceKind::Ups => &[
            "source",
            "battery",
            "charge_pct",
            "runtime_s",
            "on_battery_s",
            "load_pct",
            "input_voltage_v",
            "output_voltage_v",
            "output_power_w",
            "temperature_c",
            "alarms",
        ],
        DeviceKind::Cooling => &[
            "unit",
            "loop",
            "supply_c",
            "return_c",
            "delta_t_c",
            "flow_lpm",
            "pressure_kpa",
            "setpoint_c",
            "pump_on",
            "fan_on",
            "alarms",
        ],
        DeviceKind::Leak => &["detector", "leak", "zone"],
    }
}

impl Profile {
    /// Reads a profile file, checking every OID and field name.
    pub fn parse(origin: &str, text: &str) -> Result<Profile, FacilityError> {
        let p: Profile = toml::from_str(text).map_err(|e| FacilityError::Config {
            message: pitcrew_config::ConfigError::from_toml(origin, text, &e).to_string(),
        })?;
        let bad = |m: String| FacilityError::Config {
            message: format!("{origin}: {m}"),
        };
        let known = known_fields(p.kind);
        for (gi, g) in p.group.iter().enumerate() {
            if let Some(t) = &g.table {
                parse_oid(t)
                    .ok_or_else(|| bad(format!("group {}: bad table OID `{t}`", gi + 1)))?;
            }
            for (name, f) in &g.fields {
                if !known.contains(&name.as_str()) {
                    return Err(bad(format!(
                        "group {}: unknown field `{name}` for a {} profile; expected one of {}",
                        gi + 1,
                        p.kind.as_str(),
                        known.join(", ")
                    )));
                }
                for o in [&f.oid, &f.table, &f.rows_from, &f.decimals_table]
                    .into_iter()
                    .flatten()
                {
                    parse_oid(o).ok_or_else(|| bad(format!("field `{name}`: bad OID `{o}`")))?;
                }
                let located = f.oid.is_some()
                    || (f.column.is_some() && (g.table.is_some() || f.table.is_some()));
                if !located {
                    return Err(bad(format!(
                        "field `{name}` needs `oid`, or `column` with a table"
                    )));
                }
                if f.table.is_some() && f.agg.is_none() && g.table.is_none() {
                    return Err(bad(format!(
                        "field `{name}` reads a table into one value: give `agg`"
                    )));
                }
                if let Some(d) = &f.delta {
                    if !known.contains(&d.as_str()) {
                        return Err(bad(format!("field `{name}`: unknown delta field `{d}`")));
                    }
                }
            }
        }
        Ok(p)
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Profile> {
        let (n, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Profile::parse(n, text).ok()
    }

    /// Every subtree a poll must walk and every scalar it must get.
    pub fn plan(&self) -> (BTreeSet<Oid>, BTreeSet<Oid>) {
        let mut walks = BTreeSet::new();
        let mut gets = BTreeSet::new();
        for g in &self.group {
            if let Some(t) = g.table.as_deref().and_then(parse_oid) {
                walks.insert(t);
            }
            for f in g.fields.values() {
                if let Some(o) = f.oid.as_deref().and_then(parse_oid) {
                    gets.insert(o);
                }
                if let Some(o) = f.rows_from.as_deref().and_then(parse_oid) {
                    gets.insert(o);
                }
                for t in [&f.table, &f.decimals_table].into_iter().flatten() {
                    if let Some(o) = parse_oid(t) {
                        walks.insert(o);
                    }
                }
            }
        }
        (walks, gets)
    }

    /// Turns a poll's values into readings; problems are listed, and the
    /// readings keep every field that could be read.
    pub fn assemble(&self, walk: &Walk, problems: &mut Vec<Problem>) -> Vec<Reading> {
        // Readings of the same scope and part number merge (an outlet's
        // relay and its meter come from two tables).
        let mut out: BTreeMap<(Option<String>, Option<u32>), Reading> = BTreeMap::new();
        for g in &self.group {
            match g.table.as_deref().and_then(parse_oid) {
                Some(table) => self.assemble_table(g, &table, walk, &mut out, problems),
                None => {
                    let r = out.entry((g.scope.clone(), None)).or_default();
                    r.scope = g.scope.clone();
                    for (name, f) in &g.fields {
                        self.scalar_field(name, f, walk, r, problems);
                    }
                }
            }
        }
        for (name, value) in &self.constants {
            let v = match value {
                toml::Value::String(s) => Value::Text(s.clone()),
                toml::Value::Integer(i) => Value::Num(*i as f64),
                toml::Value::Float(f) => Value::Num(*f),
                _ => continue,
            };
            for r in out.values_mut() {
                r.fields.entry(name.clone()).or_insert_with(|| v.clone());
            }
        }
        out.into_values()
            .filter(|r| !r.fields.is_empty() || r.scope.is_none())
            .collect()
    }

    fn assemble_table(
        &self,
        g: &Group,
        table: &[u32],
        walk: &Walk,
        out: &mut BTreeMap<(Option<String>, Option<u32>), Reading>,
        problems: &mut Vec<Problem>,
    ) {
        // Rows: every index under the table's first column... under any
        // column, since some agents leave columns out.
        let mut rows: BTreeSet<Vec<u32>> = BTreeSet::new();
        for (oid, _) in walk.range(table.to_vec()..) {
            if !oid.starts_with(table) {
                break;
            }
            if oid.len() < table.len() + 2 {
                continue;
            }
            let index = &oid[table.len() + 1..];
            let row = if g.pivot && index.len() > 1 {
                index[..index.len() - 1].to_vec()
            } else {
                index.to_vec()
            };
            rows.insert(row);
        }
        let wanted: BTreeSet<u32> = g.fields.values().filter_map(|f| f.column).collect();
        for row in rows {
            let number = match g.index_column {
                Some(c) => {
                    let mut oid = table.to_vec();
                    oid.push(c);
                    oid.extend_from_slice(&row);
                    walk.get(&oid)
                        .and_then(Raw::int)
                        .and_then(|i| u32::try_from(i).ok())
                }
                None => match g.index_part {
                    Some(p) => row.get(p.wrapping_sub(1)).copied(),
                    None => row.last().copied(),
                },
            };
            let key = (g.scope.clone(), number);
            let mut reading = out.remove(&key).unwrap_or_else(|| Reading {
                scope: g.scope.clone(),
                index: number,
                ..Reading::default()
            });
            let mut missing = Vec::new();
            for (name, f) in &g.fields {
                let Some(col) = f.column else { continue };
                let mut oid = table.to_vec();
                oid.push(col);
                oid.extend_from_slice(&row);
                if let Some(sub) = f.sub {
                    oid.push(sub);
                }
                match walk.get(&oid) {
                    Some(raw) => {
                        let decimals =
                            f.decimals_table
                                .as_deref()
                                .and_then(parse_oid)
                                .and_then(|dt| {
                                    let mut d = dt;
                                    d.push(f.decimals_column.unwrap_or(7));
                                    d.extend_from_slice(&row);
                                    if let Some(sub) = f.sub {
                                        d.push(sub);
                                    }
                                    walk.get(&d).and_then(Raw::int)
                                });
                        self.set_field(name, f, raw, decimals, &oid, &mut reading, problems);
                    }
                    // A pivot row lacks the sensors its part does not have
                    // (an outlet without a meter): not a problem.
                    None if f.sub.is_some() => {}
                    None => missing.push(col),
                }
            }
            if !missing.is_empty() && missing.len() < wanted.len() {
                missing.sort_unstable();
                missing.dedup();
                problems.push(Problem {
                    reason: "truncated_table",
                    oid: oid_string(table),
                    detail: format!(
                        "row {} lacks column(s) {}",
                        oid_string(&row),
                        missing
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            out.insert(key, reading);
        }
    }

    fn scalar_field(
        &self,
        name: &str,
        f: &Field,
        walk: &Walk,
        r: &mut Reading,
        problems: &mut Vec<Problem>,
    ) {
        if let Some(oid) = f.oid.as_deref().and_then(parse_oid) {
            match walk.get(&oid) {
                Some(raw) => self.set_field(name, f, raw, None, &oid, r, problems),
                None => problems.push(Problem {
                    reason: "no_such_object",
                    oid: oid_string(&oid),
                    detail: format!("`{name}` was not returned"),
                }),
            }
            return;
        }
        let (Some(table), Some(col), Some(agg)) =
            (f.table.as_deref().and_then(parse_oid), f.column, f.agg)
        else {
            return;
        };
        let limit = f
            .rows_from
            .as_deref()
            .and_then(parse_oid)
            .and_then(|o| walk.get(&o))
            .and_then(Raw::int);
        let mut column = table.clone();
        column.push(col);
        let mut nums = Vec::new();
        let mut words = Vec::new();
        for (oid, raw) in walk.range(column.clone()..) {
            if !oid.starts_with(&column) {
                break;
            }
            let row = oid.get(column.len()).copied().unwrap_or(0);
            if limit.is_some_and(|n| i64::from(row) > n) {
                continue;
            }
            if agg == Agg::List {
                match raw.text() {
                    Some(t) => words.push(f.map.get(&t).cloned().unwrap_or(t)),
                    None => continue,
                }
            } else if let Some(n) = self.number(raw, f, None) {
                nums.push(n);
            }
        }
        let v = match agg {
            Agg::List => Some(Value::List(words)),
            Agg::Min => nums.iter().copied().reduce(f64::min).map(Value::Num),
            Agg::Max => nums.iter().copied().reduce(f64::max).map(Value::Num),
            Agg::Sum => (!nums.is_empty()).then(|| Value::Num(nums.iter().sum())),
        };
        if let Some(v) = v {
            r.fields.insert(name.to_owned(), v);
        }
    }

    /// A raw number scaled, or None when the profile says it means "absent".
    fn number(&self, raw: &Raw, f: &Field, decimals: Option<i64>) -> Option<f64> {
        let n = raw.number()?;
        if raw.int().is_some_and(|i| self.is_absent(f, i)) {
            return None;
        }
        let mut v = n * f.scale.unwrap_or(1.0);
        if let Some(d) = decimals.filter(|d| (0..=9).contains(d)) {
            v /= 10f64.powi(i32::try_from(d).unwrap_or(0));
        }
        // Scaling tenths gives 1.4000000000000001: keep what the device meant.
        Some((v * 1e6).round() / 1e6)
    }

    fn is_absent(&self, f: &Field, raw: i64) -> bool {
        self.absent.contains(&raw) || f.absent.contains(&raw)
    }

    #[allow(clippy::too_many_arguments)]
    fn set_field(
        &self,
        name: &str,
        f: &Field,
        raw: &Raw,
        decimals: Option<i64>,
        oid: &[u32],
        r: &mut Reading,
        problems: &mut Vec<Problem>,
    ) {
        if let Raw::NoSuch(what) = raw {
            problems.push(Problem {
                reason: "no_such_object",
                oid: oid_string(oid),
                detail: format!("`{name}`: {what}"),
            });
            return;
        }
        if !f.map.is_empty() {
            let key = raw.text().unwrap_or_default();
            match f.map.get(key.trim()) {
                Some(word) => {
                    r.fields.insert(name.to_owned(), Value::Text(word.clone()));
                }
                None => {
                    if raw.int().is_some_and(|i| self.is_absent(f, i)) {
                        return;
                    }
                    problems.push(Problem {
                        reason: "unmapped_value",
                        oid: oid_string(oid),
                        detail: format!("`{name}`: value {key} is not in the profile's map"),
                    });
                }
            }
            return;
        }
        if name == "name" {
            if let Some(t) = raw.text() {
                let t = t.trim().to_owned();
                if !t.is_empty() {
                    r.fields.insert(name.to_owned(), Value::Text(t));
                }
            }
            return;
        }
        match self.number(raw, f, decimals) {
            Some(v) => {
                r.fields.insert(name.to_owned(), Value::Num(v));
                if let Some(d) = &f.delta {
                    let wrap = matches!(raw, Raw::Counter32(_))
                        .then(|| 4_294_967_296.0 * f.scale.unwrap_or(1.0));
                    r.meters.push((d.clone(), v, wrap));
                }
            }
            None if raw.number().is_none() => problems.push(Problem {
                reason: "wrong_type",
                oid: oid_string(oid),
                detail: format!("`{name}` wants a number, the device answered {raw:?}"),
            }),
            None => {}
        }
    }
}

/// Picks the profile for a device from its sysObjectID, else the first
/// profile whose `detect_oid` the device answers.
pub fn detect<'p>(
    profiles: &'p [Profile],
    sys_object_id: &str,
    answers: impl Fn(&str) -> bool,
) -> Option<&'p Profile> {
    let id = sys_object_id.trim().trim_start_matches('.');
    let by_id = profiles
        .iter()
        .filter_map(|p| {
            p.sys_object_id
                .iter()
                .filter(|prefix| {
                    let prefix = prefix.trim_start_matches('.');
                    id == prefix || id.starts_with(&format!("{prefix}."))
                })
                .map(|prefix| prefix.len())
                .max()
                .map(|len| (len, p))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p);
    by_id.or_else(|| {
        profiles
            .iter()
            .find(|p| p.detect_oid.as_deref().is_some_and(&answers))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::snmprec::parse_snmprec;

    proptest::proptest! {
        /// Whatever a device answers inside a profile's tables (any row,
        /// column, type or value), assembling never panics and every
        /// problem names an OID.
        #[test]
        fn any_answer_assembles_without_panic(
            rows in proptest::collection::vec((0usize..4, 0u32..20, 0u32..30, 0u32..4, -5i64..100_000, 0u8..5), 0..200)
        ) {
            let profiles: Vec<Profile> = BUILTIN.iter().map(|(n, t)| Profile::parse(n, t).unwrap()).collect();
            let mut walk = Walk::new();
            for (pi, col, idx, sub, value, ty) in rows {
                let p = &profiles[pi % profiles.len()];
                let Some(table) = p.group.iter().filter_map(|g| g.table.as_deref()).nth(col as usize % 3) else { continue };
                let mut oid = parse_oid(table).unwrap();
                oid.extend([col % 16 + 1, 1, idx, sub]);
                let raw = match ty {
                    0 => Raw::Int(value),
                    1 => Raw::Str(value.to_string()),
                    2 => Raw::Str("n/a".into()),
                    3 => Raw::Counter32(value.unsigned_abs()),
                    _ => Raw::NoSuch("noSuchInstance"),
                };
                walk.insert(oid, raw);
            }
            for p in &profiles {
                let mut problems = Vec::new();
                let _ = p.assemble(&walk, &mut problems);
                proptest::prop_assert!(problems.iter().all(|x| !x.oid.is_empty()));
            }
        }
    }

    #[test]
    fn every_builtin_profile_parses() {
        for (name, text) in BUILTIN {
            let p = Profile::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&p.name, name);
            assert!(!p.group.is_empty());
        }
    }

    #[test]
    fn a_bad_profile_names_the_file_and_field() {
        let e = Profile::parse(
            "x.toml",
            "name = \"x\"\nkind = \"pdu\"\n[[group]]\nfields.watts = { oid = \"1.3\" }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `watts`"), "{e}");
        let e = Profile::parse("x.toml", "name = \"x\"\nkind = \"pdu\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("x.toml:3:1"), "{e}");
    }

    #[test]
    fn detection_prefers_the_longest_sysobjectid_prefix_then_a_standard_mib() {
        let all: Vec<Profile> = BUILTIN
            .iter()
            .map(|(n, t)| Profile::parse(n, t).unwrap())
            .collect();
        assert_eq!(
            detect(&all, "1.3.6.1.4.1.318.1.3.4.8", |_| false).map(|p| p.name.as_str()),
            Some("apc-rpdu2")
        );
        assert_eq!(
            detect(&all, ".1.3.6.1.4.1.13742.6", |_| false).map(|p| p.name.as_str()),
            Some("raritan-pdu2")
        );
        // 1.3.6.1.4.1.3180 is not APC's 318.
        assert!(detect(&all, "1.3.6.1.4.1.3180.1", |_| false).is_none());
        assert_eq!(
            detect(&all, "1.3.6.1.4.1.705.1", |o| o == "1.3.6.1.2.1.33.1.4.1.0")
                .map(|p| p.name.as_str()),
            Some("ups-mib")
        );
    }

    #[test]
    fn a_raritan_pivot_row_is_scaled_by_its_decimal_digits() {
        let p = Profile::builtin("raritan-pdu2").unwrap();
        let rec = "\
1.3.6.1.4.1.13742.6.3.5.3.1.3.1.7|4|gpu-n7-psu1
1.3.6.1.4.1.13742.6.3.5.4.1.7.1.7.1|66|3
1.3.6.1.4.1.13742.6.3.5.4.1.7.1.7.4|66|0
1.3.6.1.4.1.13742.6.5.4.3.1.3.1.7.1|2|5
1.3.6.1.4.1.13742.6.5.4.3.1.4.1.7.1|66|12532
1.3.6.1.4.1.13742.6.5.4.3.1.3.1.7.14|2|7
1.3.6.1.4.1.13742.6.5.4.3.1.4.1.7.4|66|231
";
        let mut problems = Vec::new();
        let readings = p.assemble(&parse_snmprec(rec), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let outlet = readings.iter().find(|r| r.index == Some(7)).unwrap();
        assert_eq!(outlet.fields.get("current_a"), Some(&Value::Num(12.532)));
        assert_eq!(outlet.fields.get("voltage_v"), Some(&Value::Num(231.0)));
        assert_eq!(
            outlet.fields.get("load"),
            Some(&Value::Text("near_overload".into()))
        );
        assert_eq!(outlet.fields.get("state"), Some(&Value::Text("on".into())));
        assert_eq!(
            outlet.fields.get("name"),
            Some(&Value::Text("gpu-n7-psu1".into()))
        );
    }

    #[test]
    fn a_sentry4_outlet_reads_in_its_units() {
        // Sentry4-MIB values as an agent reports them (tower.cord.outlet
        // index): 1234 hundredths of amps, 2073 tenths of volts, 256 W,
        // 5500 Wh, state on(1), current status highWarning(16).
        let p = Profile::builtin("sentry4").unwrap();
        let rec = "\
1.3.6.1.4.1.1718.4.1.8.2.1.3.1.1.5|4|gpu-n5-psu1
1.3.6.1.4.1.1718.4.1.8.3.1.1.1.1.5|2|1
1.3.6.1.4.1.1718.4.1.8.3.1.3.1.1.5|2|1234
1.3.6.1.4.1.1718.4.1.8.3.1.4.1.1.5|2|16
1.3.6.1.4.1.1718.4.1.8.3.1.6.1.1.5|2|2073
1.3.6.1.4.1.1718.4.1.8.3.1.7.1.1.5|2|256
1.3.6.1.4.1.1718.4.1.8.3.1.13.1.1.5|2|5500
1.3.6.1.4.1.1718.4.1.8.3.1.10.1.1.5|2|-1
";
        let mut problems = Vec::new();
        let r = p.assemble(&parse_snmprec(rec), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let o = r.iter().find(|r| r.index == Some(5)).unwrap();
        assert_eq!(o.fields.get("current_a"), Some(&Value::Num(12.34)));
        assert_eq!(o.fields.get("voltage_v"), Some(&Value::Num(207.3)));
        assert_eq!(o.fields.get("power_w"), Some(&Value::Num(256.0)));
        assert_eq!(o.fields.get("energy_kwh"), Some(&Value::Num(5.5)));
        assert_eq!(
            o.fields.get("load"),
            Some(&Value::Text("near_overload".into()))
        );
        assert_eq!(o.fields.get("state"), Some(&Value::Text("on".into())));
        assert_eq!(
            o.fields.get("name"),
            Some(&Value::Text("gpu-n5-psu1".into()))
        );
    }

    #[test]
    fn problems_name_the_oid_and_the_poll_keeps_the_rest() {
        let p = Profile::builtin("ups-mib").unwrap();
        let rec = "\
1.3.6.1.2.1.33.1.4.1.0|2|9
1.3.6.1.2.1.33.1.2.4.0|4|full
1.3.6.1.2.1.33.1.2.3.0|2|12
";
        let mut walk = parse_snmprec(rec);
        walk.insert(
            parse_oid("1.3.6.1.2.1.33.1.2.1.0").unwrap(),
            Raw::NoSuch("noSuchObject"),
        );
        let mut problems = Vec::new();
        let r = p.assemble(&walk, &mut problems);
        let reasons: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.reason, p.oid.as_str()))
            .collect();
        assert!(
            reasons.contains(&("unmapped_value", "1.3.6.1.2.1.33.1.4.1.0")),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&("wrong_type", "1.3.6.1.2.1.33.1.2.4.0")),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&("no_such_object", "1.3.6.1.2.1.33.1.2.1.0")),
            "{reasons:?}"
        );
        assert_eq!(r[0].fields.get("runtime_s"), Some(&Value::Num(720.0)));
    }
}
