//! The poller: every device on its own schedule (interval, timeout,
//! backoff), each in its own task so a slow or dead device never delays
//! another; at most `concurrency` polls at once.
//!
//! A poll reads the device, assembles readings into events (counter deltas
//! against the previous poll) and hands them to the sink with the device's
//! `facility.device` event: down at every failed poll, up on the first
//! success after a failure (and on the first poll). Problems inside an
//! answer are counted and logged, naming device and OID, register or path.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pitcrew_contract::{Event, FacilityProtocol, Timestamp};
use tokio::sync::{mpsc, Semaphore};

use crate::assemble::{self, Meters, Subject};
use crate::config::{Address, Device};
use crate::error::FacilityError;
use crate::metrics::{FacilityMetrics, KindLabel, ProtocolOutcome, ProtocolReason};
use crate::modbus::RegisterMap;
use crate::profile::{self, Problem, Profile, Walk};
use crate::{redfish, snmp};

/// What a device read gave: readings, the profile or map, and the kind of
/// device the profile says it is.
type Read = (Vec<profile::Reading>, Option<String>, profile::DeviceKind);

/// What one poll gave.
#[derive(Debug, Default)]
pub struct PollOutcome {
    pub events: Vec<Event>,
    pub problems: Vec<Problem>,
    pub error: Option<FacilityError>,
    /// The profile or map it was read with.
    pub profile: Option<String>,
}

/// The profiles and register maps the poller knows: the built-in ones and
/// any from the configured folders.
#[derive(Clone, Debug, Default)]
pub struct Library {
    pub profiles: Vec<Profile>,
    pub maps: Vec<RegisterMap>,
}

impl Library {
    /// The built-ins plus every `*.toml` in `folders` (a profile if it has
    /// `[[group]]`, a register map if it has `[[register]]`/`[[leak]]`).
    pub fn load(folders: &[std::path::PathBuf]) -> Result<Library, FacilityError> {
        let mut lib = Library {
            profiles: profile::BUILTIN
                .iter()
                .map(|(n, t)| Profile::parse(n, t))
                .collect::<Result<_, _>>()?,
            maps: crate::modbus::BUILTIN
                .iter()
                .map(|(n, t)| RegisterMap::parse(n, t))
                .collect::<Result<_, _>>()?,
        };
        for dir in folders {
            let entries = std::fs::read_dir(dir).map_err(|e| FacilityError::Config {
                message: format!("{}: {e}", dir.display()),
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let origin = p.display().to_string();
                let text = std::fs::read_to_string(&p).map_err(|e| FacilityError::Config {
                    message: format!("{origin}: {e}"),
                })?;
                if text.contains("[[register]]") || text.contains("[[leak]]") {
                    let m = RegisterMap::parse(&origin, &text)?;
                    lib.maps.retain(|x| x.name != m.name);
                    lib.maps.push(m);
                } else {
                    let pr = Profile::parse(&origin, &text)?;
                    lib.profiles.retain(|x| x.name != pr.name);
                    lib.profiles.push(pr);
                }
            }
        }
        Ok(lib)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    pub fn map(&self, name: &str) -> Option<&RegisterMap> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// One device's poll state.
#[derive(Debug)]
pub struct DeviceState {
    pub device: Device,
    subject: Subject,
    session: Option<snmp::Session>,
    profile: Option<String>,
    meters: Meters,
    pub failures: u32,
    reported_up: Option<bool>,
}

impl DeviceState {
    pub fn new(device: Device) -> DeviceState {
        let subject = Subject {
            name: device.name.clone(),
            kind: Some(device.kind),
            racks: device.racks.clone(),
            cooling_loop: device.cooling_loop.clone(),
            labels: device.labels.clone(),
        };
        DeviceState {
            profile: device.profile.clone(),
            device,
            subject,
            session: None,
            meters: Meters::default(),
            failures: 0,
            reported_up: None,
        }
    }

    /// When the next poll is due after this one: the interval, doubled per
    /// failure in a row up to the device's `max_backoff`.
    pub fn next_delay(&self) -> Duration {
        if self.failures == 0 {
            return self.device.interval;
        }
        let factor = 1u32 << self.failures.saturating_sub(1).min(16);
        (self.device.interval * factor).min(self.device.max_backoff.max(self.device.interval))
    }
}

/// Polls devices and hands their events to a channel.
#[derive(Clone, Debug)]
pub struct Poller {
    pub library: Arc<Library>,
    pub metrics: FacilityMetrics,
    concurrency: Arc<Semaphore>,
}

impl Poller {
    pub fn new(library: Library, metrics: FacilityMetrics, concurrency: usize) -> Poller {
        Poller {
            library: Arc::new(library),
            metrics,
            concurrency: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Polls one device once, at `time`.
    pub async fn poll(&self, st: &mut DeviceState, time: Timestamp) -> PollOutcome {
        let started = Instant::now();
        let protocol = st.device.address.protocol();
        let mut out = PollOutcome::default();
        match self.read(st, &mut out.problems).await {
            Ok((kind_readings, profile_name, kind)) => {
                out.profile = profile_name;
                st.profile.clone_from(&out.profile);
                out.events = assemble::events(
                    &st.subject,
                    kind,
                    kind_readings,
                    time,
                    &mut st.meters,
                    &mut out.problems,
                );
                st.failures = 0;
            }
            Err(e) => {
                // A fresh session next time: a v3 engine may have rebooted.
                st.session = None;
                st.failures = st.failures.saturating_add(1);
                out.error = Some(e);
            }
        }
        let up = out.error.is_none();
        if !up || st.reported_up != Some(true) {
            out.events.push(assemble::reachability(
                &st.subject,
                protocol,
                st.profile.as_deref(),
                st.failures,
                out.error.as_ref().map(ToString::to_string),
                time,
            ));
        }
        st.reported_up = Some(up);
        self.account(st, protocol, &out, started.elapsed());
        out
    }

    fn account(
        &self,
        st: &DeviceState,
        protocol: FacilityProtocol,
        out: &PollOutcome,
        took: Duration,
    ) {
        let proto = match protocol {
            FacilityProtocol::Snmp => "snmp",
            FacilityProtocol::Modbus => "modbus",
            FacilityProtocol::Redfish => "redfish",
        };
        let m = &self.metrics;
        m.poll_time.observe(took.as_secs_f64());
        m.polls
            .get_or_create(&ProtocolOutcome {
                protocol: proto.into(),
                outcome: if out.error.is_none() { "ok" } else { "failed" }.into(),
            })
            .inc();
        if let Some(e) = &out.error {
            m.errors
                .get_or_create(&ProtocolReason {
                    protocol: proto.into(),
                    reason: e.reason().into(),
                })
                .inc();
            tracing::warn!(device = %st.device.name, address = %st.device.address.display(), failures = st.failures, error = %e, "facility poll failed");
        }
        for p in &out.problems {
            m.errors
                .get_or_create(&ProtocolReason {
                    protocol: proto.into(),
                    reason: p.reason.into(),
                })
                .inc();
            tracing::warn!(device = %st.device.name, at = %p.oid, reason = p.reason, detail = %p.detail, "facility reading problem");
        }
        for ev in &out.events {
            m.events
                .get_or_create(&KindLabel {
                    kind: ev.kind().as_str().into(),
                })
                .inc();
            m.telemetry.record(ev);
        }
    }

    async fn read_snmp(
        &self,
        st: &mut DeviceState,
        problems: &mut Vec<Problem>,
    ) -> Result<Read, FacilityError> {
        let d = &st.device;
        if st.session.is_none() {
            st.session = Some(
                snmp::Session::open(&d.name, &d.address, &d.credentials, d.timeout, d.retries)
                    .await?,
            );
        }
        let Some(session) = st.session.as_ref() else {
            return Err(FacilityError::Config {
                message: format!("{}: no session", d.name),
            });
        };
        let profile = match &st.profile {
            Some(name) => self
                .library
                .profile(name)
                .ok_or_else(|| FacilityError::Config {
                    message: format!("{}: no profile named `{name}`", d.name),
                })?,
            None => {
                let id = session.sys_object_id().await?;
                let mut answering = Vec::new();
                for p in &self.library.profiles {
                    if let Some(o) = p.detect_oid.as_deref().and_then(profile::parse_oid) {
                        if session.answers(&o).await {
                            answering.push(profile::oid_string(&o));
                        }
                    }
                }
                profile::detect(&self.library.profiles, &id, |o| {
                    answering.iter().any(|a| a == o)
                })
                .ok_or_else(|| FacilityError::Config {
                    message: format!(
                        "{}: no profile for sysObjectID {id}; give `profile` or add a profile file",
                        d.name
                    ),
                })?
            }
        };
        let walk = snmp_walk(session, profile).await?;
        let readings = profile.assemble(&walk, problems);
        Ok((readings, Some(profile.name.clone()), profile.kind))
    }

    async fn read(
        &self,
        st: &mut DeviceState,
        problems: &mut Vec<Problem>,
    ) -> Result<Read, FacilityError> {
        let d = &st.device;
        match &d.address {
            Address::SnmpV3 {
                host, port, user, ..
            } => {
                let (host, port, user, timeout) = (host.clone(), *port, user.clone(), d.timeout);
                match self.read_snmp(st, problems).await {
                    Err(FacilityError::Timeout { device, .. })
                        if snmp::v3_agent_answers(&host, port, &user, timeout).await =>
                    {
                        Err(FacilityError::Auth {
                            device,
                            protocol: "snmp",
                            detail: format!(
                                "the agent answers, but not to user `{user}` with these keys: check auth_key, priv_key and the auth/priv protocols"
                            ),
                        })
                    }
                    other => other,
                }
            }
            Address::Snmp { .. } => self.read_snmp(st, problems).await,
            Address::Modbus {
                host,
                port,
                unit,
                map,
            } => {
                let name = map.clone().or_else(|| st.profile.clone()).ok_or_else(|| {
                    FacilityError::Config {
                        message: format!(
                            "{}: a Modbus device needs a register map (`map`)",
                            d.name
                        ),
                    }
                })?;
                let rmap = self
                    .library
                    .map(&name)
                    .ok_or_else(|| FacilityError::Config {
                        message: format!("{}: no register map named `{name}`", d.name),
                    })?;
                let addr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| FacilityError::Unreachable {
                        device: d.name.clone(),
                        protocol: "modbus",
                        detail: format!("cannot resolve {host}"),
                    })?;
                let regs =
                    crate::modbus::read(&d.name, addr, *unit, rmap, d.timeout, problems).await?;
                Ok((rmap.decode(&regs, problems), Some(name), rmap.kind))
            }
            Address::Redfish { base } => {
                let s = redfish::Session::new(&d.name, base, &d.credentials, d.timeout)?;
                Ok((
                    s.poll(problems).await?,
                    Some("redfish-thermal".into()),
                    d.kind,
                ))
            }
        }
    }

    /// Polls `devices` forever on their schedules, sending each poll's
    /// events to `sink`; returns when the sink is closed.
    pub async fn run(&self, devices: Vec<Device>, sink: mpsc::Sender<Vec<Event>>) {
        let mut by_kind: BTreeMap<&str, i64> = BTreeMap::new();
        for d in &devices {
            *by_kind.entry(d.kind.as_str()).or_default() += 1;
        }
        for (k, n) in by_kind {
            self.metrics
                .devices
                .get_or_create(&KindLabel { kind: k.into() })
                .set(n);
        }
        let down = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let n = devices.len().max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, d) in devices.into_iter().enumerate() {
            let poller = self.clone();
            let sink = sink.clone();
            let down = Arc::clone(&down);
            tasks.spawn(async move {
                // Spread first polls over one interval so a site's devices
                // are not all asked in the same instant.
                let spread = d.interval.mul_f64(i as f64 / n as f64);
                tokio::time::sleep(spread).await;
                let mut st = DeviceState::new(d);
                let mut due = Instant::now();
                let mut was_down = false;
                loop {
                    let lag = Instant::now().saturating_duration_since(due);
                    poller.metrics.lag.set(lag.as_secs_f64());
                    let outcome = {
                        let Ok(_permit) = poller.concurrency.acquire().await else {
                            return;
                        };
                        poller.poll(&mut st, Timestamp::now()).await
                    };
                    let is_down = outcome.error.is_some();
                    if is_down != was_down {
                        down.fetch_add(
                            if is_down { 1 } else { -1 },
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        poller
                            .metrics
                            .devices_down
                            .set(down.load(std::sync::atomic::Ordering::Relaxed));
                        was_down = is_down;
                    }
                    if sink.send(outcome.events).await.is_err() {
                        return;
                    }
                    due += st.next_delay();
                    let now = Instant::now();
                    if due < now {
                        // Fell behind (a slow poll): skip to now rather than
                        // firing the missed polls back to back.
                        due = now;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Everything a profile reads, walked and fetched.
pub async fn snmp_walk(session: &snmp::Session, profile: &Profile) -> Result<Walk, FacilityError> {
    let (walks, gets) = profile.plan();
    let mut walk = Walk::new();
    for root in &walks {
        session.walk_into(root, &mut walk).await?;
    }
    let gets: Vec<_> = gets.into_iter().collect();
    for chunk in gets.chunks(16) {
        walk.extend(session.get(chunk).await?);
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let d = Device {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries: 0,
            max_backoff: Duration::from_secs(60),
            ..Device::new(
                "x",
                profile::DeviceKind::Pdu,
                Address::parse("snmp://h").unwrap(),
            )
        };
        let mut st = DeviceState::new(d);
        let mut delays = Vec::new();
        for f in 0..6 {
            st.failures = f;
            delays.push(st.next_delay().as_secs());
        }
        assert_eq!(delays, [10, 10, 20, 40, 60, 60]);
    }
}
