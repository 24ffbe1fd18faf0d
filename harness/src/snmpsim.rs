//! snmpsim (PyPI) serving recorded walks of real devices over SNMP v2c on
//! 127.0.0.1: each `*.snmprec` of a folder is served under the community
//! named after the file. The venv is built once per version in the cache
//! folder, with Debian's /usr/bin/python3: as root snmpsim drops to
//! `nobody`, and a Python under /root could not import itself after that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{wait_ready, Supervised};
use crate::HarnessError;

/// Pinned: snmpsim 1.2.x imports pysmi without declaring it.
const PACKAGES: &[&str] = &["snmpsim==1.2.2", "pysmi==1.6.3", "pysnmp==7.1.30"];
const VENV_VERSION: &str = "snmpsim-1.2.2";

/// The venv with snmpsim, built if missing.
pub fn venv() -> Result<PathBuf, HarnessError> {
    let _guard = crate::build_lock();
    let dir = crate::cache_dir().join(VENV_VERSION);
    // A venv cannot be moved (its scripts name their own path), so it is
    // built in place and marked complete last; a half-built one is redone.
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    crate::process::run(
        std::process::Command::new(python)
            .args(["-m", "venv"])
            .arg(&dir),
    )?;
    crate::process::run(
        std::process::Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PACKAGES),
    )?;
    let _ = crate::process::run(
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir),
    );
    std::fs::write(&done, PACKAGES.join("\n")).map_err(|e| HarnessError::io("mark venv", e))?;
    Ok(dir)
}

/// A running snmpsim.
#[derive(Debug)]
pub struct Snmpsim {
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
    _process: Supervised,
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> Result<u16, HarnessError> {
    let s =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| HarnessError::io("bind udp", e))?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("udp addr", e))
}

/// An SNMP v2c GET of sysDescr.0, BER by hand: any answer means the agent
/// serves that community.
pub fn answers(port: u16, community: &str) -> bool {
    let c = community.as_bytes();
    let varbind: &[u8] = &[
        0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
    ];
    let mut pdu = vec![
        0x02,
        0x01,
        0x01,
        0x02,
        0x01,
        0x00,
        0x02,
        0x01,
        0x00,
        0x30,
        varbind.len() as u8,
    ];
    pdu.extend_from_slice(varbind);
    let mut msg = vec![0x02, 0x01, 0x01, 0x04, c.len() as u8];
    msg.extend_from_slice(c);
    msg.push(0xa0);
    msg.push(pdu.len() as u8);
    msg.extend_from_slice(&pdu);
    let mut packet = vec![0x30, msg.len() as u8];
    packet.extend_from_slice(&msg);
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    if sock.send_to(&packet, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    sock.recv_from(&mut buf).is_ok()
}

impl Snmpsim {
    /// Serves every `.snmprec` in `recordings` (copied, so a test may change
    /// its copy); ready when the first recording's community answers.
    pub fn start(recordings: &[(&str, String)]) -> Result<Snmpsim, HarnessError> {
        let venv = venv()?;
        let run = crate::run_dir("snmpsim")?;
        let data = run.join("data");
        let cache = run.join("cache");
        for d in [&data, &cache] {
            std::fs::create_dir_all(d).map_err(|e| HarnessError::io("snmpsim dirs", e))?;
        }
        for (name, text) in recordings {
            std::fs::write(data.join(format!("{name}.snmprec")), text)
                .map_err(|e| HarnessError::io("write recording", e))?;
        }
        let _ = crate::process::run(
            std::process::Command::new("chmod")
                .args(["-R", "a+rwX"])
                .arg(&run),
        );
        let port = free_udp_port()?;
        let log = run.join("snmpsim.log");
        let mut args = vec![
            format!("--data-dir={}", data.display()),
            format!("--cache-dir={}", cache.display()),
            format!("--agent-udpv4-endpoint=127.0.0.1:{port}"),
        ];
        // As root snmpsim refuses to run unless told whom to become.
        if is_root() {
            args.push("--process-user=nobody".into());
            args.push("--process-group=nogroup".into());
        }
        let program = venv
            .join("bin/snmpsim-command-responder")
            .display()
            .to_string();
        let mut process =
            Supervised::spawn("snmpsim", &program, &args, &log, Duration::from_secs(5))?;
        let first = recordings
            .first()
            .map(|(n, _)| (*n).to_owned())
            .unwrap_or_default();
        wait_ready(
            "snmpsim",
            Some(&mut process),
            &log,
            Duration::from_secs(120),
            || answers(port, &first),
        )?;
        Ok(Snmpsim {
            port,
            data,
            log,
            _process: process,
        })
    }

    pub fn log(&self) -> String {
        crate::tail(&self.log, 40)
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
