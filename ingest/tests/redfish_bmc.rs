//! The Redfish BMC reader against a real HTTP server serving DMTF-shaped
//! documents (DSP0268 schemas: ServiceRoot collections, ComputerSystem,
//! LogService, LogEntry with SEL fields, paged with
//! Members@odata.nextLink; Chassis with the legacy Thermal and Power
//! resources and one with the Sensors collection): new log entries only,
//! position kept across a restart, a cleared log, sensor state changes,
//! and a refused login that names no password. Then a real Redfish
//! service: the sushy-tools emulator (PyPI) on libvirt's test driver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{EventData, SensorState, Timestamp};
use pitcrew_harness::docserver::DocServer;
use pitcrew_ingest::redfish::{RedfishBmc, RedfishSource, RedfishTarget};
use serde_json::json;

const PASSWORD: &str = "s3cret-bmc-pw";

fn entry(id: u32, message: &str, code: &str) -> serde_json::Value {
    json!({
        "@odata.id": format!("/redfish/v1/Systems/1/LogServices/SEL/Entries/{id}"),
        "@odata.type": "#LogEntry.v1_15_0.LogEntry",
        "Id": id.to_string(), "Name": "Log Entry", "EntryType": "SEL",
        "Created": "2026-12-03T10:00:00Z", "Severity": "Critical",
        "Message": message, "MessageId": "OpenBMC.0.1.SensorThresholdCriticalHighGoingHigh",
        "SensorType": "Memory", "SensorNumber": 8, "EntryCode": code
    })
}

fn serve(docs: &DocServer, entries: &[serde_json::Value], cpu_temp: f64) {
    docs.set(
        "/redfish/v1/Systems",
        200,
        json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}], "Members@odata.count": 1})
            .to_string(),
    );
    docs.set(
        "/redfish/v1/Systems/1",
        200,
        json!({"Id": "1", "LogServices": {"@odata.id": "/redfish/v1/Systems/1/LogServices"}})
            .to_string(),
    );
    docs.set("/redfish/v1/Systems/1/LogServices", 200, json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1/LogServices/SEL"}, {"@odata.id": "/redfish/v1/Systems/1/LogServices/Event"}]}).to_string());
    docs.set("/redfish/v1/Systems/1/LogServices/SEL", 200, json!({"Id": "SEL", "Entries": {"@odata.id": "/redfish/v1/Systems/1/LogServices/SEL/Entries"}}).to_string());
    // Two pages.
    let (first, rest) = entries.split_at(entries.len().min(2));
    docs.set("/redfish/v1/Systems/1/LogServices/SEL/Entries", 200, json!({"Members": first, "Members@odata.nextLink": "/redfish/v1/Systems/1/LogServices/SEL/Entries?$skip=2"}).to_string());
    docs.set(
        "/redfish/v1/Systems/1/LogServices/SEL/Entries?$skip=2",
        200,
        json!({"Members": rest}).to_string(),
    );
    docs.set("/redfish/v1/Systems/1/LogServices/Event", 200, json!({"Id": "Event", "Entries": {"@odata.id": "/redfish/v1/Systems/1/LogServices/Event/Entries"}}).to_string());
    docs.set("/redfish/v1/Systems/1/LogServices/Event/Entries", 200, json!({"Members": [{"Id": "a-7", "Created": "2026-12-03T09:00:00+00:00", "Message": "System restarted", "EntryType": "Event"}]}).to_string());
    docs.set("/redfish/v1/Chassis", 200, json!({"Members": [{"@odata.id": "/redfish/v1/Chassis/1"}, {"@odata.id": "/redfish/v1/Chassis/GPUBoard"}]}).to_string());
    docs.set("/redfish/v1/Chassis/1", 200, json!({"Id": "1", "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"}, "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"}}).to_string());
    docs.set("/redfish/v1/Chassis/1/Thermal", 200, json!({
        "Temperatures": [{"MemberId": "0", "Name": "CPU1 Temp", "ReadingCelsius": cpu_temp, "UpperThresholdCritical": 95, "Status": {"State": "Enabled", "Health": "OK"}}],
        "Fans": [{"MemberId": "0", "Name": "Fan1", "Reading": 8000, "ReadingUnits": "RPM", "Status": {"State": "Enabled", "Health": "OK"}}]
    }).to_string());
    docs.set("/redfish/v1/Chassis/1/Power", 200, json!({
        "Voltages": [{"MemberId": "0", "Name": "P12V", "ReadingVolts": 12.1, "Status": {"Health": "OK"}}],
        "PowerSupplies": [{"MemberId": "0", "Name": "PSU1", "LastPowerOutputWatts": 900, "Status": {"State": "Enabled", "Health": "Critical"}}]
    }).to_string());
    docs.set(
        "/redfish/v1/Chassis/GPUBoard",
        200,
        json!({"Id": "GPUBoard", "Sensors": {"@odata.id": "/redfish/v1/Chassis/GPUBoard/Sensors"}})
            .to_string(),
    );
    docs.set("/redfish/v1/Chassis/GPUBoard/Sensors", 200, json!({"Members": [{"@odata.id": "/redfish/v1/Chassis/GPUBoard/Sensors/HGX_GPU_0_TEMP_0"}]}).to_string());
    docs.set("/redfish/v1/Chassis/GPUBoard/Sensors/HGX_GPU_0_TEMP_0", 200, json!({
        "Id": "HGX_GPU_0_TEMP_0", "Name": "HGX GPU 0 TEMP 0", "Reading": 41.5, "ReadingUnits": "Cel",
        "Thresholds": {"UpperCritical": {"Reading": 87.0}}, "Status": {"State": "Enabled", "Health": "OK"}
    }).to_string());
}

fn bmc(docs: &DocServer, password: &str) -> RedfishBmc {
    RedfishBmc::new(
        RedfishTarget {
            base: docs.base(),
            username: "root".into(),
            password: pitcrew_config::Secret::new(password),
            tls: Default::default(),
        },
        Duration::from_secs(5),
    )
    .unwrap()
}

#[test]
fn new_log_entries_and_sensor_changes_from_a_redfish_bmc() {
    let docs = DocServer::start().unwrap();
    let mut entries = vec![
        entry(1, "Memory ECC correctable", "Assert"),
        entry(2, "Memory ECC correctable", "Deassert"),
        entry(3, "PSU1 AC lost", "Assert"),
    ];
    serve(&docs, &entries, 45.0);
    let b = bmc(&docs, PASSWORD);
    let t = Timestamp::EPOCH;
    let mut src = RedfishSource::new("n17", "boot-1", Default::default());

    let read = b.log_entries().unwrap();
    assert_eq!(read.len(), 4, "both pages and both logs: {read:#?}");
    assert!(
        src.log_events(&read, t).is_empty(),
        "the first read is a baseline"
    );
    let sensors = b.sensors().unwrap();
    let first = src.sensor_events(&sensors, t);
    assert_eq!(first.len(), 5, "{first:#?}");
    let psu = first
        .iter()
        .find_map(|e| match &e.data {
            EventData::BmcSensor(s) if s.sensor == "PSU1" => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(psu.state, SensorState::Critical);

    // A new entry on the second page; the CPU runs over its threshold.
    entries.push(entry(4, "Uncorrectable ECC @ DIMM A1", "Assert"));
    serve(&docs, &entries, 97.0);
    let ev = src.log_events(&b.log_entries().unwrap(), t);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let EventData::BmcSel(sel) = &ev[0].data else {
        panic!()
    };
    assert_eq!(
        (
            sel.record_id,
            sel.sensor.as_str(),
            sel.description.as_str(),
            sel.asserted
        ),
        (4, "#0x08", "Uncorrectable ECC @ DIMM A1", true)
    );
    assert_eq!(ev[0].source.as_str(), "redfish");
    let changed = src.sensor_events(&b.sensors().unwrap(), t);
    assert_eq!(changed.len(), 1, "only the CPU changed: {changed:#?}");

    // Restarted with the saved positions: nothing repeats.
    let mut again = RedfishSource::new("n17", "boot-1", src.positions().clone());
    assert!(again.log_events(&b.log_entries().unwrap(), t).is_empty());
    // The SEL cleared, one new entry: it is news.
    serve(&docs, &[entry(1, "Log area reset/cleared", "Assert")], 97.0);
    let ev = again.log_events(&b.log_entries().unwrap(), t);
    assert_eq!(ev.len(), 1, "{ev:#?}");
}

#[test]
fn a_refused_login_is_an_error_without_the_password() {
    let docs = DocServer::start().unwrap();
    docs.set(
        "/redfish/v1/Systems",
        401,
        "{\"error\": {\"code\": \"Base.1.8.NoValidSession\"}}",
    );
    let err = bmc(&docs, PASSWORD).log_entries().unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    // A BMC that is gone: an error within the timeout, not a hang.
    let gone = bmc(&docs, PASSWORD);
    drop(docs);
    let started = std::time::Instant::now();
    let err = gone.sensors().unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(6), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn a_real_redfish_service_sushy_tools() {
    // sushy-tools on libvirt's test driver: a System without LogServices
    // (read as no log, not an error) and a Chassis with the legacy Thermal
    // resource, thresholds included.
    let sushy = pitcrew_harness::redfish::SushyEmulator::start().unwrap();
    let b = RedfishBmc::new(
        RedfishTarget {
            base: sushy.base(),
            username: "admin".into(),
            password: pitcrew_config::Secret::new(PASSWORD),
            tls: Default::default(),
        },
        Duration::from_secs(5),
    )
    .unwrap();
    let logs = b
        .log_entries()
        .unwrap_or_else(|e| panic!("{e}\n{}", sushy.log()));
    assert!(logs.is_empty(), "{logs:#?}");
    let sensors = b
        .sensors()
        .unwrap_or_else(|e| panic!("{e}\n{}", sushy.log()));
    let cpu = sensors
        .iter()
        .find(|s| s.name == "CPU Temp")
        .unwrap_or_else(|| panic!("{sensors:#?}"));
    // 41 °C under its non-critical threshold of 42.
    assert_eq!(
        (cpu.value, cpu.unit.as_deref(), cpu.state),
        (Some(41.0), Some("Cel"), SensorState::Ok)
    );
    assert!(
        sensors.iter().any(|s| s.unit.as_deref() == Some("RPM")),
        "{sensors:#?}"
    );
    let mut src = RedfishSource::new("n17", "boot-1", Default::default());
    let t = Timestamp::EPOCH;
    assert_eq!(src.sensor_events(&sensors, t).len(), sensors.len());
    assert!(
        src.sensor_events(&b.sensors().unwrap(), t).is_empty(),
        "no change, no event"
    );
}
