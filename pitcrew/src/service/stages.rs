//! The rules stage (node and group) and the remediation stage in one
//! process, on the same code as `pitcrew rules` and `pitcrew remediate`,
//! sharing one registry: `pitcrew run`, and `pitcrew demo` against its
//! in-process broker.

use std::future::Future;
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
use super::rules::{default_instance, RulesMetrics, RulesOptions, RulesService};

/// Both stages, started.
#[derive(Debug)]
pub struct Stages {
    pub rules: RulesService,
    pub remediate: Service,
}

/// What both stages are started from.
#[derive(Debug)]
pub struct StagesSpec<'a> {
    pub bus: &'a BusConfig,
    pub rules: &'a RulesOptions,
    pub remediation: &'a RemediateConfig,
    pub inventory: Arc<Inventory>,
    pub remediate_group_id: &'a str,
    pub create_topics: bool,
}

impl Stages {
    /// Starts remediation first (it restores its state before consuming),
    /// then the rules; registers every metric in `registry`.
    pub async fn start(
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
        let instance = spec.rules.instance.clone().unwrap_or_else(default_instance);
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

    pub fn worker(&self) -> Worker {
        self.remediate.worker.clone()
    }

    pub fn health(&self) -> crate::http::Health {
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
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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
