//! `pitcrew check` and `pitcrew test`: compile rule files, print every
//! diagnostic as `file:line:col: error: message`, run their `[[test]]`s.

use std::io::Write as _;
use std::process::ExitCode;

use pitcrew_rules::{compile, run_test, Level};

use crate::cli::PathsArgs;
use pitcrew::rulefiles;

pub(crate) fn check(args: &PathsArgs) -> anyhow::Result<ExitCode> {
    let files = rulefiles::load(&args.paths)?;
    let mut out = std::io::stdout().lock();
    match compile(&files) {
        Ok(set) => {
            for w in &set.warnings {
                writeln!(out, "{w}")?;
            }
            writeln!(
                out,
                "ok: {} files, {} rules, {} tests",
                files.len(),
                set.program.rules().len(),
                set.tests.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            let errors = diags.iter().filter(|d| d.level == Level::Error).count();
            writeln!(out, "{errors} error(s) in {} files", files.len())?;
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn test(args: &PathsArgs) -> anyhow::Result<ExitCode> {
    let files = rulefiles::load(&args.paths)?;
    let mut out = std::io::stdout().lock();
    let set = match compile(&files) {
        Ok(s) => s,
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            writeln!(out, "rule tests: not run, the rules do not compile")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for t in &set.tests {
        let r = run_test(&set.program, t);
        if r.passed() {
            passed += 1;
            writeln!(out, "ok   {}:{}: {}", r.file, r.line, r.name)?;
        } else {
            failed += 1;
            writeln!(out, "FAIL {}:{}: {}", r.file, r.line, r.name)?;
            for f in &r.failures {
                writeln!(out, "     - {f}")?;
            }
            writeln!(out, "     actual outputs:")?;
            if r.actual.is_empty() {
                writeln!(out, "       (none)")?;
            }
            for a in &r.actual {
                writeln!(out, "       + {a}")?;
            }
        }
    }
    writeln!(out, "rule tests: {passed} passed, {failed} failed")?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
