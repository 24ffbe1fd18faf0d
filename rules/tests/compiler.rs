//! The compiler's diagnostics: the right place and the right words.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pitcrew_rules::{compile, Diagnostic, SourceFile};

fn diags(text: &str) -> Vec<Diagnostic> {
    match compile(&[SourceFile {
        name: "r.toml".into(),
        text: text.into(),
    }]) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

fn one(text: &str) -> Diagnostic {
    let d = diags(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    d[0].clone()
}

const OK_RULE: &str = "[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\" }\n";

#[test]
fn a_good_rule_compiles() {
    assert!(diags(OK_RULE).is_empty());
}

#[test]
fn syntax_errors_point_at_the_line() {
    let d = one("[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\" \n");
    assert_eq!(d.file, "r.toml");
    assert_eq!(d.line, 3);
    assert!(d.message.starts_with("syntax:"), "{}", d.message);
    assert!(d.to_string().starts_with("r.toml:3:"), "{d}");
}

#[test]
fn unknown_kind_names_the_column_and_suggests() {
    let d = one("[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xdi\" }\n");
    assert_eq!((d.line, d.column), (3, 17));
    assert!(
        d.message.contains("unknown event kind `gpu.xdi`"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("did you mean `gpu.xid`"),
        "{}",
        d.message
    );
}

#[test]
fn unknown_field_lists_the_kinds_fields() {
    let d = one(
        "[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\", where = { \"data.cod\" = 79 } }\n",
    );
    assert_eq!(d.line, 3);
    assert!(
        d.message
            .contains("unknown field `data.cod` for kind gpu.xid"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("did you mean `data.code`"),
        "{}",
        d.message
    );
}

#[test]
fn dotted_keys_and_operator_tables_both_work() {
    let text = "[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\", where = { data.code = { in = [79, 48] }, gpu.index = { ge = 0 } } }\n";
    assert!(diags(text).is_empty(), "{:?}", diags(text));
    let d = one("[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\", where = { \"data.code\" = \"79\" } }\n");
    assert!(d.message.contains("is a number"), "{}", d.message);
}

#[test]
fn bad_duration() {
    let d = one(&format!("{OK_RULE}hold = \"5 minutes\"\n"));
    assert_eq!(d.line, 4);
    assert!(d.message.contains("bad duration"), "{}", d.message);
}

#[test]
fn window_shorter_than_the_signals_cadence() {
    let d = one("[[rule]]\nname = \"a\"\nwhen = { kind = \"bmc.sensor\" }\nwindow = { over = \"5s\", agg = \"count\" }\nthreshold = { fire = 1 }\n");
    assert_eq!(d.line, 4);
    assert!(d.message.contains("shorter than 10s"), "{}", d.message);
    assert!(
        d.message.contains("bmc.sensor is sampled every 10s"),
        "{}",
        d.message
    );
}

#[test]
fn sequence_within_zero() {
    let d = one("[[rule]]\nname = \"a\"\n[rule.sequence]\nfirst = { kind = \"gpu.xid\" }\nfollowed_by = { kind = \"pcie.aer\" }\nwithin = \"0s\"\n");
    assert_eq!(d.line, 6);
    assert!(d.message.contains("longer than 0s"), "{}", d.message);
}

#[test]
fn unknown_plan() {
    let d = one(&format!("{OK_RULE}plan = \"reboot_nod\"\n"));
    assert_eq!((d.line, d.column), (4, 8));
    assert!(
        d.message.contains("unknown plan `reboot_nod`"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("did you mean `reboot_node`"),
        "{}",
        d.message
    );
    // A declared plan is known.
    assert!(diags(&format!(
        "[[plan]]\nname = \"flash_firmware\"\n{OK_RULE}plan = \"flash_firmware\"\n"
    ))
    .is_empty());
}

#[test]
fn suppression_cycles() {
    let text = "[[rule]]\nname = \"a\"\nsuppress = [\"b\"]\nwhen = { kind = \"gpu.xid\" }\n[[rule]]\nname = \"b\"\nsuppress = [\"a\"]\nwhen = { kind = \"gpu.xid\" }\n";
    let d = one(text);
    assert!(
        d.message.contains("suppression cycle: a -> b -> a"),
        "{}",
        d.message
    );
    assert_eq!(d.line, 3);
    let d = one("[[rule]]\nname = \"a\"\nsuppress = [\"zz\"]\nwhen = { kind = \"gpu.xid\" }\n");
    assert!(d.message.contains("unknown rule `zz`"), "{}", d.message);
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = "[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.nope\" }\n[[rule]]\nname = \"b\"\nwhen = { kind = \"gpu.xid\" }\nplan = \"nope\"\nseverity = \"loud\"\n[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xid\" }\nbogus = 1\n";
    let d = diags(text);
    let lines: Vec<usize> = d.iter().map(|x| x.line).collect();
    // The second `a` is not reported as a duplicate: the first did not compile.
    assert_eq!(lines, vec![3, 7, 8, 12], "{d:#?}");
}

#[test]
fn hysteresis_on_the_wrong_side_and_unknown_keys() {
    let d = one("[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.pcie_replay\" }\nwindow = { over = \"1m\", agg = \"sum\", field = \"data.delta\" }\nthreshold = { op = \">\", fire = 8, clear = 10 }\n");
    assert!(d.message.contains("firing side"), "{}", d.message);
    let d = one(&format!("{OK_RULE}sumary = \"x\"\n"));
    assert!(
        d.message.contains("did you mean `summary`"),
        "{}",
        d.message
    );
}

#[test]
fn templates_are_checked() {
    let d = one(&format!(
        "{OK_RULE}summary = \"Xid {{data.cde}} on {{node}}\"\n"
    ));
    assert_eq!((d.line, d.column), (4, 16));
    assert!(
        d.message.contains("unknown field `data.cde`"),
        "{}",
        d.message
    );
}

#[test]
fn tests_in_files_are_checked_too() {
    let d = one(&format!("{OK_RULE}[[test]]\nname = \"t\"\n[[test.event]]\nnode = \"n1\"\nkind = \"gpu.xid\"\ngpu = 1\ndata = {{ code = \"x\" }}\n"));
    assert!(
        d.message.contains("does not fit kind gpu.xid"),
        "{}",
        d.message
    );
}
