//! Prometheus and Alertmanager from Debian's packages (`prometheus`,
//! `prometheus-alertmanager`; adapted from shared/recipes/prometheus), on
//! free loopback ports, each in a run folder of its own, stopped on drop.
//! Alertmanager runs without gossip (`--cluster.listen-address=`).

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{wait_ready, Supervised};
use crate::{free_port, http_ok, run_dir, HarnessError};

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    port: u16,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml text; the string
    /// `{dir}` in it is replaced by the run folder, where `rules` is
    /// written as `rules.yml`). Returns once `/-/ready` answers.
    pub fn start(config: &str, rules: &str) -> Result<Prometheus, HarnessError> {
        let dir = run_dir("prometheus")?;
        let port = free_port()?;
        let d = dir.display().to_string();
        std::fs::write(dir.join("rules.yml"), rules)
            .map_err(|e| HarnessError::io("rules.yml", e))?;
        std::fs::write(dir.join("prometheus.yml"), config.replace("{dir}", &d))
            .map_err(|e| HarnessError::io("prometheus.yml", e))?;
        let log = dir.join("prometheus.log");
        let args = vec![
            format!("--config.file={d}/prometheus.yml"),
            format!("--storage.tsdb.path={d}/data"),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-lifecycle".to_owned(),
        ];
        let mut process = Supervised::spawn(
            "prometheus",
            "prometheus",
            &args,
            &log,
            Duration::from_secs(5),
        )?;
        wait_ready(
            "prometheus",
            Some(&mut process),
            &log,
            Duration::from_secs(30),
            || http_ok(port, "/-/ready"),
        )?;
        Ok(Prometheus {
            port,
            dir,
            process: Some(process),
        })
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running Alertmanager.
#[derive(Debug)]
pub struct Alertmanager {
    port: u16,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (alertmanager.yml text). Returns
    /// once `/-/ready` answers.
    pub fn start(config: &str) -> Result<Alertmanager, HarnessError> {
        let dir = run_dir("alertmanager")?;
        let port = free_port()?;
        let d = dir.display().to_string();
        std::fs::write(dir.join("alertmanager.yml"), config)
            .map_err(|e| HarnessError::io("alertmanager.yml", e))?;
        let log = dir.join("alertmanager.log");
        let args = vec![
            format!("--config.file={d}/alertmanager.yml"),
            format!("--storage.path={d}/data"),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_owned(),
        ];
        let mut process = Supervised::spawn(
            "alertmanager",
            "prometheus-alertmanager",
            &args,
            &log,
            Duration::from_secs(5),
        )?;
        wait_ready(
            "alertmanager",
            Some(&mut process),
            &log,
            Duration::from_secs(30),
            || http_ok(port, "/-/ready"),
        )?;
        Ok(Alertmanager {
            port,
            dir,
            process: Some(process),
        })
    }

    /// `127.0.0.1:port`, for Prometheus's `alerting` section.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
