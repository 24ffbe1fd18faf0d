//! Fuzz the rule compiler: any bytes as a rule file. It must never panic;
//! every failure is a diagnostic with a line and column inside the file,
//! and a file that compiles runs its own tests without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitcrew_rules::{compile, run_test, SourceFile};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let lines = text.lines().count().max(1) + 1;
    match compile(&[SourceFile { name: "f.toml".into(), text }]) {
        Ok(set) => {
            for t in set.tests.iter().take(4) {
                let _ = run_test(&set.program, t);
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in diags {
                assert!(d.line >= 1 && d.line <= lines, "{d}");
                assert!(d.column >= 1, "{d}");
            }
        }
    }
});
