//! Helm, built once with Go into the harness cache (no Debian package
//! exists): `helm lint` and `helm template` for the chart in deploy/helm.
//! Pinned; the module comes from the Go module proxy like kube-apiserver's.

use std::path::PathBuf;
use std::process::Command;

use crate::{cache_dir, HarnessError};

pub const VERSION: &str = "v3.16.3";

/// Builds helm once into the cache and returns its path.
pub fn ensure_binary() -> Result<PathBuf, HarnessError> {
    let _building = crate::build_lock();
    let dir = cache_dir().join(format!("helm-{VERSION}"));
    let out = dir.join("helm");
    if out.exists() {
        return Ok(out);
    }
    let go = cache_dir().join("go");
    let staging = cache_dir().join(format!("helm-{VERSION}.partial-{}", std::process::id()));
    let status = Command::new("go")
        .args(["install", &format!("helm.sh/helm/v3/cmd/helm@{VERSION}")])
        .env("GOBIN", &staging)
        .env("GOPATH", go.join("path"))
        .env("GOMODCACHE", go.join("mod"))
        .env("GOCACHE", go.join("build"))
        .output()
        .map_err(|e| HarnessError::io("run go install helm", e))?;
    if !status.status.success() {
        return Err(HarnessError::Command {
            command: format!("go install helm.sh/helm/v3/cmd/helm@{VERSION}"),
            status: status.status.to_string(),
            output: String::from_utf8_lossy(&status.stderr).into_owned(),
        });
    }
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another process installed it first: theirs is as good.
        if !out.exists() {
            return Err(HarnessError::io("install helm", e));
        }
    }
    Ok(out)
}

/// Runs helm with `args`; stdout on success.
pub fn run(args: &[&str]) -> Result<String, HarnessError> {
    let helm = ensure_binary()?;
    let out = Command::new(&helm)
        .args(args)
        .env("HELM_CACHE_HOME", cache_dir().join("helm-home/cache"))
        .env("HELM_CONFIG_HOME", cache_dir().join("helm-home/config"))
        .env("HELM_DATA_HOME", cache_dir().join("helm-home/data"))
        .output()
        .map_err(|e| HarnessError::io("run helm", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: format!("helm {}", args.join(" ")),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}
