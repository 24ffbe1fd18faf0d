//! A real Slurm cluster on one host for tests: slurmctld and one slurmd per
//! node (Debian's build allows several slurmd on one host), with
//! `auth/none` so no munge daemon is needed (adapted from
//! shared/recipes/slurm). Everything lives in a per-run folder; commands
//! run with `SLURM_CONF` pointing there.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{wait_ready, Supervised};
use crate::{free_port, run_dir, HarnessError};

/// A running cluster. Jobs are cancelled and daemons stopped on drop.
#[derive(Debug)]
pub struct SlurmCluster {
    dir: PathBuf,
    conf: PathBuf,
    nodes: Vec<String>,
    ctld: Option<Supervised>,
    slurmds: Vec<Supervised>,
}

impl SlurmCluster {
    /// Starts slurmctld and a slurmd for each of `nodes` (e.g. n1..n4),
    /// returning once every node is idle.
    pub fn start(nodes: &[&str]) -> Result<SlurmCluster, HarnessError> {
        let dir = run_dir("slurm")?;
        for d in ["state", "log", "run", "out", "etc"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| HarnessError::io("slurm dirs", e))?;
        }
        for n in nodes {
            std::fs::create_dir_all(dir.join("spool").join(n))
                .map_err(|e| HarnessError::io("slurm spool", e))?;
        }
        std::fs::write(dir.join("etc/plugstack.conf"), "")
            .map_err(|e| HarnessError::io("plugstack.conf", e))?;
        let ctld_port = free_port()?;
        let d = dir.display();
        let mut conf = format!(
            "ClusterName=pitcrew
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
PlugStackConfig={d}/etc/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=2
JobRequeue=1
"
        );
        for n in nodes {
            let port = free_port()?;
            conf.push_str(&format!(
                "NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=2 RealMemory=1000 State=UNKNOWN\n"
            ));
        }
        conf.push_str(&format!(
            "PartitionName=gpu Nodes={} Default=YES MaxTime=INFINITE State=UP\n",
            nodes.join(",")
        ));
        let conf_path = dir.join("etc/slurm.conf");
        std::fs::write(&conf_path, conf).map_err(|e| HarnessError::io("slurm.conf", e))?;
        let ctld_log = dir.join("log/slurmctld.stdout");
        let mut ctld = Supervised::spawn(
            "slurmctld",
            "slurmctld",
            &["-D".into(), "-f".into(), conf_path.display().to_string()],
            &ctld_log,
            Duration::from_secs(5),
        )?;
        let mut cluster = SlurmCluster {
            dir,
            conf: conf_path,
            nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            ctld: None,
            slurmds: Vec::new(),
        };
        wait_ready(
            "slurmctld",
            Some(&mut ctld),
            &ctld_log,
            Duration::from_secs(30),
            || {
                cluster
                    .run("scontrol", &["ping"])
                    .is_ok_and(|o| o.contains("UP"))
            },
        )?;
        cluster.ctld = Some(ctld);
        for n in nodes {
            let log = cluster.dir.join(format!("log/slurmd-{n}.stdout"));
            let s = Supervised::spawn(
                &format!("slurmd-{n}"),
                "slurmd",
                &[
                    "-D".into(),
                    "-N".into(),
                    (*n).to_owned(),
                    "-f".into(),
                    cluster.conf.display().to_string(),
                ],
                &log,
                Duration::from_secs(5),
            )?;
            cluster.slurmds.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let idle = cluster
                .run("sinfo", &["-N", "-h", "-t", "idle", "-o", "%N"])
                .unwrap_or_default();
            if idle.lines().count() >= nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    component: "slurmd".into(),
                    seconds: 60,
                    log: crate::tail(&cluster.dir.join("log/slurmctld.log"), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// The `SLURM_CONF` to give Slurm commands.
    pub fn conf(&self) -> &std::path::Path {
        &self.conf
    }

    /// Where job output goes (`sbatch -o`).
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// Runs a Slurm command against this cluster; stdout on success.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .map_err(|e| HarnessError::io(format!("run {program}"), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Submits `sleep 300` pinned to `node`, requeueable; returns the job id.
    pub fn submit_on(&self, node: &str) -> Result<String, HarnessError> {
        let out = self.out_dir().join("%j.out").display().to_string();
        let id = self.run(
            "sbatch",
            &[
                "--parsable",
                "--requeue",
                "-w",
                node,
                "-o",
                &out,
                "--wrap",
                "sleep 300",
            ],
        )?;
        Ok(id.trim().to_owned())
    }

    /// `scontrol -o show node N` as one line.
    pub fn node_line(&self, node: &str) -> Result<String, HarnessError> {
        self.run("scontrol", &["-o", "show", "node", node])
    }

    /// `scontrol -o show job J` as one line.
    pub fn job_line(&self, job: &str) -> Result<String, HarnessError> {
        self.run("scontrol", &["-o", "show", "job", job])
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs first: slurmstepd outlives slurmd otherwise.
        let _ = self.run("scancel", &["--full", "-u", "root"]);
        std::thread::sleep(Duration::from_millis(300));
        for mut s in self.slurmds.drain(..) {
            s.stop(Duration::from_secs(5));
        }
        if let Some(mut c) = self.ctld.take() {
            c.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
