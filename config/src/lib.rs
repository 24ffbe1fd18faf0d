//! How every pitcrew configuration file is read: the Kafka config, the
//! remediation config, the inventory and the agent's.
//!
//! - [`layered`]: TOML text, then `PITCREW__<SECTION>__<KEY>` environment
//!   overrides (double underscores separate the path, any case), into a
//!   typed config. A problem in the file is reported at `file:line:col`; a
//!   problem an override made names the variable.
//! - [`Secret`]: a value read from a file or an environment variable named
//!   in config; `Debug` and `Display` print `***`, so it cannot reach a
//!   log, an error or a metric by accident.
//!
//! No I/O besides reading the files and variables it is asked to; no
//! global state.

mod secret;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

pub use secret::{Secret, SecretError};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "PITCREW__";

/// A configuration problem, located where it was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// In the file: `file:line:col: message`.
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Not tied to a place in the file (an override, a missing file).
    #[error("{origin}: {message}")]
    Whole { origin: String, message: String },
}

impl ConfigError {
    /// Configuration is fixed by a person, never by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }

    fn whole(origin: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole {
            origin: origin.to_owned(),
            message: message.into(),
        }
    }

    /// A TOML error in `text`, at its line and column when it has a span.
    pub fn from_toml(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
        match e.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                ConfigError::At {
                    origin: origin.to_owned(),
                    line,
                    column,
                    message: e.message().trim_end_matches('.').to_owned(),
                }
            }
            None => ConfigError::whole(origin, e.message().trim_end_matches('.')),
        }
    }
}

/// Reads `path` (None: no file, only defaults and the environment).
pub fn read(path: Option<&std::path::Path>) -> Result<(String, String), ConfigError> {
    match path {
        Some(p) => {
            let origin = p.display().to_string();
            std::fs::read_to_string(p)
                .map(|t| (t, origin.clone()))
                .map_err(|e| ConfigError::whole(&origin, format!("cannot read: {e}")))
        }
        None => Ok((String::new(), "<defaults>".to_owned())),
    }
}

/// Parses `text` as `T`, with the `PITCREW__` overrides in `env` whose
/// first segment is one of `sections` (the top-level tables `T` knows;
/// other stages' sections are theirs) applied over the file.
pub fn layered<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    sections: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    // The file alone first: its problems are reported where they are.
    let direct: Result<T, _> = toml::from_str(text);
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))?;
    let applied = apply_env_overrides(&mut doc, env, sections)?;
    match direct {
        Err(e) => Err(ConfigError::from_toml(origin, text, &e)),
        Ok(v) if applied.is_empty() => Ok(v),
        Ok(_) => T::deserialize(toml::Value::Table(doc)).map_err(|e| {
            ConfigError::whole(
                origin,
                format!(
                    "with the environment overrides {}: {}",
                    applied.join(", "),
                    e.message().trim_end_matches('.')
                ),
            )
        }),
    }
}

/// Deep-merges `over` into `base`: tables merge, everything else replaces.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Applies `PITCREW__A__B=value` as `a.b = value` to `doc`, for the
/// variables whose first segment is in `sections` (all when empty), in a
/// fixed order. Returns the variables applied.
pub fn apply_env_overrides(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    sections: &[&str],
) -> Result<Vec<String>, ConfigError> {
    // Sorted, so overrides apply in a fixed order.
    let overrides: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let mut applied = Vec::new();
    for (key, value) in overrides {
        let path: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::whole(
                &key,
                "environment override with an empty path segment",
            ));
        }
        if !sections.is_empty() && !sections.contains(&path[0].as_str()) {
            continue;
        }
        let mut table = &mut *doc;
        for segment in &path[..path.len() - 1] {
            let entry = table
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::whole(
                        &key,
                        format!("environment override: `{segment}` is not a table"),
                    ))
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), env_value(&value));
        applied.push(key);
    }
    Ok(applied)
}

/// Environment values are typed like TOML scalars where they look like one.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    toml::Value::String(raw.to_owned())
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Expands one `prefix[a-b]suffix` range (`n[1-3]` is n1, n2, n3; `n[01-03]`
/// keeps the width). Returns each name with the number it got.
pub fn expand(pattern: &str) -> Result<Vec<(String, String)>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![(pattern.to_owned(), String::new())]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|i| i + open)
        .ok_or_else(|| format!("unclosed `[` in `{pattern}`"))?;
    let (prefix, range, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| format!("bad range `[{range}]` in `{pattern}`: write [1-32]"))?;
    let width = if a.starts_with('0') && a.len() > 1 {
        a.len()
    } else {
        0
    };
    let (lo, hi): (u32, u32) = match (a.parse(), b.parse()) {
        (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
        _ => {
            return Err(format!(
                "bad range `[{range}]` in `{pattern}`: write [1-32]"
            ))
        }
    };
    if hi - lo >= 200_000 {
        return Err(format!(
            "range `[{range}]` is too large (at most 200000 names)"
        ));
    }
    let rest = expand(suffix)?;
    let mut out = Vec::new();
    for i in lo..=hi {
        let num = format!("{i:0width$}");
        for (r, _) in &rest {
            out.push((format!("{prefix}{num}{r}"), num.clone()));
        }
    }
    Ok(out)
}

/// Parses a duration written as a number and a unit: `250ms`, `10s`, `5m`,
/// `2h`, `1d`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}`: write 10s, 250ms, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("bad duration `{s}`: the unit is ms, s, m, h or d")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration `{s}`"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        governor: Governor,
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Governor {
        max_out: Option<u32>,
        cooldown: Option<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_file_problem_is_reported_at_its_line_and_column() {
        let text = "[governor]\nmax_out = 3\ncooldwn = \"1h\"\n";
        let e = layered::<Cfg>(text, "r.toml", &["governor"], env(&[])).unwrap_err();
        let ConfigError::At { line, column, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!((*line, *column), (3, 1), "{e}");
        assert!(
            e.to_string()
                .starts_with("r.toml:3:1: unknown field `cooldwn`"),
            "{e}"
        );
    }

    #[test]
    fn overrides_apply_to_this_files_sections_only() {
        let text = "[governor]\nmax_out = 3\n";
        let c: Cfg = layered(
            text,
            "r.toml",
            &["governor"],
            env(&[
                ("PITCREW__GOVERNOR__COOLDOWN", "2h"),
                ("PITCREW__KAFKA__BROKERS", "b:9092"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.governor.max_out, Some(3));
        assert_eq!(c.governor.cooldown.as_deref(), Some("2h"));
        let c: Cfg = layered(
            text,
            "r.toml",
            &["governor"],
            env(&[("PITCREW__GOVERNOR__MAX_OUT", "9")]),
        )
        .unwrap();
        assert_eq!(c.governor.max_out, Some(9));
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let e = layered::<Cfg>(
            "",
            "r.toml",
            &["governor"],
            env(&[("PITCREW__GOVERNOR__MAX_OUT", "many")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("PITCREW__GOVERNOR__MAX_OUT"), "{e}");
        let e =
            layered::<Cfg>("", "r.toml", &[], env(&[("PITCREW__GOVERNOR____X", "1")])).unwrap_err();
        assert!(e.to_string().contains("empty path segment"), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
