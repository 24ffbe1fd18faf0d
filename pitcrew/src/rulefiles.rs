//! Reading rule, inventory and scenario files for `check`, `test`,
//! `replay`, `rules`, `demo` and `simulate`: the rules crate does no I/O,
//! so the binary reads for it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use pitcrew_rules::{Diagnostic, Inventory, Scenario, SourceFile};

/// The path that names the built-in default pack.
pub const DEFAULT_PACK: &str = "@default";

/// Reads every `.toml` file of the given files and folders (folders
/// recursively, in name order). `@default` is the built-in pack.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == DEFAULT_PACK {
            files.extend(pitcrew_rules::default_pack());
            continue;
        }
        collect(p, &mut files).with_context(|| format!("read rules from {}", p.display()))?;
    }
    Ok(files)
}

fn collect(p: &Path, out: &mut Vec<SourceFile>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(p)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let is_toml = e.extension().is_some_and(|x| x == "toml");
            if e.is_dir() || is_toml {
                collect(&e, out)?;
            }
        }
    } else {
        let text = std::fs::read_to_string(p)?;
        out.push(SourceFile {
            name: p.display().to_string(),
            text,
        });
    }
    Ok(())
}

/// Reads an inventory file; diagnostics become one error that lists them.
pub fn inventory(path: Option<&Path>) -> anyhow::Result<Inventory> {
    let Some(path) = path else {
        return Ok(Inventory::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read inventory {}", path.display()))?;
    Inventory::parse(&path.display().to_string(), &text).map_err(|d| diagnostics("inventory", &d))
}

fn diagnostics(what: &str, d: &[Diagnostic]) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} has errors:\n{}",
        d.iter()
            .map(Diagnostic::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Reads and parses a fault script (`demo --scenario`, `simulate
/// --scenario`).
pub fn scenario(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read scenario {}", path.display()))?;
    Scenario::parse(&path.display().to_string(), &text).map_err(|d| diagnostics("the scenario", &d))
}
