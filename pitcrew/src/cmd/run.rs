//! `pitcrew run`: the rules and remediation stages in one process
//! ([`pitcrew::service::stages`]), with `/metrics` and the admin API.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pitcrew::service::stages::{Stages, StagesSpec};
use pitcrew::{admin, http, rulefiles};
use pitcrew_bus::BusConfig;
use pitcrew_remediate::config::RemediateConfig;
use prometheus_client::registry::Registry;

use crate::cli::RunArgs;

pub(crate) async fn run(config: Option<&Path>, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let bus = BusConfig::load(config)?;
    let rcfg = match &args.remediation {
        Some(p) => RemediateConfig::load(p).map_err(anyhow::Error::msg)?,
        None => RemediateConfig::default(),
    };
    let inventory = Arc::new(rulefiles::inventory(args.rules.inventory.as_deref())?);
    let mut registry = Registry::default();
    let stages = Stages::start(
        StagesSpec {
            bus: &bus,
            rules: &super::rules::options(&args.rules)?,
            remediation: &rcfg,
            inventory,
            remediate_group_id: &args.remediate_group_id,
            create_topics: true,
        },
        &mut registry,
        |_| {},
    )
    .await?;
    let (addr, _http) =
        http::serve(&args.rules.listen, Arc::new(registry), stages.health()).await?;
    let admin = match rcfg.admin_token().map_err(anyhow::Error::msg)? {
        Some(token) => Some(
            admin::serve(&args.admin_listen, token, stages.worker())
                .await?
                .0,
        ),
        None => {
            tracing::warn!(
                "no admin token configured ([admin] token_file or token_env): the admin API is off"
            );
            None
        }
    };
    tracing::info!(listen = %addr, admin = ?admin, "pitcrew run: rules and remediation stages running");
    stages
        .run_until(pitcrew::service::shutdown_signal())
        .await
        .map(|()| ExitCode::SUCCESS)
}
