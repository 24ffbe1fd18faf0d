//! The poller against a real Modbus TCP server (pymodbus) holding the
//! `cdu-generic` register map, values changed while it runs, and against
//! a register span the device does not have (an exception).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{EventData, Timestamp};
use pitcrew_facility::config::{Address, Device};
use pitcrew_facility::metrics::FacilityMetrics;
use pitcrew_facility::modbus::RegisterMap;
use pitcrew_facility::poller::{DeviceState, Library, Poller};
use pitcrew_facility::DeviceKind;
use pitcrew_harness::snmpsim::ModbusSim;

fn device(url: &str) -> Device {
    Device {
        racks: vec!["r1".into(), "r2".into()],
        cooling_loop: Some("L2".into()),
        interval: Duration::from_secs(5),
        timeout: Duration::from_millis(800),
        retries: 0,
        max_backoff: Duration::from_secs(60),
        ..Device::new("cdu-l2", DeviceKind::Cooling, Address::parse(url).unwrap())
    }
}

#[tokio::test]
async fn a_cdu_over_modbus_tcp_as_its_registers_change() {
    let sim = ModbusSim::start(16).unwrap();
    let f = 121.5f32.to_bits();
    sim.set(
        "input",
        &[
            (0, 425),
            (1, 552),
            (2, 0),
            (3, 4100),
            (4, (f >> 16) as u16),
            (5, f as u16),
            (6, 1),
            (7, 0),
            (8, 0),
        ],
    )
    .unwrap();
    sim.set("holding", &[(0, 420)]).unwrap();
    let mut lib = Library::load(&[]).unwrap();
    let poller = Poller::new(lib.clone(), FacilityMetrics::default(), 4);
    let mut st = DeviceState::new(device(&format!(
        "modbus://127.0.0.1:{}?unit=1&map=cdu-generic",
        sim.port
    )));
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.is_none(), "{:?}\n{}", out.error, sim.log());
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let cooling = |evs: &[pitcrew_contract::Event]| {
        evs.iter()
            .find_map(|e| match &e.data {
                EventData::FacilityCooling(c) => Some(c.clone()),
                _ => None,
            })
            .unwrap()
    };
    let c = cooling(&out.events);
    assert_eq!(
        (c.supply_c, c.return_c, c.delta_t_c),
        (Some(42.5), Some(55.2), Some(12.7))
    );
    assert_eq!(
        (c.flow_lpm, c.pressure_kpa, c.setpoint_c),
        (Some(410.0), Some(121.5), Some(42.0))
    );
    assert_eq!(
        (c.pump_on, c.loop_name.as_deref(), c.racks.len()),
        (Some(true), Some("L2"), 2)
    );
    assert!(c.alarms.is_empty());
    // The loop heats up, the pump stops and alarms; the leak rope trips.
    sim.set("input", &[(0, 481), (6, 0), (7, 0b11), (8, 1)])
        .unwrap();
    let out = poller.poll(&mut st, Timestamp::now()).await;
    let c = cooling(&out.events);
    assert_eq!((c.supply_c, c.pump_on), (Some(48.1), Some(false)));
    assert_eq!(c.alarms, ["pump_fault", "high_supply_temperature"]);
    let leak = out.events.iter().find_map(|e| match &e.data {
        EventData::FacilityLeak(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(
        leak.map(|l| (l.detector, l.leak)),
        Some(("cdu-tray".to_owned(), true))
    );

    // A map that reads past the device's registers: the exception is named
    // with its registers, and what could be read is kept.
    let bad = RegisterMap::parse(
        "bad.toml",
        "name = \"bad\"\nkind = \"cooling\"\n[[register]]\nfield = \"supply_c\"\ntable = \"input\"\naddress = 0\ntype = \"i16\"\nscale = 0.1\n[[register]]\nfield = \"flow_lpm\"\ntable = \"holding\"\naddress = 200\n",
    )
    .unwrap();
    lib.maps.push(bad);
    let poller = Poller::new(lib, FacilityMetrics::default(), 4);
    let mut st = DeviceState::new(device(&format!("modbus://127.0.0.1:{}?map=bad", sim.port)));
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let ex = out
        .problems
        .iter()
        .find(|p| p.reason == "modbus_exception")
        .expect("an exception");
    assert!(ex.oid.starts_with("holding 200"), "{ex:?}");
    assert!(ex.detail.contains("IllegalDataAddress"), "{ex:?}");
    assert_eq!(cooling(&out.events).supply_c, Some(48.1));

    // Nothing listening: a down event, not a hang.
    let port = pitcrew_harness::free_port().unwrap();
    let mut gone = DeviceState::new(device(&format!(
        "modbus://127.0.0.1:{port}?map=cdu-generic"
    )));
    let out = poller.poll(&mut gone, Timestamp::now()).await;
    assert!(
        out.error.as_ref().unwrap().to_string().contains("cdu-l2"),
        "{:?}",
        out.error
    );
    assert!(out
        .events
        .iter()
        .any(|e| matches!(&e.data, EventData::FacilityDevice(d) if !d.up)));
}
