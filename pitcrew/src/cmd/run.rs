//! `pitcrew run`: the rules stage (node and group) and the remediation
//! stage in one process, on the same code as `pitcrew rules` and `pitcrew
//! remediate`, sharing one `/metrics`. `pitcrew demo` runs the same
//! [`Stages`] against its in-process broker.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pitcrew_bus::{BusConfig, BusMetrics};
use pitcrew_remediate::config::RemediateConfig;
use pitcrew_remediate::exec::Executors;
use pitcrew_remediate::metrics::RemediateMetrics;
use pitcrew_remediate::Worker;
use pitcrew_rules::Inventory;
use prometheus_client::registry::Registry;

use super::remediate::{Service, ServiceSpec};
use super::rulefiles;
use super::rules::{RulesMetrics, RulesService};
use crate::cli::{RulesArgs, RunArgs};

/// Both stages, started.
pub(crate) struct Stages {
    pub(crate) rules: RulesService,
    pub(crate) remediate: Service,
}

/// What both stages are started from.
pub(crate) struct StagesSpec<'a> {
    pub(crate) bus: &'a BusConfig,
    pub(crate) rules: &'a RulesArgs,
    pub(crate) remediation: &'a RemediateConfig,
    pub(crate) inventory: Arc<Inventory>,
    pub(crate) remediate_group_id: &'a str,
    pub(crate) create_topics: bool,
}

impl Stages {
    /// Starts remediation first (it restores its state before consuming),
    /// then the rules; registers every metric in `registry`.
    pub(crate) async fn start(
        spec: StagesSpec<'_>,
        registry: &mut Registry,
        adjust: impl FnOnce(&mut Executors),
    ) -> anyhow::Result<Stages> {
        let bus_metrics = BusMetrics::default();
        bus_metrics.register(registry);
        let rules_metrics = RulesMetrics::default();
        rules_metrics.register(registry);
        let remediate_metrics = RemediateMetrics::default();
        remediate_metrics.register(registry);
        let instance = spec
            .rules
            .instance
            .clone()
            .unwrap_or_else(super::rules::default_instance);
        let remediate = Service::start(
            ServiceSpec {
                bus: spec.bus,
                remediation: spec.remediation,
                inventory: Arc::clone(&spec.inventory),
                actor: format!("remediate@{instance}"),
                group_id: spec.remediate_group_id,
                dry_run: spec.rules.dry_run,
                create_topics: spec.create_topics,
            },
            &remediate_metrics,
            &bus_metrics,
            adjust,
        )
        .await?;
        let rules = RulesService::start(
            spec.bus,
            spec.rules,
            spec.inventory,
            &rules_metrics,
            &bus_metrics,
            spec.create_topics,
        )
        .await?;
        Ok(Stages { rules, remediate })
    }

    pub(crate) fn worker(&self) -> Worker {
        self.remediate.worker.clone()
    }

    pub(crate) fn health(&self) -> crate::http::Health {
        let ready = Arc::clone(&self.rules.ready);
        Arc::new(move || {
            if ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("joining the consumer groups".to_owned())
            }
        })
    }

    /// Runs both until one fails or `shutdown`; then stops both (the
    /// remediation stage waits for running steps).
    pub(crate) async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut rules = tokio::spawn(self.rules.run_until(signal(stopped.clone())));
        let mut remediate = tokio::spawn(self.remediate.consume(signal(stopped)));
        let first = tokio::select! {
            () = shutdown => None,
            r = &mut rules => Some(("rules", r)),
            r = &mut remediate => Some(("remediate", r)),
        };
        let _ = stop.send(true);
        let mut result = Ok(());
        if let Some((stage, r)) = first {
            result = r
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .and_then(|()| Err(anyhow::anyhow!("the {stage} stage stopped by itself")));
        }
        if !rules.is_finished() {
            if let Ok(Err(e)) = rules.await {
                result = result.and(Err(e));
            }
        }
        if !remediate.is_finished() {
            if let Ok(Err(e)) = remediate.await {
                result = result.and(Err(e));
            }
        }
        result
    }
}

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
            rules: &args.rules,
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
        crate::http::serve(&args.rules.listen, Arc::new(registry), stages.health()).await?;
    let admin = match rcfg.admin_token().map_err(anyhow::Error::msg)? {
        Some(token) => Some(
            crate::admin::serve(&args.admin_listen, token, stages.worker())
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
        .run_until(super::collect::shutdown_signal())
        .await
        .map(|()| ExitCode::SUCCESS)
}
