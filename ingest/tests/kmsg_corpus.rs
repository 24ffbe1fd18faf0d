//! The real-world kernel-log corpus (`testdata/kmsg/wild`): lines other
//! people's machines printed, quoted in public bug reports, each file with
//! the events it must give (`<name>.expect`). Scores the parser line by
//! line and by kind: a line is right when exactly its expected events start
//! on it; a finding of a kind the line does not expect is a wrong kind.
//!
//! `cargo test -p pitcrew-ingest --test kmsg_corpus -- --nocapture` prints
//! the table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pitcrew_contract::{Event, Source, Timestamp};
use pitcrew_ingest::kmsg::{Line, Parser};

/// One expected event: `<line> <kind> [field=value ...]`.
#[derive(Debug)]
struct Expected {
    line: usize,
    kind: String,
    fields: Vec<(String, String)>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/kmsg/wild")
}

fn parse_expect(path: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (every corpus file needs its .expect)",
            path.display()
        )
    });
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut words = raw.split_whitespace();
        let line = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{}:{}: line number first", path.display(), n + 1));
        let kind = words.next().expect("kind").to_owned();
        let fields = words
            .map(|w| {
                let (k, v) = w
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}:{}: field=value", path.display(), n + 1));
                (k.to_owned(), v.replace("%20", " "))
            })
            .collect();
        out.push(Expected { line, kind, fields });
    }
    out
}

/// Every finding as (1-based line it started on, its event as JSON).
fn findings(log: &str) -> Vec<(usize, serde_json::Value)> {
    let mut parser = Parser::new();
    let mut raw_of_index = Vec::new();
    let mut found = Vec::new();
    for (i, raw) in log.lines().enumerate() {
        let line = Line::split(raw);
        if line.continuation {
            continue;
        }
        raw_of_index.push(i + 1);
        parser.push(line.text, &mut found);
    }
    parser.flush(&mut found);
    found
        .into_iter()
        .map(|f| {
            let ev = Event {
                id: "x".into(),
                node: "n".into(),
                time: Timestamp::EPOCH,
                source: Source::Kmsg,
                gpu: f.gpu,
                count: 1,
                labels: Default::default(),
                data: f.data,
            };
            let line = raw_of_index[usize::try_from(f.line).unwrap()];
            (line, serde_json::to_value(&ev).unwrap())
        })
        .collect()
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `field` is looked up in the event's data, then its GPU reference.
fn matches(event: &serde_json::Value, e: &Expected) -> bool {
    event["kind"] == e.kind.as_str()
        && e.fields.iter().all(|(k, v)| {
            let got = event["data"]
                .get(k)
                .or_else(|| event.get("gpu").and_then(|g| g.get(k)));
            match (got, v.as_str()) {
                (None, "-") => true,
                (Some(g), v) => v != "-" && scalar(g) == v,
                (None, _) => false,
            }
        })
}

#[derive(Default, Debug)]
struct KindScore {
    expected: usize,
    found: usize,
}

#[derive(Default, Debug)]
struct Score {
    lines: usize,
    right: usize,
    wrong_kind: Vec<String>,
    missed: Vec<String>,
    by_kind: BTreeMap<String, KindScore>,
    files: usize,
}

fn score() -> Score {
    let mut s = Score::default();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log_path in logs {
        s.files += 1;
        let name = log_path.file_name().unwrap().to_string_lossy().into_owned();
        let log = std::fs::read_to_string(&log_path).unwrap();
        let expected = parse_expect(&log_path.with_extension("expect"));
        let found = findings(&log);
        let total = log.lines().count();
        for e in &expected {
            assert!(
                (1..=total).contains(&e.line),
                "{name}: expectation for line {} past the end",
                e.line
            );
            s.by_kind.entry(e.kind.clone()).or_default().expected += 1;
        }
        for line in 1..=total {
            s.lines += 1;
            let exp: Vec<&Expected> = expected.iter().filter(|e| e.line == line).collect();
            let mut got: Vec<&serde_json::Value> = found
                .iter()
                .filter(|(l, _)| *l == line)
                .map(|(_, ev)| ev)
                .collect();
            let mut ok = true;
            for e in &exp {
                match got.iter().position(|ev| matches(ev, e)) {
                    Some(i) => {
                        got.remove(i);
                        s.by_kind.entry(e.kind.clone()).or_default().found += 1;
                    }
                    None => {
                        ok = false;
                        s.missed
                            .push(format!("{name}:{line}: {} {:?}", e.kind, e.fields));
                    }
                }
            }
            for ev in got {
                ok = false;
                let kind = ev["kind"].as_str().unwrap_or("?").to_owned();
                let near = expected
                    .iter()
                    .any(|e| e.kind == kind && e.line.abs_diff(line) <= 3);
                if near {
                    // The right kind, with wrong fields, on a neighbouring
                    // line of the same record, or once too often: a miss,
                    // not a wrong kind.
                    s.missed
                        .push(format!("{name}:{line}: extra or different {ev}"));
                } else {
                    s.wrong_kind.push(format!("{name}:{line}: {ev}"));
                }
            }
            if ok {
                s.right += 1;
            }
        }
    }
    s
}

#[test]
fn real_world_corpus_scores_at_least_95_percent_with_no_wrong_kind() {
    let s = score();
    println!(
        "kernel-log corpus: {} files, {} lines, {} right ({:.1}%)",
        s.files,
        s.lines,
        s.right,
        100.0 * s.right as f64 / s.lines as f64
    );
    println!("{:<16} {:>9} {:>6}", "kind", "expected", "found");
    for (kind, k) in &s.by_kind {
        println!("{kind:<16} {:>9} {:>6}", k.expected, k.found);
    }
    for m in &s.missed {
        println!("missed: {m}");
    }
    for w in &s.wrong_kind {
        println!("WRONG KIND: {w}");
    }
    assert!(s.lines >= 300, "the corpus holds at least 300 real lines");
    assert!(s.wrong_kind.is_empty(), "wrong kinds: {:#?}", s.wrong_kind);
    assert!(
        s.right * 100 >= s.lines * 95,
        "{} of {} lines right",
        s.right,
        s.lines
    );
}

#[test]
fn every_corpus_file_has_its_source() {
    let sources = std::fs::read_to_string(corpus_dir().join("SOURCES.md")).unwrap();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(sources.contains(&name), "{name} is not in SOURCES.md");
        }
    }
}
