//! Supervised child processes.
//!
//! A component runs under `sh`, which starts it in the background and then
//! blocks reading its stdin, a pipe from us. When we drop the handle, or
//! when our process dies for any reason (even SIGKILL), the pipe closes,
//! `read` returns, and `sh` stops the component with SIGTERM, then SIGKILL
//! after a grace period.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;

#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    name: String,
}

const SUPERVISOR: &str = r#"
"$@" </dev/null >>"$PITCREW_HARNESS_LOG" 2>&1 &
pid=$!
echo "$pid" >"$PITCREW_HARNESS_LOG.pid"
read -r _ignored
kill -TERM "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt "$PITCREW_HARNESS_GRACE" ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"#;

impl Supervised {
    /// Starts `program args...` with output appended to `log`.
    pub(crate) fn spawn(
        name: &str,
        program: &str,
        args: &[String],
        log: &Path,
        grace: Duration,
    ) -> Result<Supervised, HarnessError> {
        // A pid file left by an earlier run of the same component (a
        // restart) would make the new one look dead before it started.
        let _ = std::fs::remove_file(format!("{}.pid", log.display()));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(program)
            .args(args)
            .env("PITCREW_HARNESS_LOG", log)
            .env(
                "PITCREW_HARNESS_GRACE",
                (grace.as_millis() / 100).to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn {name}"), e))?;
        let stdin = child.stdin.take();
        Ok(Supervised {
            child,
            stdin,
            name: name.to_owned(),
        })
    }

    /// The component's exit status if it (and so its supervisor) has exited.
    pub(crate) fn exited(&mut self, log: &Path) -> Option<String> {
        // The supervisor keeps running while the component is dead, so look
        // at the component's own pid.
        let pid = std::fs::read_to_string(format!("{}.pid", log.display())).ok()?;
        let alive = Path::new(&format!("/proc/{}", pid.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(") Z ");
        if alive {
            None
        } else {
            Some(format!("{} (pid {}) is gone", self.name, pid.trim()))
        }
    }

    /// Stops the component and waits for the supervisor.
    pub(crate) fn stop(&mut self, timeout: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(20));
    }
}

/// Polls `ready` until it says yes (Ok), the component exits, or `limit`
/// passes (errors carry the tail of the component's log).
pub(crate) fn wait_ready(
    component: &str,
    process: Option<&mut Supervised>,
    log: &Path,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let start = Instant::now();
    let mut process = process;
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        if let Some(status) = process.as_mut().and_then(|p| p.exited(log)) {
            return Err(HarnessError::Exited {
                component: component.to_owned(),
                status,
                log: crate::tail(log, 40),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(HarnessError::NotReady {
        component: component.to_owned(),
        seconds: limit.as_secs(),
        log: crate::tail(log, 40),
    })
}

/// Runs a command to completion, capturing its output for the error.
pub(crate) fn run(cmd: &mut Command) -> Result<(), HarnessError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("run {shown}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    Err(HarnessError::Command {
        command: shown,
        status: out.status.to_string(),
        output: lines[lines.len().saturating_sub(30)..].join("\n"),
    })
}
