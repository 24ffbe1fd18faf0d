//! The test harness: provisions real components and runs them on loopback.
//!
//! Used by `cargo xtask test` (which starts one of each for the whole run)
//! and by the integration tests (which start their own when run alone).
//! Everything downloaded is cached under the workspace's target folder, so
//! a warm run downloads nothing.
//!
//! Contract: a started component is stopped when its handle drops, and also
//! when the process that started it dies (each child is supervised through
//! a pipe that closes with its parent), so no run leaves brokers behind.

pub mod cluster;
pub mod docserver;
pub mod helm;
pub mod ipmi;
pub mod kafka;
pub mod kube;
mod process;
pub mod prometheus;
pub mod redfish;
pub mod slurm;
pub mod snmpsim;
pub mod webhook;

use std::path::PathBuf;

/// Why a component could not be provisioned or started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); last output:\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{component} did not become ready within {seconds} s; last log lines:\n{log}")]
    NotReady {
        component: String,
        seconds: u64,
        log: String,
    },
    #[error("{component} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        component: String,
        status: String,
        log: String,
    },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where downloads and built helpers are cached, each by version, outside
/// the clone so that every checkout on the machine (CI's clean ones too)
/// reuses them: `$PITCREW_CACHE_DIR`, else `$XDG_CACHE_HOME/pitcrew`, else
/// `$HOME/.cache/pitcrew`; without a home, `<target>/harness-cache`.
/// Held while a cached tool is checked for and built: tests run on
/// threads of one process, and two of them building the same tool into
/// one staging path (named after the process) would race. Processes do not
/// share staging paths; a finished tool is renamed into place whole.
pub(crate) fn build_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("PITCREW_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("pitcrew");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache").join("pitcrew");
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("harness-cache")
}

/// A fresh folder for one run of one component.
pub fn run_dir(component: &str) -> Result<PathBuf, HarnessError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "pitcrew-it-{component}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}

/// A free TCP port on 127.0.0.1 (free when asked; bind promptly).
pub fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io("bind 127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("local addr", e))
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `GET path` on the loopback port answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some_and(|(status, _)| status == 200)
}

/// `GET path` on the loopback port: status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
