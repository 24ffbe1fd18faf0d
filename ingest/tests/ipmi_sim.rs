//! The IPMI source against OpenIPMI's `ipmi_sim` (a real BMC simulator
//! speaking RMCP+): SEL entries injected through its console become
//! `bmc.sel` events, a sensor pushed over its threshold becomes a
//! `bmc.sensor` state change, and a wrong password is an error that does
//! not show the password.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Duration;

use pitcrew_contract::{EventData, SensorState, Timestamp};
use pitcrew_harness::ipmi::{SimulatedBmc, PASSWORD, USER};
use pitcrew_ingest::ipmi::{BmcConnection, BmcTarget, IpmiSource};

fn target(bmc: &SimulatedBmc, password: &str) -> BmcTarget {
    BmcTarget {
        address: bmc.address(),
        username: USER.to_owned(),
        password: pitcrew_ingest::ipmi::Secret::new(password),
    }
}

/// Polls `f` until it returns Some (the simulator applies console
/// commands asynchronously), for up to 10 s.
fn until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the simulator did not apply the console command"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sel_entries_and_sensor_thresholds_from_a_simulated_bmc() {
    let bmc = SimulatedBmc::start().unwrap();
    let mut conn = BmcConnection::connect(&target(&bmc, PASSWORD), Duration::from_secs(5)).unwrap();
    let mut src = IpmiSource::new("n17", "boot", None);

    let existing = conn.sel_entries().unwrap();
    println!("existing SEL: {existing:?}");
    assert!(!existing.is_empty(), "the emulation file's entry");
    assert!(
        src.sel_events(&existing, Timestamp::EPOCH).is_empty(),
        "history is a baseline"
    );

    // Critical Interrupt (0x13), sensor #0x90, sensor-specific (0x6f), offset 0x0a: Bus Fatal Error.
    bmc.console(
        "sel_add 0x20 0x02 0x00 0x00 0x00 0x00 0x20 0x00 0x04 0x13 0x90 0x6f 0x0a 0xff 0xff",
    )
    .unwrap();
    let now = until(|| {
        let entries = conn.sel_entries().unwrap();
        (entries.len() > existing.len()).then_some(entries)
    });
    let events = src.sel_events(&now, Timestamp::EPOCH);
    assert_eq!(events.len(), 1, "{now:?}");
    match &events[0].data {
        EventData::BmcSel(s) => {
            println!("{s:?}");
            assert_eq!(s.sensor_type, "Critical Interrupt");
            assert_eq!(s.sensor, "#0x90");
            assert!(
                s.description.contains("Bus Fatal Error"),
                "{}",
                s.description
            );
            assert!(s.asserted);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        src.sel_events(&conn.sel_entries().unwrap(), Timestamp::EPOCH)
            .is_empty(),
        "not twice"
    );

    let sensors = conn.threshold_sensors().unwrap();
    println!("sensors: {sensors:?}");
    let gpu = sensors
        .iter()
        .find(|s| s.name == "GPU0 Temp")
        .expect("the emulated sensor");
    assert_eq!(gpu.state, SensorState::Ok);
    assert_eq!(
        src.sensor_events(&sensors, Timestamp::EPOCH).len(),
        sensors.len()
    );
    bmc.console("sensor_set_value 0x20 0 1 0x95 1").unwrap();
    let hot = until(|| {
        let read = conn.threshold_sensors().unwrap();
        read.iter()
            .any(|s| s.state != SensorState::Ok)
            .then_some(read)
    });
    let events = src.sensor_events(&hot, Timestamp::EPOCH);
    let states: Vec<(String, SensorState, Option<f64>)> = events
        .iter()
        .map(|e| match &e.data {
            EventData::BmcSensor(s) => (s.sensor.clone(), s.state, s.value),
            other => panic!("{other:?}"),
        })
        .collect();
    println!("{states:?}");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].0, "GPU0 Temp");
    assert!(matches!(
        states[0].1,
        SensorState::Critical | SensorState::NonRecoverable
    ));
}

#[test]
fn a_wrong_password_fails_without_showing_it() {
    let bmc = SimulatedBmc::start().unwrap();
    let wrong = "not-the-secret-4242";
    let err = BmcConnection::connect(&target(&bmc, wrong), Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains(&bmc.address()));
    assert!(!err.contains(wrong), "{err}");
}
