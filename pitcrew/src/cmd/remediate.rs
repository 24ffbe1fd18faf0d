//! `pitcrew remediate`: the remediation worker ([`pitcrew::service::remediate`])
//! with `/metrics` and the admin API; `pitcrew audit`: a target's timeline.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pitcrew::service::remediate::{Service, ServiceSpec};
use pitcrew::service::rules::default_instance;
use pitcrew::{admin, http, rulefiles};
use pitcrew_bus::{read_topic_merged, BusConfig, BusMetrics};
use pitcrew_contract::{decode, encode, AuditRecord};
use pitcrew_remediate::config::RemediateConfig;
use pitcrew_remediate::metrics::RemediateMetrics;
use prometheus_client::registry::Registry;

use crate::cli::RemediateArgs;

pub(crate) async fn run(config: Option<&Path>, args: &RemediateArgs) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let rcfg = match &args.remediation {
        Some(p) => RemediateConfig::load(p).map_err(anyhow::Error::msg)?,
        None => RemediateConfig::default(),
    };
    let inventory = Arc::new(rulefiles::inventory(args.inventory.as_deref())?);
    let instance = args.instance.clone().unwrap_or_else(default_instance);
    let actor = format!("remediate@{instance}");

    let mut registry = Registry::default();
    let bus_metrics = BusMetrics::default();
    bus_metrics.register(&mut registry);
    let metrics = RemediateMetrics::default();
    metrics.register(&mut registry);

    let service = Service::start(
        ServiceSpec {
            bus: &bus,
            remediation: &rcfg,
            inventory,
            actor: actor.clone(),
            group_id: &args.group_id,
            dry_run: args.dry_run,
            create_topics: true,
        },
        &metrics,
        &bus_metrics,
        |_| {},
    )
    .await?;

    let health: http::Health = Arc::new(|| Ok(()));
    let (addr, _http) = http::serve(&args.listen, Arc::new(registry), health).await?;
    let admin_addr = match rcfg.admin_token().map_err(anyhow::Error::msg)? {
        Some(token) => {
            let (a, _) = admin::serve(&args.admin_listen, token, service.worker.clone()).await?;
            Some(a.to_string())
        }
        None => {
            tracing::warn!(
                "no admin token configured ([admin] token_file or token_env): the admin API is off"
            );
            None
        }
    };
    tracing::info!(listen = %addr, admin = admin_addr.as_deref().unwrap_or("off"), actor = %actor, "remediation worker starting");
    service.consume(pitcrew::service::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `pitcrew audit --target node/n17`: the target's timeline from
/// `pitcrew.audit`.
pub(crate) fn audit(
    config: Option<&Path>,
    args: &crate::cli::AuditArgs,
) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let want = if args.target.contains('/') {
        args.target.clone()
    } else {
        format!("node/{}", args.target)
    };
    let mut rows: Vec<AuditRecord> = Vec::new();
    read_topic_merged(
        &bus.kafka,
        &bus.topics.audit.name,
        0,
        None,
        Duration::from_secs(60),
        |bytes| {
            if let Ok(r) = decode::<AuditRecord>(bytes) {
                if r.target.key() == want {
                    rows.push(r);
                }
            }
        },
        |_, _, _| {},
    )?;
    rows.sort_by_key(|r| r.at);
    let mut out = String::new();
    for r in &rows {
        if args.json {
            out.push_str(&String::from_utf8_lossy(&encode(r)));
            out.push('\n');
            continue;
        }
        let entry = serde_json::to_value(&r.entry).unwrap_or_default();
        let decision = entry
            .get("decision")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let mut detail: Vec<String> = Vec::new();
        if let Some(obj) = entry.as_object() {
            for (k, v) in obj {
                if k != "decision" {
                    detail.push(format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    ));
                }
            }
        }
        out.push_str(&format!(
            "{}  {:<18} {:<32} {}  [{} {} {}]\n",
            r.at,
            decision,
            detail.join(" "),
            r.actor,
            r.plan.as_deref().unwrap_or("-"),
            r.action.as_deref().unwrap_or("-"),
            r.incident.as_deref().unwrap_or("-"),
        ));
    }
    if rows.is_empty() {
        eprintln!("no audit records for {want}");
        return Ok(ExitCode::from(1));
    }
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
