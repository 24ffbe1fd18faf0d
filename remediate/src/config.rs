//! The remediation config (TOML) and what it builds: the governor's limits,
//! the worker's settings, the plans and the executors.
//!
//! ```toml
//! [remediate]
//! dry_run = false
//! approval_ttl = "1h"
//! verify = { timeout = "15m", quiet = "2m", poll = "5s" }
//! boundary_deadline = "24h"   # a drain deferred to the job boundary waits this long
//! drain_deadline = "10m"      # evictions blocked by PDBs, and evicted pods going, at most this long
//! pods_gone_margin = "30s"    # an evicted pod still terminating this long past its grace period is stuck
//! stuck_pods = "escalate"     # or "proceed": what a drain does with a stuck pod
//!
//! [governor]
//! max_out_of_service = 50
//! max_out_of_service_percent = 5.0
//! domain_max = { rack = 2, leaf_switch = 4 }
//! cooldown = "30m"
//! max_attempts = 3
//! attempt_window = "24h"
//! trip_after = 5
//! trip_window = "10m"
//! [[governor.bucket]]
//! step = "power_cycle"
//! per = "rack"
//! capacity = 4
//! period = "1h"
//!
//! [kubernetes]              # absent: no Kubernetes
//! kubeconfig = "/etc/pitcrew/kubeconfig"   # absent: in-cluster / $KUBECONFIG
//! taint_key = "pitcrew.io/remediation"     # the cordon's taint (its value: the rule)
//! taint_effect = "NoSchedule"              # or NoExecute
//!
//! [slurm]                   # absent: no Slurm
//! conf = "/etc/slurm/slurm.conf"
//!
//! [ipmi]                    # absent: no power steps
//! username = "admin"
//! password_file = "/run/secrets/bmc-password"   # or password_env
//!
//! [node_check]              # absent: no diagnostic before a node returns
//! via = "slurm"             # srun -w NODE in a reservation; or "kubernetes": a Job pinned to the node
//! command = ["dcgmi", "diag", "-r", "2"]
//! timeout = "15m"
//! # kubernetes only:
//! image = "nvcr.io/nvidia/cloud-native/dcgm:4.2.3-1-ubuntu22.04"
//! namespace = "pitcrew"
//! gpu_resource = "nvidia.com/gpu"   # request all of the node's GPUs (the inventory's count)
//!
//! [[pager]]
//! name = "oncall"
//! kind = "pagerduty"        # pagerduty | slack | webhook
//! routing_key_file = "/run/secrets/pd-routing-key"
//! ```
//!
//! Secrets are only ever read from files or the environment: a config file
//! holds their paths, never their values.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_rules::Inventory;
use serde::Deserialize;

use crate::exec::page::{Paging, Receiver, ReceiverKind, Retry, Secret};
use crate::exec::{CommandGpuReset, Executors};
use crate::governor::{BucketSpec, GovernorConfig, Scope};
use crate::plan::{parse_duration, PlanBook, PlanSpec, StepKind};
use crate::worker::WorkerConfig;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediateConfig {
    #[serde(default)]
    pub remediate: WorkerSection,
    #[serde(default)]
    pub governor: GovernorSection,
    #[serde(default)]
    pub kubernetes: Option<KubernetesSection>,
    #[serde(default)]
    pub slurm: Option<SlurmSection>,
    #[serde(default)]
    pub ipmi: Option<IpmiSection>,
    #[serde(default)]
    pub gpu_reset: Option<GpuResetSection>,
    pub node_check: Option<NodeCheckSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub pager: Vec<PagerSection>,
    #[serde(default)]
    pub plan: Vec<PlanSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    #[serde(default)]
    pub dry_run: bool,
    pub approval_ttl: Option<String>,
    #[serde(default)]
    pub verify: VerifySection,
    pub retry_base: Option<String>,
    pub drain_deadline: Option<String>,
    pub pods_gone_margin: Option<String>,
    pub stuck_pods: Option<String>,
    pub boundary_deadline: Option<String>,
    pub escalation_team: Option<String>,
    pub page_retries: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    pub timeout: Option<String>,
    pub quiet: Option<String>,
    pub poll: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorSection {
    pub max_out_of_service: Option<usize>,
    pub max_out_of_service_percent: Option<f64>,
    pub domain_max: Option<BTreeMap<Scope, usize>>,
    pub cooldown: Option<String>,
    pub max_attempts: Option<u32>,
    pub attempt_window: Option<String>,
    pub trip_after: Option<u32>,
    pub trip_window: Option<String>,
    pub bucket: Option<Vec<BucketSection>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSection {
    pub step: String,
    pub per: Scope,
    pub capacity: u32,
    pub period: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    pub kubeconfig: Option<PathBuf>,
    /// The cordon's taint key (`pitcrew.io/remediation`).
    pub taint_key: Option<String>,
    /// The cordon's taint effect: `NoSchedule` (default) or `NoExecute`.
    pub taint_effect: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    pub conf: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpmiSection {
    pub username: String,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuResetSection {
    pub command: Vec<String>,
    pub timeout: Option<String>,
}

/// The diagnostic `verify` runs before a node returns to service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCheckSection {
    /// `slurm` or `kubernetes`.
    pub via: String,
    pub command: Vec<String>,
    pub timeout: Option<String>,
    /// Slurm: the reservation's user (default: the user pitcrew runs as).
    pub user: Option<String>,
    /// Kubernetes: the check pod's image, namespace, service account.
    pub image: Option<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub gpu_resource: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub token_file: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerSection {
    pub name: String,
    pub kind: String,
    pub url: Option<String>,
    pub url_file: Option<String>,
    pub url_env: Option<String>,
    pub routing_key_file: Option<String>,
    pub routing_key_env: Option<String>,
    pub hmac_key_file: Option<String>,
    pub hmac_key_env: Option<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub rma: bool,
}

/// The table sections environment overrides may reach (`[[pager]]` and
/// `[[plan]]` are lists, set in the file).
const SECTIONS: [&str; 8] = [
    "remediate",
    "governor",
    "kubernetes",
    "slurm",
    "ipmi",
    "gpu_reset",
    "node_check",
    "admin",
];

/// A secret from the file or variable the config names.
fn secret(name: &str, file: &Option<String>, env: &Option<String>) -> Result<Secret, String> {
    Secret::load(
        name,
        file.as_deref().map(std::path::Path::new),
        env.as_deref(),
    )
    .map_err(|e| e.to_string())
}

fn dur(what: &str, v: &Option<String>, default: Duration) -> Result<Duration, String> {
    match v {
        Some(s) => parse_duration(s).map_err(|e| format!("{what}: {e}")),
        None => Ok(default),
    }
}

impl RemediateConfig {
    /// Parses a config file; errors read `file:line:col: error: message`.
    /// Parses a remediation config, with no environment overrides.
    pub fn parse(file: &str, text: &str) -> Result<RemediateConfig, String> {
        RemediateConfig::parse_with_env(file, text, std::iter::empty())
    }

    /// Parses a remediation config with the `PITCREW__<SECTION>__<KEY>`
    /// overrides of `env` for its table sections (`PITCREW__GOVERNOR__COOLDOWN=2h`),
    /// as every pitcrew config file is read.
    pub fn parse_with_env(
        file: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RemediateConfig, String> {
        let cfg: RemediateConfig =
            pitcrew_config::layered(text, file, &SECTIONS, env).map_err(|e| match e {
                pitcrew_config::ConfigError::At {
                    origin,
                    line,
                    column,
                    message,
                } => format!("{origin}:{line}:{column}: error: {message}"),
                other => format!("error: {other}"),
            })?;
        // Check everything that can be checked without I/O now.
        cfg.governor_config()
            .map_err(|e| format!("{file}: error: {e}"))?;
        cfg.worker_config("check")
            .map_err(|e| format!("{file}: error: {e}"))?;
        cfg.plans().map_err(|e| format!("{file}: error: {e}"))?;
        Ok(cfg)
    }

    /// Reads a remediation config file, with the process's environment
    /// overrides.
    pub fn load(path: &std::path::Path) -> Result<RemediateConfig, String> {
        let (text, origin) = pitcrew_config::read(Some(path)).map_err(|e| e.to_string())?;
        RemediateConfig::parse_with_env(&origin, &text, std::env::vars())
    }

    pub fn governor_config(&self) -> Result<GovernorConfig, String> {
        let d = GovernorConfig::default();
        let g = &self.governor;
        let buckets = match &g.bucket {
            None => d.buckets.clone(),
            Some(list) => list
                .iter()
                .map(|b| {
                    Ok(BucketSpec {
                        step: StepKind::parse(&b.step)
                            .ok_or_else(|| format!("governor.bucket: unknown step `{}`", b.step))?,
                        per: b.per,
                        capacity: b.capacity,
                        period: parse_duration(&b.period)
                            .map_err(|e| format!("governor.bucket.period: {e}"))?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?,
        };
        Ok(GovernorConfig {
            max_out_of_service: g.max_out_of_service.unwrap_or(d.max_out_of_service),
            max_out_of_service_percent: g
                .max_out_of_service_percent
                .unwrap_or(d.max_out_of_service_percent),
            domain_max: g.domain_max.clone().unwrap_or(d.domain_max),
            buckets,
            cooldown: dur("governor.cooldown", &g.cooldown, d.cooldown)?,
            max_attempts: g.max_attempts.unwrap_or(d.max_attempts),
            attempt_window: dur(
                "governor.attempt_window",
                &g.attempt_window,
                d.attempt_window,
            )?,
            trip_after: g.trip_after.unwrap_or(d.trip_after),
            trip_window: dur("governor.trip_window", &g.trip_window, d.trip_window)?,
        })
    }

    pub fn worker_config(&self, actor: &str) -> Result<WorkerConfig, String> {
        let d = WorkerConfig::default();
        let w = &self.remediate;
        Ok(WorkerConfig {
            actor: actor.to_owned(),
            dry_run: w.dry_run,
            approval_ttl: dur("remediate.approval_ttl", &w.approval_ttl, d.approval_ttl)?,
            verify_timeout: dur(
                "remediate.verify.timeout",
                &w.verify.timeout,
                d.verify_timeout,
            )?,
            verify_quiet: dur("remediate.verify.quiet", &w.verify.quiet, d.verify_quiet)?,
            verify_poll: dur("remediate.verify.poll", &w.verify.poll, d.verify_poll)?,
            retry_base: dur("remediate.retry_base", &w.retry_base, d.retry_base)?,
            drain_deadline: dur(
                "remediate.drain_deadline",
                &w.drain_deadline,
                d.drain_deadline,
            )?,
            pods_gone_margin: dur(
                "remediate.pods_gone_margin",
                &w.pods_gone_margin,
                d.pods_gone_margin,
            )?,
            stuck_pods: match w.stuck_pods.as_deref() {
                None | Some("escalate") => crate::worker::StuckPods::Escalate,
                Some("proceed") => crate::worker::StuckPods::Proceed,
                Some(other) => {
                    return Err(format!(
                        "remediate.stuck_pods: `{other}` is neither `escalate` nor `proceed`"
                    ))
                }
            },
            boundary_deadline: dur(
                "remediate.boundary_deadline",
                &w.boundary_deadline,
                d.boundary_deadline,
            )?,
            handled_cap: d.handled_cap,
            queue_cap: d.queue_cap,
            escalation_team: w.escalation_team.clone(),
            ..d
        })
    }

    pub fn plans(&self) -> Result<PlanBook, String> {
        let mut book = PlanBook::builtin();
        book.extend(self.plan.clone())?;
        Ok(book)
    }

    /// The admin API's bearer token, if one is configured.
    pub fn admin_token(&self) -> Result<Option<Secret>, String> {
        let a = &self.admin;
        if a.token_file.is_none() && a.token_env.is_none() {
            return Ok(None);
        }
        secret("admin token", &a.token_file, &a.token_env).map(Some)
    }

    /// The receivers, with their secrets read.
    pub fn paging(&self, source: &str) -> Result<Paging, String> {
        let mut receivers = Vec::new();
        for p in &self.pager {
            let what = format!("pager `{}`", p.name);
            let url = match (&p.url, &p.url_file, &p.url_env) {
                (Some(u), None, None) => Secret::new(u.clone()),
                (None, None, None) if p.kind == "pagerduty" => {
                    Secret::new("https://events.pagerduty.com/v2/enqueue")
                }
                (None, f, e) if f.is_some() || e.is_some() => secret(&format!("{what} url"), f, e)?,
                _ => return Err(format!("{what}: give one of url, url_file, url_env")),
            };
            let kind = match p.kind.as_str() {
                "pagerduty" => ReceiverKind::PagerDuty {
                    routing_key: secret(
                        &format!("{what} routing key"),
                        &p.routing_key_file,
                        &p.routing_key_env,
                    )?,
                },
                "slack" => ReceiverKind::Slack,
                "webhook" => ReceiverKind::Webhook,
                other => {
                    return Err(format!(
                        "{what}: unknown kind `{other}` (pagerduty, slack, webhook)"
                    ))
                }
            };
            let hmac_key = if p.hmac_key_file.is_some() || p.hmac_key_env.is_some() {
                Some(secret(
                    &format!("{what} hmac key"),
                    &p.hmac_key_file,
                    &p.hmac_key_env,
                )?)
            } else {
                None
            };
            receivers.push(Receiver {
                name: p.name.clone(),
                kind,
                url,
                hmac_key,
                teams: p.teams.clone(),
                rma: p.rma,
            });
        }
        let retry = Retry {
            attempts: self
                .remediate
                .page_retries
                .unwrap_or(Retry::default().attempts),
            ..Retry::default()
        };
        Paging::new(receivers, retry, source.to_owned())
    }

    /// Builds the executors the config names. Kubernetes connects here
    /// (the kubeconfig is read); nothing is called yet.
    pub async fn executors(
        &self,
        inventory: &Arc<Inventory>,
        source: &str,
    ) -> Result<Executors, String> {
        let mut exec = Executors {
            pager: Arc::new(self.paging(source)?),
            ..Executors::default()
        };
        let mut kube_client = None;
        if let Some(k) = &self.kubernetes {
            let mut kube = crate::exec::kube::Kube::connect(k.kubeconfig.as_deref()).await?;
            kube.instance = source.to_owned();
            if let Some(key) = &k.taint_key {
                kube.taint_key = key.clone();
            }
            match k.taint_effect.as_deref() {
                None => {}
                Some(e @ ("NoSchedule" | "NoExecute" | "PreferNoSchedule")) => {
                    kube.taint_effect = e.to_owned();
                }
                Some(other) => {
                    return Err(format!(
                        "kubernetes.taint_effect: `{other}` is not NoSchedule, NoExecute or PreferNoSchedule"
                    ))
                }
            }
            kube_client = Some((kube.client(), kube.taint_key.clone()));
            exec.cluster = Some(Arc::new(kube));
        }
        let mut slurm = None;
        if let Some(s) = &self.slurm {
            let s = crate::exec::slurm::Slurm {
                conf: s.conf.clone(),
                bin_dir: s.bin_dir.clone(),
                timeout: dur("slurm.timeout", &s.timeout, Duration::from_secs(30))?,
            };
            slurm = Some(s.clone());
            exec.scheduler = Some(Arc::new(s));
        }
        if let Some(c) = &self.node_check {
            exec.node_check = Some(node_check(c, inventory, slurm, kube_client)?);
        }
        if let Some(i) = &self.ipmi {
            let password = secret("ipmi password", &i.password_file, &i.password_env)?;
            let addresses: HashMap<String, String> = inventory
                .nodes()
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.bmc.clone()?)))
                .collect();
            exec.power = Some(Arc::new(crate::exec::ipmi::Ipmi {
                addresses,
                username: i.username.clone(),
                password,
                timeout: dur("ipmi.timeout", &i.timeout, Duration::from_secs(5))?,
            }));
        }
        if let Some(g) = &self.gpu_reset {
            exec.gpu_reset = Some(Arc::new(CommandGpuReset {
                command: g.command.clone(),
                timeout: dur("gpu_reset.timeout", &g.timeout, Duration::from_secs(120))?,
            }));
        }
        Ok(exec)
    }
}

/// The node check `[node_check]` describes, on the system it names.
fn node_check(
    c: &NodeCheckSection,
    inventory: &Inventory,
    slurm: Option<crate::exec::slurm::Slurm>,
    kube: Option<(kube::Client, String)>,
) -> Result<Arc<dyn crate::exec::check::NodeCheck>, String> {
    if c.command.is_empty() {
        return Err("node_check.command: empty".into());
    }
    let timeout = dur("node_check.timeout", &c.timeout, Duration::from_secs(900))?;
    match c.via.as_str() {
        "slurm" => {
            let slurm = slurm.ok_or("node_check.via = \"slurm\" needs a [slurm] section")?;
            Ok(Arc::new(crate::exec::slurm::SlurmCheck {
                slurm,
                command: c.command.clone(),
                timeout,
                user: c.user.clone(),
            }))
        }
        "kubernetes" => {
            let (client, taint_key) =
                kube.ok_or("node_check.via = \"kubernetes\" needs a [kubernetes] section")?;
            let image = c
                .image
                .clone()
                .ok_or("node_check.image: the check pod's image is needed")?;
            Ok(Arc::new(crate::exec::kube_check::KubeJobCheck {
                client,
                namespace: c.namespace.clone().unwrap_or_else(|| "default".into()),
                image,
                command: c.command.clone(),
                timeout,
                taint_key,
                gpu_resource: c.gpu_resource.clone(),
                gpus: inventory
                    .nodes()
                    .iter()
                    .filter_map(|n| Some((n.name.clone(), n.gpus?)))
                    .collect(),
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                service_account: c.service_account.clone(),
                poll: Duration::from_secs(2),
            }))
        }
        other => Err(format!(
            "node_check.via: `{other}` is neither `slurm` nor `kubernetes`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_reach_the_remediation_sections() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let text = "[governor]\ncooldown = \"30m\"\nmax_out_of_service = 4\n";
        let cfg = RemediateConfig::parse_with_env(
            "r.toml",
            text,
            env(&[
                ("PITCREW__GOVERNOR__COOLDOWN", "2h"),
                // Another stage's section: not this file's business.
                ("PITCREW__KAFKA__BROKERS", "b:9092"),
            ]),
        )
        .unwrap();
        let g = cfg.governor_config().unwrap();
        assert_eq!(g.cooldown, Duration::from_secs(7200));
        assert_eq!(cfg.governor.max_out_of_service, Some(4));
        let err = RemediateConfig::parse_with_env(
            "r.toml",
            text,
            env(&[("PITCREW__GOVERNOR__MAX_OUT_OF_SERVICE", "lots")]),
        )
        .unwrap_err();
        assert!(
            err.contains("PITCREW__GOVERNOR__MAX_OUT_OF_SERVICE"),
            "{err}"
        );
    }

    #[test]
    fn drain_and_taint_settings_are_checked() {
        let cfg = RemediateConfig::parse(
            "r.toml",
            "[remediate]\npods_gone_margin = \"45s\"\nstuck_pods = \"proceed\"\n",
        )
        .unwrap();
        let w = cfg.worker_config("remediate@test").unwrap();
        assert_eq!(w.pods_gone_margin, Duration::from_secs(45));
        assert_eq!(w.stuck_pods, crate::worker::StuckPods::Proceed);
        // Checked when the file is read, not at the first drain.
        let bad =
            RemediateConfig::parse("r.toml", "[remediate]\nstuck_pods = \"ignore\"\n").unwrap_err();
        assert!(bad.contains("remediate.stuck_pods"), "{bad}");
        let cfg = RemediateConfig::parse(
            "r.toml",
            "[kubernetes]\ntaint_key = \"example.com/out\"\ntaint_effect = \"NoExecute\"\n",
        )
        .unwrap();
        let k = cfg.kubernetes.unwrap();
        assert_eq!(
            (k.taint_key.as_deref(), k.taint_effect.as_deref()),
            (Some("example.com/out"), Some("NoExecute"))
        );
    }

    #[tokio::test]
    async fn a_node_check_needs_its_system_and_a_command() {
        let inv = Arc::new(Inventory::default());
        let build = |text: &str| {
            let cfg = RemediateConfig::parse("r.toml", text).unwrap();
            let inv = inv.clone();
            async move {
                cfg.executors(&inv, "t")
                    .await
                    .map(|e| e.node_check.map(|c| c.describe()))
            }
        };
        let ok = build("[slurm]\n[node_check]\nvia = \"slurm\"\ncommand = [\"dcgmi\", \"diag\", \"-r\", \"2\"]\n")
            .await
            .unwrap();
        assert_eq!(ok.as_deref(), Some("slurm: dcgmi diag -r 2"));
        for (text, says) in [
            (
                "[node_check]\nvia = \"slurm\"\ncommand = [\"x\"]\n",
                "needs a [slurm] section",
            ),
            (
                "[node_check]\nvia = \"kubernetes\"\ncommand = [\"x\"]\n",
                "needs a [kubernetes] section",
            ),
            (
                "[slurm]\n[node_check]\nvia = \"ssh\"\ncommand = [\"x\"]\n",
                "neither `slurm` nor `kubernetes`",
            ),
            (
                "[slurm]\n[node_check]\nvia = \"slurm\"\ncommand = []\n",
                "node_check.command: empty",
            ),
        ] {
            let err = build(text).await.unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn errors_point_at_the_line() {
        let text = "[governor]\nmax_out_of_service = \"ten\"\n";
        let err = RemediateConfig::parse("r.toml", text).unwrap_err();
        assert!(err.starts_with("r.toml:2:"), "{err}");
        let err = RemediateConfig::parse("r.toml", "[governor]\ncooldown = \"5x\"\n").unwrap_err();
        assert!(err.contains("governor.cooldown"), "{err}");
        let err =
            RemediateConfig::parse("r.toml", "[[plan]]\nname = \"p\"\nsteps = [\"reboot\"]\n")
                .unwrap_err();
        assert!(err.contains("unknown step `reboot`"), "{err}");
    }

    #[test]
    fn a_full_config_parses() {
        let text = r#"
[remediate]
dry_run = true
verify = { timeout = "1m", quiet = "5s", poll = "1s" }
[governor]
max_out_of_service = 7
domain_max = { rack = 1 }
[[governor.bucket]]
step = "power_cycle"
per = "leaf_switch"
capacity = 2
period = "30m"
[slurm]
conf = "/etc/slurm/slurm.conf"
[[pager]]
name = "am"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
[[plan]]
name = "reboot_node"
steps = ["cordon", "power_cycle", "verify", "uncordon"]
approval = true
"#;
        let cfg = RemediateConfig::parse("r.toml", text).unwrap();
        let g = cfg.governor_config().unwrap();
        assert_eq!(g.max_out_of_service, 7);
        assert_eq!(g.buckets[0].per, Scope::LeafSwitch);
        assert!(cfg.worker_config("x").unwrap().dry_run);
        assert!(cfg.plans().unwrap().get("reboot_node").unwrap().approval);
    }
}
