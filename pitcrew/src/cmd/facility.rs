//! `pitcrew facility run`: the central facility poller (events to Kafka,
//! keyed by device) and `pitcrew facility probe URL`: one device polled once,
//! its events printed, so an operator can check a device before adding it.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pitcrew_contract::{encode, Timestamp};
use pitcrew_facility::config::{Address, Credentials, Device, FacilityConfig};
use pitcrew_facility::metrics::FacilityMetrics;
use pitcrew_facility::poller::{DeviceState, Library, Poller};
use pitcrew_facility::DeviceKind;

use crate::cli::{FacilityArgs, FacilityOp};

pub(crate) async fn run(
    config: Option<&std::path::Path>,
    args: &FacilityArgs,
) -> anyhow::Result<ExitCode> {
    match &args.op {
        FacilityOp::Run { devices, listen } => poll_forever(config, devices, listen).await,
        FacilityOp::Probe {
            url,
            profile,
            kind,
            racks,
            name,
            credentials,
            profiles,
            timeout,
        } => {
            let address = Address::parse(url).map_err(|e| anyhow::anyhow!("{e}"))?;
            let credentials = match credentials {
                Some(p) => Credentials::load(p)?,
                None => Credentials::from_env(),
            };
            let timeout =
                pitcrew_config::duration(timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
            let library = Library::load(profiles)?;
            let kind = match kind.as_deref() {
                Some("pdu") => DeviceKind::Pdu,
                Some("ups") => DeviceKind::Ups,
                Some("cooling") => DeviceKind::Cooling,
                Some("leak") => DeviceKind::Leak,
                _ => match (
                    &address,
                    profile.as_deref().and_then(|p| library.profile(p)),
                ) {
                    (_, Some(p)) => p.kind,
                    (Address::Modbus { map: Some(m), .. }, _) => {
                        library.map(m).map_or(DeviceKind::Cooling, |m| m.kind)
                    }
                    (Address::Modbus { .. } | Address::Redfish { .. }, _) => DeviceKind::Cooling,
                    // An SNMP device's kind comes from its detected profile.
                    _ => DeviceKind::Pdu,
                },
            };
            let device = Device {
                name: name.clone(),
                kind,
                racks: racks.clone(),
                cooling_loop: None,
                address,
                profile: profile.clone(),
                interval: Duration::from_secs(10),
                timeout,
                retries: 1,
                max_backoff: Duration::from_secs(60),
                credentials,
                labels: Default::default(),
            };
            probe(library, device).await
        }
    }
}

async fn probe(library: Library, device: Device) -> anyhow::Result<ExitCode> {
    // Without --profile the poller detects it from sysObjectID, and the
    // detected profile's kind makes the events.
    let poller = Poller::new(library, FacilityMetrics::default(), 1);
    let detect = device.profile.is_none();
    let mut st = DeviceState::new(device);
    let outcome = poller.poll(&mut st, Timestamp::now()).await;
    if let (true, Some(p)) = (detect, &outcome.profile) {
        eprintln!("pitcrew facility probe: profile {p}");
    }
    let mut out = std::io::stdout().lock();
    for ev in &outcome.events {
        out.write_all(&encode(ev))?;
        out.write_all(b"\n")?;
    }
    for p in &outcome.problems {
        eprintln!(
            "pitcrew facility probe: {} at {}: {}",
            p.reason, p.oid, p.detail
        );
    }
    match outcome.error {
        Some(e) => {
            eprintln!("pitcrew facility probe: {e}");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

async fn poll_forever(
    config: Option<&std::path::Path>,
    devices: &std::path::Path,
    listen: &str,
) -> anyhow::Result<ExitCode> {
    use pitcrew_bus::{BatchProducer, BusConfig, BusMetrics};

    let bus = BusConfig::load(config)?;
    let facility = FacilityConfig::load(devices)?;
    let library = Library::load(&facility.settings.profiles)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let bus_metrics = BusMetrics::default();
    bus_metrics.register(&mut registry);
    let metrics = FacilityMetrics::default();
    metrics.register(&mut registry);
    let producer = Arc::new(BatchProducer::new(&bus.kafka, bus_metrics)?);
    let topic = bus.topics.events.name.clone();
    let delivery_timeout =
        Duration::from_millis(u64::from(bus.kafka.producer.delivery_timeout_ms) + 1000);
    let last_delivery = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let health: pitcrew::http::Health = {
        let last = Arc::clone(&last_delivery);
        Arc::new(move || {
            let since = last.lock().map(|t| t.elapsed()).unwrap_or_default();
            if since > Duration::from_secs(300) {
                Err(format!("kafka has taken nothing for {} s", since.as_secs()))
            } else {
                Ok(())
            }
        })
    };
    let (addr, _server) = pitcrew::http::serve(listen, Arc::new(registry), health).await?;
    tracing::info!(devices = facility.devices.len(), listen = %addr, topic = %topic, "facility poller running");

    let poller = Poller::new(library, metrics, facility.settings.concurrency);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<pitcrew_contract::Event>>(1024);
    let polling = tokio::spawn({
        let poller = poller.clone();
        let devices = facility.devices.clone();
        async move { poller.run(devices, tx).await }
    });
    let sink = pitcrew::service::facility::FacilitySink {
        producer,
        topic,
        delivery_timeout,
        last_delivery,
    };
    let sending = tokio::spawn(sink.run(rx));
    pitcrew::service::shutdown_signal().await;
    tracing::info!("stopping");
    polling.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), sending).await;
    Ok(ExitCode::SUCCESS)
}
