//! The sushy-tools Redfish emulator (PyPI) on libvirt's test driver, on a
//! free loopback port, stopped on drop: a real Redfish service with one
//! System (power state and reset actions) and one Chassis with its
//! `Thermal` resource. It does not emulate LogServices: tests serve
//! DMTF-shaped LogEntry documents from [`crate::docserver`] for those.
//! Its venv is built once per version in the cache folder and sees
//! Debian's python3-libvirt (`--system-site-packages`).

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{wait_ready, Supervised};
use crate::HarnessError;

const PACKAGES: &[&str] = &["sushy-tools==2.2.0"];
const VENV_VERSION: &str = "redfish-sim-1";

/// The venv with sushy-tools, built if missing.
pub fn venv() -> Result<PathBuf, HarnessError> {
    crate::snmpsim::build_venv(VENV_VERSION, PACKAGES, true)
}

/// A running sushy-emulator.
#[derive(Debug)]
pub struct SushyEmulator {
    pub port: u16,
    log: PathBuf,
    _process: Supervised,
}

impl SushyEmulator {
    pub fn start() -> Result<SushyEmulator, HarnessError> {
        let venv = venv()?;
        let run = crate::run_dir("sushy")?;
        let log = run.join("sushy.log");
        let port = crate::free_port()?;
        let program = venv.join("bin/sushy-emulator").display().to_string();
        let args = [
            "--libvirt-uri".to_owned(),
            "test:///default".to_owned(),
            "--interface".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
        ];
        let mut process = Supervised::spawn(
            "sushy-emulator",
            &program,
            &args,
            &log,
            Duration::from_secs(5),
        )?;
        wait_ready(
            "sushy-emulator",
            Some(&mut process),
            &log,
            Duration::from_secs(60),
            || crate::http_ok(port, "/redfish/v1/Systems"),
        )?;
        Ok(SushyEmulator {
            port,
            log,
            _process: process,
        })
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        crate::tail(&self.log, 40)
    }
}
