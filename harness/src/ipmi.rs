//! OpenIPMI `ipmi_sim` BMCs for tests: RMCP+ on 127.0.0.1, a console for
//! injecting events, and chassis power emulated by a hook script that
//! records every change (assets/ipmi/, adapted from shared/recipes/ipmi).

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{wait_ready, Supervised};
use crate::{free_port, run_dir, HarnessError};

/// User and password every simulated BMC accepts (test credentials).
pub const USER: &str = "admin";
pub const PASSWORD: &str = "secret";

/// One running simulated BMC. Stopped on drop.
#[derive(Debug)]
pub struct SimulatedBmc {
    port: u16,
    console_port: u16,
    dir: PathBuf,
    log: PathBuf,
    process: Option<Supervised>,
}

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/ipmi")
}

impl SimulatedBmc {
    /// Starts one BMC and returns once it answers `chassis power status`.
    pub fn start() -> Result<SimulatedBmc, HarnessError> {
        let dir = run_dir("bmc")?;
        let port = free_port()?;
        let console_port = free_port()?;
        std::fs::create_dir_all(dir.join("state"))
            .map_err(|e| HarnessError::io("bmc state dir", e))?;
        std::fs::write(dir.join("power"), "1\n")
            .map_err(|e| HarnessError::io("bmc power file", e))?;
        std::fs::write(dir.join("events.log"), "")
            .map_err(|e| HarnessError::io("bmc events file", e))?;
        let conf = format!(
            "name \"bmc{port}\"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789ab{:04x}
  endlan
  chassis_control \"{} {}\"
  console 127.0.0.1 {console_port}
  user 2 true  \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight
",
            port % 0xffff,
            assets().join("chassis.sh").display(),
            dir.display()
        );
        let lan = dir.join("lan.conf");
        std::fs::write(&lan, conf).map_err(|e| HarnessError::io("write lan.conf", e))?;
        let log = dir.join("sim.log");
        let args = vec![
            "-c".to_owned(),
            lan.display().to_string(),
            "-f".to_owned(),
            assets().join("sim.emu").display().to_string(),
            "-s".to_owned(),
            dir.join("state").display().to_string(),
            "-n".to_owned(),
        ];
        let process =
            Supervised::spawn("ipmi_sim", "ipmi_sim", &args, &log, Duration::from_secs(3))?;
        let mut bmc = SimulatedBmc {
            port,
            console_port,
            dir,
            log,
            process: Some(process),
        };
        bmc.wait_ready()?;
        Ok(bmc)
    }

    /// `127.0.0.1:port` of the RMCP+ endpoint.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let mut process = self.process.take();
        let result = wait_ready(
            "ipmi_sim",
            process.as_mut(),
            &self.log,
            Duration::from_secs(20),
            || self.ipmitool(&["chassis", "power", "status"]).is_ok(),
        );
        self.process = process;
        result
    }

    /// Every chassis change the hook recorded, like `set power 0`, in order.
    pub fn power_events(&self) -> Vec<String> {
        self.view().power_events()
    }

    /// Whether the emulated chassis is on.
    pub fn powered_on(&self) -> bool {
        self.view().powered_on()
    }

    /// A read-only view of the chassis that can go to another thread (a
    /// simulated node agent that is silent while its power is off).
    pub fn view(&self) -> PowerView {
        PowerView {
            dir: self.dir.clone(),
        }
    }

    /// Runs ipmitool against this BMC (the password goes through the
    /// environment, not argv).
    pub fn ipmitool(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-E",
                "-C",
                "3",
                "-N",
                "1",
                "-R",
                "2",
            ])
            .args(args)
            .env("IPMI_PASSWORD", PASSWORD)
            .output()
            .map_err(|e| HarnessError::io("run ipmitool", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::Command {
                command: format!("ipmitool {}", args.join(" ")),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Sends one line to the simulator's console (e.g. `sel_add ...` or
    /// `sensor_set_value 0x20 0 1 0x95 1`). Never `quit`: it aborts the
    /// simulator.
    pub fn console(&self, line: &str) -> Result<(), HarnessError> {
        let mut s = TcpStream::connect(("127.0.0.1", self.console_port))
            .map_err(|e| HarnessError::io("bmc console", e))?;
        s.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| HarnessError::io("bmc console", e))?;
        // Let the simulator read the line before the socket closes.
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }
}

/// What a [`SimulatedBmc`]'s chassis did, readable from any thread.
#[derive(Clone, Debug)]
pub struct PowerView {
    dir: PathBuf,
}

impl PowerView {
    /// Every chassis change, like `set power 0`, in order.
    pub fn power_events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
            .collect()
    }

    /// Whether the chassis is on.
    pub fn powered_on(&self) -> bool {
        std::fs::read_to_string(self.dir.join("power")).is_ok_and(|s| s.trim() == "1")
    }

    /// How many times the power went off (a cycle counts once).
    pub fn power_offs(&self) -> usize {
        self.power_events()
            .iter()
            .filter(|e| e.as_str() == "set power 0")
            .count()
    }
}

impl Drop for SimulatedBmc {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
