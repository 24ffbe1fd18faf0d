//! The shipped profiles against walks recorded from real devices
//! (facility/testdata, from the snmpsim-data package): every field of every
//! reading checked against the recording's own values, and faults injected
//! by changing a value as a failing device would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pitcrew_contract::{
    EventData, LoadState, OutletState, PduReading, PduScope, Timestamp, UpsSource,
};
use pitcrew_facility::assemble::{events, Meters, Subject};
use pitcrew_facility::profile::{Problem, Profile, Walk};
use pitcrew_facility::snmprec::parse_snmprec;
use pitcrew_facility::DeviceKind;

fn recording(name: &str) -> String {
    // Recordings hold raw non-UTF-8 bytes in places (type 4 strings).
    let bytes = std::fs::read(format!(
        "{}/testdata/{name}.snmprec",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn run(profile: &str, walk: &Walk) -> (Vec<EventData>, Vec<Problem>) {
    let p = Profile::builtin(profile).unwrap();
    let mut problems = Vec::new();
    let readings = p.assemble(walk, &mut problems);
    let subject = Subject {
        name: "dev".into(),
        racks: vec!["r3".into()],
        ..Subject::default()
    };
    let evs = events(
        &subject,
        p.kind,
        readings,
        Timestamp::from_unix_millis(0),
        &mut Meters::default(),
        &mut problems,
    );
    (evs.into_iter().map(|e| e.data).collect(), problems)
}

fn pdu(evs: &[EventData], scope: PduScope, index: u32) -> &PduReading {
    evs.iter()
        .find_map(|d| match d {
            EventData::FacilityPdu(p) if p.scope == scope && p.index == Some(index) => Some(p),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {scope:?} {index} in {evs:?}"))
}

#[test]
fn apc_ap8932_every_field_as_recorded() {
    let (evs, problems) = run("apc-rpdu2", &parse_snmprec(&recording("apc-8932")));
    assert!(problems.is_empty(), "{problems:?}");
    // rPDU2DeviceStatus: load state 2, power 16 hundredths kW, energy 6426 tenths kWh.
    let unit = pdu(&evs, PduScope::Pdu, 1);
    assert_eq!(unit.name.as_deref(), Some("pwr-dc01-pdu-rack3-01"));
    assert_eq!(unit.load, Some(LoadState::Normal));
    assert_eq!(unit.power_w, Some(160.0));
    assert_eq!(unit.energy_kwh, Some(642.6));
    assert_eq!(unit.racks, ["r3"]);
    // rPDU2PhaseStatus 1: 14 tenths A, 121 V, 16 hundredths kW; config: overload 24 A.
    let phase = pdu(&evs, PduScope::Phase, 1);
    assert_eq!(
        (
            phase.current_a,
            phase.voltage_v,
            phase.power_w,
            phase.rating_a,
            phase.load
        ),
        (
            Some(1.4),
            Some(121.0),
            Some(160.0),
            Some(24.0),
            Some(LoadState::Normal)
        )
    );
    // rPDU2BankStatus: bank 1 13 tenths A, bank 2 0; overload 20 A each.
    assert_eq!(pdu(&evs, PduScope::Bank, 1).current_a, Some(1.3));
    assert_eq!(pdu(&evs, PduScope::Bank, 2).current_a, Some(0.0));
    assert_eq!(pdu(&evs, PduScope::Bank, 2).rating_a, Some(20.0));
    // 24 switched outlets, named; the relay as the recording starts it
    // (rPDU2OutletSwitchedStatusState 1 off, 2 on: 22 off, 2 on).
    let outlets: Vec<&PduReading> = evs
        .iter()
        .filter_map(|d| match d {
            EventData::FacilityPdu(p) if p.scope == PduScope::Outlet => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(outlets.len(), 24);
    assert_eq!(
        pdu(&evs, PduScope::Outlet, 1).name.as_deref(),
        Some("SW-DC01-WEST-01-B")
    );
    assert_eq!(
        pdu(&evs, PduScope::Outlet, 9).name.as_deref(),
        Some("INT ROUTER")
    );
    let on = outlets
        .iter()
        .filter(|o| o.state == Some(OutletState::On))
        .count();
    let off = outlets
        .iter()
        .filter(|o| o.state == Some(OutletState::Off))
        .count();
    assert_eq!((on, off), (2, 22));
    // This model meters no outlet: no current is made up.
    assert!(outlets.iter().all(|o| o.current_a.is_none()));
    // Its probe port is empty (-1 everywhere): no temperature is made up.
    assert!(evs
        .iter()
        .all(|d| !matches!(d, EventData::FacilityPdu(p) if p.temperature_c.is_some())));
}

#[test]
fn apc_ap7902b_reports_what_it_supports_and_nothing_else() {
    let (evs, problems) = run("apc-rpdu2", &parse_snmprec(&recording("apc-7902b")));
    assert!(problems.is_empty(), "{problems:?}");
    let unit = pdu(&evs, PduScope::Pdu, 1);
    assert_eq!(unit.name.as_deref(), Some("pwr-dc01-pdu-rack01-01"));
    // No device-level metering on this model: power and energy -1, load
    // state 5, all "not supported".
    assert_eq!(unit.load, None);
    assert_eq!(unit.power_w, None);
    assert_eq!(unit.energy_kwh, None);
    let phase = pdu(&evs, PduScope::Phase, 1);
    assert_eq!(phase.current_a, Some(1.6));
    assert_eq!(phase.voltage_v, None);
    assert_eq!(phase.rating_a, Some(24.0));
}

#[test]
fn eaton_93e_ups_as_recorded() {
    let (evs, problems) = run("ups-mib", &parse_snmprec(&recording("eaton-93e-80")));
    assert!(problems.is_empty(), "{problems:?}");
    let EventData::FacilityUps(u) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(u.source, UpsSource::Normal);
    assert_eq!(u.runtime_s, Some(1092.0 * 60.0));
    assert_eq!(u.charge_pct, Some(100.0));
    assert_eq!(u.temperature_c, Some(25.0));
    assert_eq!(u.on_battery_s, Some(0.0));
    // Three lines: the lowest input (227, 227, 233), total power, busiest line.
    assert_eq!(u.input_voltage_v, Some(227.0));
    assert_eq!(u.output_voltage_v, Some(220.0));
    assert_eq!(u.output_power_w, Some(5100.0 + 3600.0 + 2700.0));
    assert_eq!(u.load_pct, Some(21.0));
    assert!(u.alarms.is_empty());
}

#[test]
fn a_single_line_ups_ignores_the_padding_rows_its_agent_leaves() {
    // Phoenixtec's agent reports 1 input and 1 output line but fills three
    // rows, the other two with 0: reading them would say the input is lost.
    let (evs, problems) = run("ups-mib", &parse_snmprec(&recording("phoenixtec-power")));
    assert!(problems.is_empty(), "{problems:?}");
    let EventData::FacilityUps(u) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(u.input_voltage_v, Some(238.0));
    assert_eq!(u.output_voltage_v, Some(231.0));
}

#[test]
fn injected_faults_read_as_the_device_would_report_them() {
    // The UPS goes to battery with 12 minutes left and raises its alarm.
    let text = recording("eaton-93e-80")
        .replace("1.3.6.1.2.1.33.1.4.1.0|2|3", "1.3.6.1.2.1.33.1.4.1.0|2|5")
        .replace(
            "1.3.6.1.2.1.33.1.2.3.0|2|1092",
            "1.3.6.1.2.1.33.1.2.3.0|2|12",
        )
        .replace("1.3.6.1.2.1.33.1.2.2.0|2|0", "1.3.6.1.2.1.33.1.2.2.0|2|14")
        + "1.3.6.1.2.1.33.1.6.2.1.2.1|6|1.3.6.1.2.1.33.1.6.3.2\n";
    let (evs, _) = run("ups-mib", &parse_snmprec(&text));
    let EventData::FacilityUps(u) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(u.source, UpsSource::Battery);
    assert_eq!(u.runtime_s, Some(720.0));
    assert_eq!(u.on_battery_s, Some(14.0));
    assert_eq!(u.alarms, ["on_battery"]);
    // Bank 1 of the PDU draws 21.3 A against its 20 A overload threshold.
    let text = recording("apc-8932")
        .replace(
            "1.3.6.1.4.1.318.1.1.26.8.3.1.5.1|2|13",
            "1.3.6.1.4.1.318.1.1.26.8.3.1.5.1|2|213",
        )
        .replace(
            "1.3.6.1.4.1.318.1.1.26.8.3.1.4.1|2|2",
            "1.3.6.1.4.1.318.1.1.26.8.3.1.4.1|2|4",
        );
    let (evs, _) = run("apc-rpdu2", &parse_snmprec(&text));
    let bank = pdu(&evs, PduScope::Bank, 1);
    assert_eq!(
        (bank.current_a, bank.rating_a, bank.load),
        (Some(21.3), Some(20.0), Some(LoadState::Overload))
    );
}

#[test]
fn a_truncated_table_and_a_wrong_type_are_named_and_the_rest_kept() {
    let text: String = recording("apc-8932")
        .lines()
        // The agent stops answering the bank table's current column for bank 2.
        .filter(|l| !l.starts_with("1.3.6.1.4.1.318.1.1.26.8.3.1.5.2|"))
        .map(|l| {
            if l.starts_with("1.3.6.1.4.1.318.1.1.26.6.3.1.6.1|") {
                "1.3.6.1.4.1.318.1.1.26.6.3.1.6.1|4|n/a".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (evs, problems) = run("apc-rpdu2", &parse_snmprec(&text));
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.reason, p.oid.as_str()))
        .collect();
    assert!(
        got.contains(&("truncated_table", "1.3.6.1.4.1.318.1.1.26.8.3.1")),
        "{got:?}"
    );
    assert!(
        got.contains(&("wrong_type", "1.3.6.1.4.1.318.1.1.26.6.3.1.6.1")),
        "{got:?}"
    );
    // Everything else of those rows is still read.
    assert_eq!(pdu(&evs, PduScope::Bank, 2).rating_a, Some(20.0));
    assert_eq!(pdu(&evs, PduScope::Phase, 1).current_a, Some(1.4));
    assert_eq!(pdu(&evs, PduScope::Phase, 1).voltage_v, None);
    let _ = DeviceKind::Pdu;
}
