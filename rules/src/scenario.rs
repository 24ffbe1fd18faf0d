//! Fault scripts for `pitcrew demo` and `pitcrew simulate`: the
//! `[[test.event]]` format of rule tests, at the top level, so an event
//! sequence moves between a rule test and a script unchanged.
//!
//! ```toml
//! name = "GPU off the bus on n17"
//!
//! [[event]]
//! at = "10s"                   # from the start of the run
//! node = "n17"
//! kind = "gpu.xid"
//! gpu = 3
//! data = { code = 79 }
//! ```
//!
//! Event times are `TEST_EPOCH + at`; the player shifts them to its clock.

use toml::de::DeTable;

use crate::compile::Cx;
use crate::diag::{Diagnostic, Diags, Level, SourceMap};
use crate::duration::Span;
use crate::testing::{event, TEST_EPOCH};
use pitcrew_contract::Event;

/// A parsed fault script.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    /// In time order; `time` is `TEST_EPOCH` plus the event's `at`.
    pub events: Vec<Event>,
}

impl Scenario {
    /// Parses a script; every problem is a diagnostic at file:line:column.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, Vec<Diagnostic>> {
        let map = SourceMap::new(file, text);
        let mut diags = Diags::default();
        let mut labels = Vec::new();
        let (doc, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            return Err(errors
                .iter()
                .map(|e| {
                    map.diag(
                        &e.span().unwrap_or(0..0),
                        Level::Error,
                        format!("syntax: {}", e.message().trim_end_matches('.')),
                    )
                })
                .collect());
        }
        let mut cx = Cx::new(&map, &mut diags, &mut labels);
        let whole = (doc.get_ref(), 0..text.len());
        cx.keys(
            whole.clone(),
            &["name", "description", "event"],
            "a scenario",
        );
        let name = cx
            .opt_str(whole.clone(), "name")
            .map_or_else(|| file.to_owned(), |n| n.0);
        let description = cx.opt_str(whole.clone(), "description").map(|d| d.0);
        let mut events = Vec::new();
        match cx.get(whole, "event") {
            Some(v) => {
                for (i, t) in cx.tables(v, "event").into_iter().enumerate() {
                    let _ = event(&mut cx, t, &name, i, &mut events);
                }
            }
            None => cx.err(&(0..0), "a scenario needs at least one [[event]]".into()),
        }
        if diags.has_errors() {
            return Err(diags.list);
        }
        events.sort_by_key(|e| e.time);
        Ok(Scenario {
            name,
            description,
            events,
        })
    }

    /// How far into the run the last event is.
    pub fn length(&self) -> Span {
        Span(
            self.events
                .last()
                .map_or(0, |e| e.time.unix_nanos() - TEST_EPOCH.unix_nanos()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_use_the_rule_test_format_and_come_out_in_time_order() {
        let text = r#"
name = "two faults"
[[event]]
at = "20s"
node = "n[1-2]"
kind = "net.ib_counter"
data = { counter = "link_downed", delta = 1 }
[[event]]
at = "5s"
node = "n17"
kind = "gpu.xid"
gpu = 3
data = { code = 79 }
"#;
        let s = Scenario::parse("s.toml", text).unwrap();
        assert_eq!(s.name, "two faults");
        assert_eq!(s.events.len(), 3);
        assert_eq!(s.events[0].node, "n17");
        assert_eq!(
            s.events[0].time.unix_nanos() - TEST_EPOCH.unix_nanos(),
            5_000_000_000
        );
        assert_eq!(s.length(), Span::from_secs(20));
    }

    #[test]
    fn mistakes_name_the_line_and_column() {
        let text = "[[event]]\nat = \"5s\"\nnode = \"n1\"\nkind = \"gpu.xdi\"\n";
        let d = Scenario::parse("s.toml", text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (4, 8), "{d:?}");
        assert!(d[0].message.contains("gpu.xid"), "{}", d[0].message);
        let d = Scenario::parse("s.toml", "name = \"x\"\n").unwrap_err();
        assert!(d[0].message.contains("[[event]]"), "{d:?}");
        let d = Scenario::parse("s.toml", "[[event]\n").unwrap_err();
        assert!(d[0].message.starts_with("syntax"), "{d:?}");
    }
}
