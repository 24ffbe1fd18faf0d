//! Slurm through `scontrol` and `squeue` (slurmrestd 22.05-25.x has no
//! endpoint to drain a node or requeue a job; the CLI works everywhere).
//!
//! Observe first: `scontrol -o show node` gives the state and reason. A
//! drain whose reason does not start with `pitcrew:` is an operator's, and
//! pitcrew neither claims nor resumes it.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{for_the_audit, CheckNode, CheckOutcome, NodeCheck};
use super::{BoxFuture, DrainResult, ExecError, Scheduler};

/// Reasons pitcrew writes start with this, and only such drains are resumed.
pub const REASON_PREFIX: &str = "pitcrew:";

#[derive(Clone, Debug)]
pub struct Slurm {
    /// `SLURM_CONF` for the commands; `None`: Slurm's default.
    pub conf: Option<PathBuf>,
    /// Where `scontrol` and `squeue` are; `None`: PATH.
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// A node as `scontrol -o show node` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// `IDLE+DRAIN`, `MIXED`, `ALLOCATED+DRAIN`...
    pub state: String,
    pub reason: Option<String>,
}

impl NodeView {
    pub fn drained(&self) -> bool {
        self.state
            .split('+')
            .any(|s| s == "DRAIN" || s == "DRAINING" || s == "DRAINED")
    }
}

/// Parses one line of `scontrol -o show node N`: `Key=Value` pairs, where
/// `Reason=` runs to the next ` Key=` (a reason may contain spaces).
pub fn parse_node_line(line: &str) -> Option<NodeView> {
    let line = line.trim_end();
    let state = field(line, "State")?;
    let reason = field(line, "Reason").filter(|r| !r.is_empty() && *r != "(null)");
    Some(NodeView {
        state: state.to_owned(),
        reason: reason.map(|r| {
            // scontrol appends " [user@time]" to a reason.
            match r.rfind(" [") {
                Some(i) if r.ends_with(']') => r[..i].to_owned(),
                _ => r.to_owned(),
            }
        }),
    })
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let start = line
        .match_indices(&pat)
        .find(|(i, _)| *i == 0 || line.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| i + pat.len())?;
    let rest = &line[start..];
    if key == "Reason" {
        // Up to the next " Word=" where Word is capitalised.
        let bytes = rest.as_bytes();
        let mut end = rest.len();
        for (i, _) in rest.match_indices(' ') {
            let after = &rest[i + 1..];
            let word: String = after
                .chars()
                .take_while(|c| *c != '=' && *c != ' ')
                .collect();
            if !word.is_empty()
                && after[word.len()..].starts_with('=')
                && word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && !bytes.is_empty()
            {
                end = i;
                break;
            }
        }
        return Some(&rest[..end]);
    }
    Some(rest.split(' ').next().unwrap_or(""))
}

impl Slurm {
    /// Runs a Slurm command to its end (or `timeout`), whatever its status.
    async fn output(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<std::process::Output, ExecError> {
        let path = match &self.bin_dir {
            Some(d) => d.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args).kill_on_drop(true);
        if let Some(c) = &self.conf {
            cmd.env("SLURM_CONF", c);
        }
        tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| ExecError::retryable("slurm", format!("{program} timed out")))?
            .map_err(|e| ExecError::permanent("slurm", format!("cannot run {program}: {e}")))
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, ExecError> {
        let out = self.output(program, args, self.timeout).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let msg = format!("{program} {}: {stderr}", args.first().unwrap_or(&""));
        // The controller being away is worth a retry; a wrong node or job is not.
        let transient = [
            "Unable to contact",
            "Socket timed out",
            "Connection refused",
            "Resource temporarily",
        ]
        .iter()
        .any(|s| stderr.contains(s));
        Err(if transient {
            ExecError::retryable("slurm", msg)
        } else {
            ExecError::permanent("slurm", msg)
        })
    }

    pub async fn node(&self, node: &str) -> Result<NodeView, ExecError> {
        let out = self.run("scontrol", &["-o", "show", "node", node]).await?;
        out.lines().find_map(parse_node_line).ok_or_else(|| {
            ExecError::permanent("slurm", format!("no node {node} in scontrol output"))
        })
    }

    /// Running (or starting) job ids on the node.
    pub async fn jobs_on(&self, node: &str) -> Result<Vec<String>, ExecError> {
        let out = self
            .run(
                "squeue",
                &["-h", "-w", node, "-t", "RUNNING,CONFIGURING", "-o", "%A"],
            )
            .await?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

impl Scheduler for Slurm {
    fn running<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<String>, ExecError>> {
        Box::pin(self.jobs_on(node))
    }

    fn drain<'a>(
        &'a self,
        node: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<DrainResult, ExecError>> {
        Box::pin(async move {
            let view = self.node(node).await?;
            if view.drained() {
                let ours = view
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(REASON_PREFIX));
                return Ok(if ours {
                    DrainResult::AlreadyOurs
                } else {
                    DrainResult::AlreadyTheirs
                });
            }
            let reason = if reason.starts_with(REASON_PREFIX) {
                reason.to_owned()
            } else {
                format!("{REASON_PREFIX} {reason}")
            };
            let reason: String = reason.chars().filter(|c| *c != '"').take(200).collect();
            let node_arg = format!("nodename={node}");
            let reason_arg = format!("reason={reason}");
            self.run(
                "scontrol",
                &["update", &node_arg, "state=drain", &reason_arg],
            )
            .await?;
            Ok(DrainResult::Drained)
        })
    }

    fn requeue<'a>(
        &'a self,
        node: &'a str,
        job: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, ExecError>> {
        Box::pin(async move {
            let running = self.jobs_on(node).await?;
            let jobs: Vec<String> = match job {
                Some(j) => running.into_iter().filter(|r| r == j).collect(),
                None => running,
            };
            if jobs.is_empty() {
                return Ok(jobs);
            }
            let list = jobs.join(",");
            self.run("scontrol", &["requeue", &list]).await?;
            Ok(jobs)
        })
    }

    fn resume<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<bool, ExecError>> {
        Box::pin(async move {
            let view = self.node(node).await?;
            let ours = view
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(REASON_PREFIX));
            if !view.drained() || !ours {
                return Ok(false);
            }
            let node_arg = format!("nodename={node}");
            self.run("scontrol", &["update", &node_arg, "state=resume"])
                .await?;
            Ok(true)
        })
    }
}

/// A node check through Slurm: `srun -w NODE` in a maintenance reservation
/// of the node alone.
///
/// A drained node takes no job, not even one asking for it by name, so the
/// check: reserves the node for the check's user (`flags=maint,ignore_jobs`:
/// no one else's job can start there), resumes it if drained, runs the
/// command with `srun --reservation`, drains it again with the reason it
/// had (pitcrew's drain stays pitcrew's, an operator's stays theirs) and
/// deletes the reservation. Every part observes first, so a check cut off
/// by a restart is run again from the start.
#[derive(Clone, Debug)]
pub struct SlurmCheck {
    pub slurm: Slurm,
    pub command: Vec<String>,
    /// For the whole check, the command's run included.
    pub timeout: Duration,
    /// Whose the reservation is (`srun` runs as this user); `None`: the
    /// user pitcrew runs as.
    pub user: Option<String>,
}

impl SlurmCheck {
    /// The reservation's name for a node.
    pub fn reservation(node: &str) -> String {
        format!("pitcrew-check-{node}")
    }

    async fn user(&self) -> Result<String, ExecError> {
        if let Some(u) = &self.user {
            return Ok(u.clone());
        }
        let out = tokio::process::Command::new("id")
            .arg("-un")
            .output()
            .await
            .map_err(|e| ExecError::permanent("slurm", format!("cannot run id: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn check(&self, node: &str) -> Result<CheckOutcome, ExecError> {
        if self.command.is_empty() {
            return Err(ExecError::NotConfigured {
                system: "node_check.command",
            });
        }
        let resv = SlurmCheck::reservation(node);
        let minutes = self.timeout.as_secs().div_ceil(60).max(1) + 1;
        let user = self.user().await?;
        let exists = self
            .slurm
            .output(
                "scontrol",
                &["-o", "show", "reservation", &resv],
                self.slurm.timeout,
            )
            .await?
            .status
            .success();
        if !exists {
            self.slurm
                .run(
                    "scontrol",
                    &[
                        "create",
                        "reservation",
                        &format!("reservationname={resv}"),
                        &format!("nodes={node}"),
                        &format!("users={user}"),
                        "starttime=now",
                        &format!("duration={minutes}"),
                        "flags=maint,ignore_jobs",
                    ],
                )
                .await?;
        }
        let view = self.slurm.node(node).await?;
        let node_arg = format!("nodename={node}");
        if view.drained() {
            self.slurm
                .run("scontrol", &["update", &node_arg, "state=resume"])
                .await?;
        }
        let mut args: Vec<&str> = vec![
            "--reservation",
            &resv,
            "-w",
            node,
            "-N1",
            "-n1",
            "--job-name=pitcrew-check",
        ];
        let time = format!("--time={minutes}");
        args.push(&time);
        args.extend(self.command.iter().map(String::as_str));
        let ran = self.slurm.output("srun", &args, self.timeout).await;
        // Back as it was, whatever the check did: drained again first, so
        // no job can slip in between the reservation's end and the drain.
        let mut cleanup = Vec::new();
        if ran.is_err() {
            cleanup.push(
                self.slurm
                    .run("scancel", &[&format!("--reservation={resv}")])
                    .await
                    .err(),
            );
        }
        if view.drained() {
            let reason = view.reason.clone().unwrap_or_else(|| REASON_PREFIX.into());
            let reason_arg = format!("reason={reason}");
            cleanup.push(
                self.slurm
                    .run(
                        "scontrol",
                        &["update", &node_arg, "state=drain", &reason_arg],
                    )
                    .await
                    .err(),
            );
        }
        cleanup.push(
            self.slurm
                .run("scontrol", &["delete", &format!("reservation={resv}")])
                .await
                .err(),
        );
        if let Some(e) = cleanup.into_iter().flatten().next() {
            return Err(e);
        }
        let out = match ran {
            Ok(out) => out,
            // A check that hangs is a failed check: the node stays out.
            Err(ExecError::Retryable { message, .. }) if message.ends_with("timed out") => {
                return Ok(CheckOutcome {
                    passed: false,
                    output: format!("[srun did not finish in {} s]", self.timeout.as_secs()),
                });
            }
            Err(e) => return Err(e),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = out.status.success();
        let verdict = if passed {
            "exit 0".to_owned()
        } else {
            format!("{}", out.status)
        };
        Ok(CheckOutcome {
            passed,
            output: for_the_audit(&format!("{text}\n[{verdict}]")),
        })
    }
}

impl NodeCheck for SlurmCheck {
    fn run<'a>(&'a self, node: CheckNode<'a>) -> BoxFuture<'a, Result<CheckOutcome, ExecError>> {
        Box::pin(self.check(node.slurm))
    }

    fn describe(&self) -> String {
        format!("slurm: {}", self.command.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scontrol_node_lines() {
        let line = "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=2 State=MIXED+DRAIN ThreadsPerCore=1 Partitions=gpu BootTime=None Reason=pitcrew: act-1 Xid 79 on GPU 3 [root@2026-11-25T10:00:00] Comment=(null)";
        let v = parse_node_line(line).unwrap();
        assert_eq!(v.state, "MIXED+DRAIN");
        assert!(v.drained());
        assert_eq!(v.reason.as_deref(), Some("pitcrew: act-1 Xid 79 on GPU 3"));
        let idle = parse_node_line("NodeName=n2 State=IDLE Partitions=gpu").unwrap();
        assert!(!idle.drained());
        assert_eq!(idle.reason, None);
        let theirs = parse_node_line(
            "NodeName=n3 State=IDLE+DRAIN Reason=bios update [admin@2026-11-25T09:00:00]",
        )
        .unwrap();
        assert_eq!(theirs.reason.as_deref(), Some("bios update"));
        assert!(parse_node_line("garbage").is_none());
    }
}
