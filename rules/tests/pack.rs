//! The default pack compiles, and every one of its `[[test]]`s passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pitcrew_rules::{compile, default_pack, run_test};

#[test]
fn default_pack_compiles_without_warnings() {
    let set = compile(&default_pack()).unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert!(set.program.rules().len() >= 30);
}

#[test]
fn every_pack_test_passes_and_every_rule_is_tested() {
    let set = compile(&default_pack()).unwrap_or_default();
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in &set.tests {
        let r = run_test(&set.program, t);
        if !r.passed() {
            failures.push(format!(
                "{}:{} {}\n  {}\n  actual:\n    {}",
                r.file,
                r.line,
                r.name,
                r.failures.join("\n  "),
                r.actual.join("\n    ")
            ));
        }
        for e in &t.expects {
            if let Some(rule) = &e.incident {
                if e.count > 0 {
                    seen.insert(rule.clone());
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let untested: Vec<&str> = set
        .program
        .rule_names()
        .filter(|n| !seen.contains(*n))
        .collect();
    assert!(
        untested.is_empty(),
        "rules without a test that expects them: {untested:?}"
    );
    assert!(set.tests.len() >= 40);
}

#[test]
fn scenarios_one_to_nine_each_have_a_test() {
    let set = compile(&default_pack()).unwrap_or_default();
    for n in 1..=9 {
        let tag = format!("scenario {n}:");
        assert!(
            set.tests.iter().any(|t| t.name.starts_with(&tag)),
            "no test for {tag}"
        );
    }
}

#[test]
fn the_pack_splits_into_a_node_stage_and_group_routes() {
    let set = compile(&default_pack()).unwrap_or_default();
    let plan = set.program.stage_plan();
    let routes: Vec<&str> = plan.routes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(routes, ["leaf_switch", "driver_version", "job"]);
    let names = |p: &pitcrew_rules::Program| p.rule_names().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        names(&plan.routes[0].1),
        ["ib-link-down", "leaf-switch-down"]
    );
    assert!(names(&plan.routes[2].1).contains(&"xid-app-error".to_owned()));
    let node = names(&plan.node);
    assert!(!node.contains(&"ib-link-down".to_owned()));
    assert!(node.contains(&"gpu-fallen-off-bus".to_owned()));
    assert_eq!(
        node.len()
            + plan
                .routes
                .iter()
                .map(|(_, p)| p.rules().len())
                .sum::<usize>(),
        set.program.rules().len()
    );
}
