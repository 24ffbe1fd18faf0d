//! `pitcrew rules`: the streaming rule engine ([`pitcrew::service::rules`])
//! with its `/metrics` and health endpoints.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pitcrew::service::rules::{RulesMetrics, RulesOptions, RulesService};
use pitcrew::{http, rulefiles};
use pitcrew_bus::{BusConfig, BusMetrics};
use pitcrew_rules::Span;
use prometheus_client::registry::Registry;

use crate::cli::RulesArgs;

/// The service's options from the command line.
pub(crate) fn options(args: &RulesArgs) -> anyhow::Result<RulesOptions> {
    let span = |flag: &str, v: &str| Span::parse(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"));
    Ok(RulesOptions {
        rules: args.rules.clone(),
        group_id: args.group_id.clone(),
        group_topic: args.group_topic.clone(),
        instance: args.instance.clone(),
        lateness: span("--lateness", &args.lateness)?,
        lookback_cap: span("--lookback-cap", &args.lookback_cap)?,
        idle_grace: span("--idle-grace", &args.idle_grace)?,
        max_future_skew: span("--max-future-skew", &args.max_future_skew)?,
        dry_run: args.dry_run,
        max_batch: args.max_batch.max(1),
    })
}

pub(crate) async fn run(config: Option<&Path>, args: &RulesArgs) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let options = options(args)?;
    let inventory = Arc::new(rulefiles::inventory(args.inventory.as_deref())?);
    let mut registry = Registry::default();
    let bus_metrics = BusMetrics::default();
    bus_metrics.register(&mut registry);
    let metrics = RulesMetrics::default();
    metrics.register(&mut registry);
    let service =
        RulesService::start(&bus, &options, inventory, &metrics, &bus_metrics, true).await?;
    let health: http::Health = {
        let ready = Arc::clone(&service.ready);
        Arc::new(move || {
            if ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("joining the consumer groups".to_owned())
            }
        })
    };
    let (addr, _http) = http::serve(&args.listen, Arc::new(registry), health).await?;
    tracing::info!(listen = %addr, "rules stage listening");
    service
        .run_until(pitcrew::service::shutdown_signal())
        .await
        .map(|()| ExitCode::SUCCESS)
}
