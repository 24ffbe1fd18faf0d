//! The facility device simulators' Python side, in one venv built once per
//! version in the cache folder: snmpsim (PyPI) serving recorded walks of
//! real devices over SNMP v2c and v3 on 127.0.0.1 (each `*.snmprec` of a
//! folder under the community, or v3 context, named after the file), and
//! pymodbus serving a register map ([`ModbusSim`]).
//!
//! Pitfalls met here: as root snmpsim must be told which user to become; it
//! stays root (a venv under /root is unreadable to `nobody`, and pysnmp
//! imports its ciphers lazily, after the switch). pysnmp 7.1 needs a
//! `cryptography` that has both `hazmat.decrepit` and the OpenSSL backend
//! module (47-49) or its SNMPv3 privacy fails ("Decryption error" on the
//! client). pymodbus is pinned to 3.8, whose datastore takes live updates
//! (3.16 copies it into a simulator at start).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{wait_ready, Supervised};
use crate::HarnessError;

/// Pinned: snmpsim 1.2.x imports pysmi without declaring it.
const PACKAGES: &[&str] = &[
    "snmpsim==1.2.2",
    "pysmi==1.6.3",
    "pysnmp==7.1.30",
    "cryptography==47.0.0",
    "pymodbus==3.8.6",
];
const VENV_VERSION: &str = "facility-sims-1";

/// The venv with snmpsim and pymodbus, built if missing.
pub fn venv() -> Result<PathBuf, HarnessError> {
    build_venv(VENV_VERSION, PACKAGES, false)
}

/// A venv of Debian's Python with `packages` from PyPI, in the cache folder
/// under `version`, built if missing (`system_site`: it also sees Debian's
/// Python packages, e.g. python3-libvirt).
pub(crate) fn build_venv(
    version: &str,
    packages: &[&str],
    system_site: bool,
) -> Result<PathBuf, HarnessError> {
    let _guard = crate::build_lock();
    let dir = crate::cache_dir().join(version);
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
    let mut create = std::process::Command::new(python);
    create.args(["-m", "venv"]);
    if system_site {
        create.arg("--system-site-packages");
    }
    crate::process::run(create.arg(&dir))?;
    crate::process::run(
        std::process::Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(packages),
    )?;
    let _ = crate::process::run(
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir),
    );
    std::fs::write(&done, packages.join("\n")).map_err(|e| HarnessError::io("mark venv", e))?;
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

/// snmpsim's SNMPv3 user: authPriv with SHA-256 and AES-128.
#[derive(Clone, Debug)]
pub struct V3User {
    pub name: String,
    pub auth_key: String,
    pub priv_key: String,
}

impl Snmpsim {
    /// Serves every `.snmprec` in `recordings` (copied, so a test may change
    /// its copy); ready when the first recording's community answers.
    pub fn start(recordings: &[(&str, String)]) -> Result<Snmpsim, HarnessError> {
        Snmpsim::start_with(recordings, None)
    }

    /// As [`Snmpsim::start`], with an SNMPv3 user too.
    pub fn start_with(
        recordings: &[(&str, String)],
        v3: Option<&V3User>,
    ) -> Result<Snmpsim, HarnessError> {
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
            args.push("--process-user=root".into());
            args.push("--process-group=root".into());
        }
        if let Some(u) = v3 {
            args.extend([
                format!("--v3-user={}", u.name),
                format!("--v3-auth-key={}", u.auth_key),
                "--v3-auth-proto=SHA256".to_owned(),
                format!("--v3-priv-key={}", u.priv_key),
                "--v3-priv-proto=AES".to_owned(),
            ]);
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

/// A pymodbus TCP server on 127.0.0.1 holding `size` holding and input
/// registers (addresses 0..size; beyond is an IllegalDataAddress
/// exception). [`ModbusSim::set`] changes values while it runs.
#[derive(Debug)]
pub struct ModbusSim {
    pub port: u16,
    values: PathBuf,
    current:
        std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<u16, u16>>>,
    log: PathBuf,
    _process: Supervised,
}

const MODBUS_SERVER: &str = r#"
import asyncio, json, os, sys
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer

port = int(sys.argv[1]); control = sys.argv[2]; size = int(sys.argv[3])
store = ModbusSlaveContext(hr=ModbusSequentialDataBlock(1, [0] * size), ir=ModbusSequentialDataBlock(1, [0] * size))
context = ModbusServerContext(slaves=store, single=True)

async def watch():
    seen = None
    while True:
        try:
            st = os.stat(control).st_mtime_ns
            if st != seen:
                values = json.load(open(control))
                for table, regs in values.items():
                    fx = 3 if table == "holding" else 4
                    for addr, v in regs.items():
                        context[0].setValues(fx, int(addr), [int(v) & 0xFFFF])
                seen = st
        except (FileNotFoundError, ValueError):
            pass
        await asyncio.sleep(0.02)

async def main():
    asyncio.get_running_loop().create_task(watch())
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))

asyncio.run(main())
"#;

impl ModbusSim {
    pub fn start(size: u16) -> Result<ModbusSim, HarnessError> {
        let venv = venv()?;
        let run = crate::run_dir("modbus")?;
        let script = run.join("server.py");
        std::fs::write(&script, MODBUS_SERVER)
            .map_err(|e| HarnessError::io("write modbus server", e))?;
        let values = run.join("values.json");
        std::fs::write(&values, "{}").map_err(|e| HarnessError::io("write values", e))?;
        let port = crate::free_port()?;
        let log = run.join("modbus.log");
        let args = vec![
            script.display().to_string(),
            port.to_string(),
            values.display().to_string(),
            size.to_string(),
        ];
        let program = venv.join("bin/python").display().to_string();
        let mut process =
            Supervised::spawn("pymodbus", &program, &args, &log, Duration::from_secs(5))?;
        wait_ready(
            "pymodbus",
            Some(&mut process),
            &log,
            Duration::from_secs(60),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )?;
        Ok(ModbusSim {
            port,
            values,
            current: std::sync::Mutex::default(),
            log,
            _process: process,
        })
    }

    /// Sets registers (`table` is `holding` or `input`) and waits until the
    /// server has them.
    pub fn set(&self, table: &str, regs: &[(u16, u16)]) -> Result<(), HarnessError> {
        let mut cur = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = cur.entry(table.to_owned()).or_default();
        for (a, v) in regs {
            t.insert(*a, *v);
        }
        let mut json = String::from("{");
        for (i, (table, regs)) in cur.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!("\"{table}\":{{"));
            let body: Vec<String> = regs.iter().map(|(a, v)| format!("\"{a}\":{v}")).collect();
            json.push_str(&body.join(","));
            json.push('}');
        }
        json.push('}');
        let tmp = self.values.with_extension("tmp");
        std::fs::write(&tmp, json).map_err(|e| HarnessError::io("write values", e))?;
        std::fs::rename(&tmp, &self.values).map_err(|e| HarnessError::io("rename values", e))?;
        // The server looks every 20 ms.
        std::thread::sleep(Duration::from_millis(150));
        Ok(())
    }

    pub fn log(&self) -> String {
        crate::tail(&self.log, 40)
    }
}
