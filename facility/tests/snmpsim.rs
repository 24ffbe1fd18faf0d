//! The poller against a real SNMP agent: snmpsim serving walks recorded
//! from real devices, over UDP on loopback. Faults are injected as a
//! failing device would show them: a value changed in the served copy, an
//! agent that does not answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{EventData, PduScope, Timestamp, UpsSource};
use pitcrew_facility::config::{Address, Device};
use pitcrew_facility::metrics::FacilityMetrics;
use pitcrew_facility::poller::{DeviceState, Library, Poller};
use pitcrew_facility::DeviceKind;
use pitcrew_harness::snmpsim::Snmpsim;

fn recording(name: &str) -> String {
    let bytes = std::fs::read(format!(
        "{}/testdata/{name}.snmprec",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn device(name: &str, url: &str, kind: DeviceKind, profile: Option<&str>) -> Device {
    Device {
        racks: vec!["r3".into()],
        profile: profile.map(str::to_owned),
        interval: Duration::from_secs(5),
        timeout: Duration::from_millis(800),
        retries: 0,
        max_backoff: Duration::from_secs(60),
        ..Device::new(name, kind, Address::parse(url).unwrap())
    }
}

#[tokio::test]
async fn recorded_devices_over_snmp_with_injected_faults() {
    let on_battery = recording("eaton-93e-80")
        .replace("1.3.6.1.2.1.33.1.4.1.0|2|3", "1.3.6.1.2.1.33.1.4.1.0|2|5")
        .replace(
            "1.3.6.1.2.1.33.1.2.3.0|2|1092",
            "1.3.6.1.2.1.33.1.2.3.0|2|12",
        );
    let overloaded = recording("apc-8932")
        .replace(
            "1.3.6.1.4.1.318.1.1.26.8.3.1.5.1|2|13",
            "1.3.6.1.4.1.318.1.1.26.8.3.1.5.1|2|213",
        )
        .replace(
            "1.3.6.1.4.1.318.1.1.26.8.3.1.4.1|2|2",
            "1.3.6.1.4.1.318.1.1.26.8.3.1.4.1|2|4",
        );
    let sim = Snmpsim::start(&[
        ("apc-8932", recording("apc-8932")),
        ("apc-7902b", recording("apc-7902b")),
        ("eaton-93e-80", recording("eaton-93e-80")),
        ("phoenixtec-power", recording("phoenixtec-power")),
        ("ups-on-battery", on_battery),
        ("pdu-overloaded", overloaded),
    ])
    .unwrap();
    let port = sim.port;
    let poller = Poller::new(Library::load(&[]).unwrap(), FacilityMetrics::default(), 8);
    let now = Timestamp::now();

    // Profiles detected from sysObjectID; every part read over GETBULK.
    let mut pdu = DeviceState::new(device(
        "pdu-r3",
        &format!("snmp://apc-8932@127.0.0.1:{port}"),
        DeviceKind::Pdu,
        None,
    ));
    let out = poller.poll(&mut pdu, now).await;
    assert!(out.error.is_none(), "{:?}\n{}", out.error, sim.log());
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(out.profile.as_deref(), Some("apc-rpdu2"));
    let outlets = out
        .events
        .iter()
        .filter(|e| matches!(&e.data, EventData::FacilityPdu(p) if p.scope == PduScope::Outlet))
        .count();
    assert_eq!(outlets, 24);
    let phase = out.events.iter().find_map(|e| match &e.data {
        EventData::FacilityPdu(p) if p.scope == PduScope::Phase => Some(p.clone()),
        _ => None,
    });
    assert_eq!(
        phase.map(|p| (p.current_a, p.voltage_v)),
        Some((Some(1.4), Some(121.0)))
    );
    // The first poll says the device is up.
    assert!(out
        .events
        .iter()
        .any(|e| matches!(&e.data, EventData::FacilityDevice(d) if d.up)));

    let mut ups = DeviceState::new(device(
        "ups-1",
        &format!("snmp://ups-on-battery@127.0.0.1:{port}"),
        DeviceKind::Ups,
        None,
    ));
    let out = poller.poll(&mut ups, now).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let EventData::FacilityUps(u) = &out.events[0].data else {
        panic!("{:?}", out.events)
    };
    assert_eq!((u.source, u.runtime_s), (UpsSource::Battery, Some(720.0)));

    let mut hot = DeviceState::new(device(
        "pdu-r4",
        &format!("snmp://pdu-overloaded@127.0.0.1:{port}"),
        DeviceKind::Pdu,
        Some("apc-rpdu2"),
    ));
    let out = poller.poll(&mut hot, now).await;
    let bank = out.events.iter().find_map(|e| match &e.data {
        EventData::FacilityPdu(p) if p.scope == PduScope::Bank && p.index == Some(1) => {
            Some(p.clone())
        }
        _ => None,
    });
    assert_eq!(
        bank.map(|b| (b.current_a, b.load)),
        Some((Some(21.3), Some(pitcrew_contract::LoadState::Overload)))
    );

    // A community the agent does not serve: no answer, so a timeout, a
    // down event naming the device, and the next poll backs off.
    let mut dead = DeviceState::new(device(
        "pdu-dead",
        &format!("snmp://nosuch@127.0.0.1:{port}"),
        DeviceKind::Pdu,
        Some("apc-rpdu2"),
    ));
    let out = poller.poll(&mut dead, now).await;
    let err = out.error.as_ref().unwrap().to_string();
    assert!(err.contains("pdu-dead") && err.contains("timeout"), "{err}");
    assert!(!err.contains("nosuch"), "the community leaked: {err}");
    let down = out.events.iter().find_map(|e| match &e.data {
        EventData::FacilityDevice(d) => Some(d.clone()),
        _ => None,
    });
    assert_eq!(down.map(|d| (d.up, d.failures)), Some((false, 1)));
    assert_eq!(dead.next_delay(), Duration::from_secs(5));
    let _ = poller.poll(&mut dead, now).await;
    assert_eq!(dead.next_delay(), Duration::from_secs(10));
    // ...while the other devices answer as before.
    let out = poller.poll(&mut pdu, now).await;
    assert!(out.error.is_none());
    // Up again after being up: no repeated reachability event.
    assert!(!out
        .events
        .iter()
        .any(|e| matches!(&e.data, EventData::FacilityDevice(_))));
}

#[tokio::test]
async fn snmpv3_authpriv_reads_and_a_wrong_key_fails_without_showing_it() {
    use pitcrew_config::Secret;
    use pitcrew_facility::config::Credentials;
    use pitcrew_harness::snmpsim::V3User;

    let user = V3User {
        name: "pitcrew".into(),
        auth_key: "auth-key-1234".into(),
        priv_key: "priv-key-5678".into(),
    };
    let sim = Snmpsim::start_with(&[("apc-8932", recording("apc-8932"))], Some(&user)).unwrap();
    let url = format!(
        "snmpv3://pitcrew@127.0.0.1:{}?auth=sha256&priv=aes&context=apc-8932",
        sim.port
    );
    let poller = Poller::new(Library::load(&[]).unwrap(), FacilityMetrics::default(), 4);
    let mut d = device("pdu-v3", &url, DeviceKind::Pdu, None);
    d.credentials = Credentials {
        auth_key: Some(Secret::new("auth-key-1234")),
        priv_key: Some(Secret::new("priv-key-5678")),
        ..Credentials::default()
    };
    let mut st = DeviceState::new(d.clone());
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.is_none(), "{:?}\n{}", out.error, sim.log());
    assert_eq!(out.profile.as_deref(), Some("apc-rpdu2"));
    let outlets = out
        .events
        .iter()
        .filter(|e| matches!(&e.data, EventData::FacilityPdu(p) if p.scope == PduScope::Outlet))
        .count();
    assert_eq!(outlets, 24);

    d.name = "pdu-v3-wrong".into();
    d.credentials.auth_key = Some(Secret::new("wrong-key-9999"));
    let mut st = DeviceState::new(d);
    let out = poller.poll(&mut st, Timestamp::now()).await;
    let shown = format!("{out:?}");
    assert!(!shown.contains("wrong-key-9999"));
    let err = out.error.expect("a wrong key fails");
    let text = err.to_string();
    assert_eq!(err.reason(), "auth", "{text}");
    assert!(text.contains("pdu-v3-wrong"), "{text}");
    assert!(
        !text.contains("wrong-key-9999") && !text.contains("priv-key-5678"),
        "a key leaked: {text}"
    );
}

#[tokio::test]
async fn bad_answers_over_the_wire_are_named_and_the_poll_keeps_the_rest() {
    let lines = |name: &str, drop: &[&str], replace: &[(&str, &str)]| -> String {
        let mut text: String = recording(name)
            .lines()
            .filter(|l| !drop.iter().any(|d| l.starts_with(d)))
            .collect::<Vec<_>>()
            .join("\n");
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        text + "\n"
    };
    // A UPS whose agent lacks upsEstimatedChargeRemaining and answers its
    // battery temperature as text; a PDU that lost bank 2's current column.
    let ups = lines(
        "eaton-93e-80",
        &["1.3.6.1.2.1.33.1.2.4.0|"],
        &[(
            "1.3.6.1.2.1.33.1.2.7.0|2|25",
            "1.3.6.1.2.1.33.1.2.7.0|4|hot",
        )],
    );
    let pdu = lines("apc-8932", &["1.3.6.1.4.1.318.1.1.26.8.3.1.5.2|"], &[]);
    let sim = Snmpsim::start(&[("ups-odd", ups), ("pdu-odd", pdu)]).unwrap();
    let poller = Poller::new(Library::load(&[]).unwrap(), FacilityMetrics::default(), 4);
    let now = Timestamp::now();

    let mut st = DeviceState::new(device(
        "ups-odd",
        &format!("snmp://ups-odd@127.0.0.1:{}", sim.port),
        DeviceKind::Ups,
        Some("ups-mib"),
    ));
    let out = poller.poll(&mut st, now).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let got: Vec<(&str, &str)> = out
        .problems
        .iter()
        .map(|p| (p.reason, p.oid.as_str()))
        .collect();
    assert!(
        got.contains(&("no_such_object", "1.3.6.1.2.1.33.1.2.4.0")),
        "{got:?}"
    );
    assert!(
        got.contains(&("wrong_type", "1.3.6.1.2.1.33.1.2.7.0")),
        "{got:?}"
    );
    let EventData::FacilityUps(u) = &out.events[0].data else {
        panic!("{:?}", out.events)
    };
    assert_eq!(
        (u.charge_pct, u.temperature_c, u.runtime_s),
        (None, None, Some(1092.0 * 60.0))
    );

    let mut st = DeviceState::new(device(
        "pdu-odd",
        &format!("snmp://pdu-odd@127.0.0.1:{}", sim.port),
        DeviceKind::Pdu,
        Some("apc-rpdu2"),
    ));
    let out = poller.poll(&mut st, now).await;
    let got: Vec<(&str, &str)> = out
        .problems
        .iter()
        .map(|p| (p.reason, p.oid.as_str()))
        .collect();
    assert!(
        got.contains(&("truncated_table", "1.3.6.1.4.1.318.1.1.26.8.3.1")),
        "{got:?}"
    );
    // The PDU's energy meter is reset on the device (same length: snmpsim
    // serves the new value at once): no delta that poll, counted.
    let file = sim.data.join("pdu-odd.snmprec");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1|2|6426",
            "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1|2|0001",
        ),
    )
    .unwrap();
    let out = poller.poll(&mut st, now).await;
    assert!(
        out.problems.iter().any(|p| p.reason == "counter_reset"),
        "{:?}",
        out.problems
    );
    let unit = out.events.iter().find_map(|e| match &e.data {
        EventData::FacilityPdu(p) if p.scope == PduScope::Pdu => Some(p.clone()),
        _ => None,
    });
    assert_eq!(
        unit.map(|u| (u.energy_kwh, u.energy_delta_kwh)),
        Some((Some(0.1), None))
    );
}
