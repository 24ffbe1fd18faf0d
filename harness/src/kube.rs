//! A real Kubernetes API server for tests: kube-apiserver built from the
//! `k8s.io/kubernetes` Go module (assets/kube-apiserver: a wrapper module
//! pinning v1.37.2 and its staging modules; built once, cached in
//! [`crate::cache_dir`]) in front of Debian's etcd, on 127.0.0.1, with a static
//! bearer token in `system:masters`.
//!
//! Alone it has no scheduler, kubelet or controller manager: tests create
//! Node objects and write their status themselves. [`crate::cluster`] adds
//! them (kube-controller-manager, kube-scheduler, KWOK).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{run, wait_ready, Supervised};
use crate::{cache_dir, free_port, run_dir, HarnessError};

/// The bearer token the test API server accepts (test credential).
pub const TOKEN: &str = "pitcrew-test-token";

/// Builds kube-apiserver once into the cache and returns its path.
pub fn ensure_binary() -> Result<PathBuf, HarnessError> {
    let _building = crate::build_lock();
    let out = cache_dir().join("kube-apiserver-v1.37.2");
    if out.exists() {
        return Ok(out);
    }
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/kube-apiserver");
    let go = cache_dir().join("go");
    let staging = out.with_extension(format!("partial-{}", std::process::id()));
    run(Command::new("go")
        .current_dir(&module)
        .args(["build", "-o"])
        .arg(&staging)
        .arg(".")
        .env("GOPATH", go.join("path"))
        .env("GOMODCACHE", go.join("mod"))
        .env("GOCACHE", go.join("build"))
        .env("GOFLAGS", "-mod=readonly"))?;
    std::fs::rename(&staging, &out).map_err(|e| HarnessError::io("install kube-apiserver", e))?;
    Ok(out)
}

/// etcd and kube-apiserver, running. Stopped on drop.
#[derive(Debug)]
pub struct KubeApiserver {
    url: String,
    dir: PathBuf,
    log: PathBuf,
    apiserver: Option<Supervised>,
    etcd: Option<Supervised>,
}

impl KubeApiserver {
    pub fn start() -> Result<KubeApiserver, HarnessError> {
        let binary = ensure_binary()?;
        let dir = run_dir("kube")?;
        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let port = free_port()?;
        let etcd_log = dir.join("etcd.log");
        let etcd = Supervised::spawn(
            "etcd",
            "etcd",
            &[
                "--data-dir".to_owned(),
                dir.join("etcd").display().to_string(),
                "--listen-client-urls".to_owned(),
                format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls".to_owned(),
                format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls".to_owned(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls".to_owned(),
                format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster".to_owned(),
                format!("default=http://127.0.0.1:{etcd_peer}"),
            ],
            &etcd_log,
            Duration::from_secs(5),
        )?;
        let key = dir.join("sa.key");
        let public = dir.join("sa.pub");
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-in"])
            .arg(&key)
            .args(["-pubout", "-out"])
            .arg(&public))?;
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},pitcrew,uid-pitcrew,system:masters\n"),
        )
        .map_err(|e| HarnessError::io("write tokens", e))?;
        let log = dir.join("apiserver.log");
        let args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            // Nothing advertises this server to anyone.
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".to_owned(),
            format!("--service-account-key-file={}", public.display()),
            format!("--service-account-signing-key-file={}", key.display()),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            // A range for Service IPs, never contacted.
            "--service-cluster-ip-range=10.96.0.0/24".to_owned(),
            // Debian's etcd (3.4.23) cannot answer watch progress requests,
            // which streamed lists need: clients (KWOK's) whose streamed
            // list fails at once fall back to list-and-watch, where a
            // stream that ends in error later costs them a relist.
            "--feature-gates=WatchList=false".to_owned(),
        ];
        let apiserver = Supervised::spawn(
            "kube-apiserver",
            &binary.display().to_string(),
            &args,
            &log,
            Duration::from_secs(10),
        )?;
        let mut k = KubeApiserver {
            url: format!("https://127.0.0.1:{port}"),
            dir,
            log,
            apiserver: Some(apiserver),
            etcd: Some(etcd),
        };
        k.wait_ready()?;
        Ok(k)
    }

    /// `https://127.0.0.1:port`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the server's certificate (self-signed by
    /// kube-apiserver into its cert dir).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    /// Writes a kubeconfig for this server (its CA, the test token) to
    /// `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> Result<(), HarnessError> {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {}
    certificate-authority: {}
users:
- name: pitcrew
  user:
    token: {TOKEN}
contexts:
- name: test
  context: {{cluster: test, user: pitcrew}}
current-context: test
",
            self.url,
            self.ca_file().display()
        );
        std::fs::write(path, text).map_err(|e| HarnessError::io("write kubeconfig", e))
    }

    /// Where the server's files are (its kubeconfig from `cargo xtask
    /// kube` among them).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let mut process = self.apiserver.take();
        let result = wait_ready(
            "kube-apiserver",
            process.as_mut(),
            &self.log,
            Duration::from_secs(120),
            || {
                self.request("GET", "/readyz", None)
                    .is_ok_and(|body| body.trim() == "ok")
            },
        );
        self.apiserver = process;
        result
    }

    /// One API request through curl (`--data` as JSON; PATCH is a merge
    /// patch). Returns the body; errors on HTTP >= 400.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, HarnessError> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(self.ca_file())
            .args([
                "-X",
                method,
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
            ]);
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            cmd.args(["-H", &format!("Content-Type: {ct}"), "--data", b]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .map_err(|e| HarnessError::io("run curl", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::Command {
                command: format!("curl -X {method} {path}"),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}

impl Drop for KubeApiserver {
    fn drop(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(10));
        }
        if let Some(mut p) = self.etcd.take() {
            p.stop(Duration::from_secs(5));
        }
        // PITCREW_HARNESS_KEEP=1 keeps the logs for a post-mortem.
        if std::env::var_os("PITCREW_HARNESS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
