//! The poller against a real HTTP server serving DMTF-shaped Redfish
//! ThermalEquipment documents (a CDU, its coolant connector, pumps and leak
//! detectors), changed while it runs, and served wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{EventData, Timestamp};
use pitcrew_facility::config::{Address, Device};
use pitcrew_facility::metrics::FacilityMetrics;
use pitcrew_facility::poller::{DeviceState, Library, Poller};
use pitcrew_facility::DeviceKind;
use pitcrew_harness::docserver::DocServer;

fn serve_cdu(s: &DocServer, supply: f64, detector_state: &str) {
    s.set("/redfish/v1/ThermalEquipment", 200, r##"{"@odata.id":"/redfish/v1/ThermalEquipment","CDUs":{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs"}}"##);
    s.set("/redfish/v1/ThermalEquipment/CDUs", 200, r##"{"Members":[{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1"}],"Members@odata.count":1}"##);
    s.set("/redfish/v1/ThermalEquipment/CDUs/1", 200, r##"{"@odata.type":"#CoolingUnit.v1_2_0.CoolingUnit","Id":"1","EquipmentType":"CDU","Status":{"State":"Enabled","Health":"OK"},
      "PrimaryCoolantConnectors":{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/PrimaryCoolantConnectors"},
      "Pumps":{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/Pumps"},
      "LeakDetection":{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection"}}"##);
    s.set("/redfish/v1/ThermalEquipment/CDUs/1/PrimaryCoolantConnectors", 200, r##"{"Members":[{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/PrimaryCoolantConnectors/A"}]}"##);
    s.set(
        "/redfish/v1/ThermalEquipment/CDUs/1/PrimaryCoolantConnectors/A",
        200,
        format!(r##"{{"@odata.type":"#CoolantConnector.v1_1_0.CoolantConnector","Id":"A","FlowLitersPerMinute":{{"Reading":410.0}},
          "SupplyTemperatureCelsius":{{"Reading":{supply}}},"ReturnTemperatureCelsius":{{"Reading":55.5}},"DeltaPressurekPa":{{"Reading":31.7}}}}"##),
    );
    s.set(
        "/redfish/v1/ThermalEquipment/CDUs/1/Pumps",
        200,
        r##"{"Members":[{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1"}]}"##,
    );
    s.set("/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1", 200, r##"{"Id":"1","Status":{"State":"Enabled","Health":"OK"},"PumpSpeedPercent":{"Reading":62}}"##);
    s.set("/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection", 200, r##"{"LeakDetectors":{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors"}}"##);
    s.set("/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors", 200, r##"{"Members":[{"@odata.id":"/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors/Moisture"}]}"##);
    s.set(
        "/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors/Moisture",
        200,
        format!(r##"{{"@odata.type":"#LeakDetector.v1_3_0.LeakDetector","Id":"Moisture","LeakDetectorType":"Moisture","DetectorState":"{detector_state}"}}"##),
    );
}

#[tokio::test]
async fn a_redfish_cdu_and_its_leak_detector() {
    let s = DocServer::start().unwrap();
    serve_cdu(&s, 42.0, "OK");
    let url = format!("redfish+http://127.0.0.1:{}", s.port());
    let device = Device {
        racks: vec!["r3".into()],
        cooling_loop: Some("L3".into()),
        interval: Duration::from_secs(5),
        timeout: Duration::from_millis(800),
        retries: 0,
        max_backoff: Duration::from_secs(60),
        ..Device::new("cdu-r3", DeviceKind::Cooling, Address::parse(&url).unwrap())
    };
    let poller = Poller::new(Library::load(&[]).unwrap(), FacilityMetrics::default(), 4);
    let mut st = DeviceState::new(device);
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let c = out
        .events
        .iter()
        .find_map(|e| match &e.data {
            EventData::FacilityCooling(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (c.supply_c, c.return_c, c.delta_t_c, c.flow_lpm),
        (Some(42.0), Some(55.5), Some(13.5), Some(410.0))
    );
    assert_eq!(
        (c.pump_on, c.loop_name.as_deref()),
        (Some(true), Some("L3"))
    );
    let leak = |evs: &[pitcrew_contract::Event]| {
        evs.iter().find_map(|e| match &e.data {
            EventData::FacilityLeak(l) => Some(l.leak),
            _ => None,
        })
    };
    assert_eq!(leak(&out.events), Some(false));

    // The supply creeps up and the detector goes Critical.
    serve_cdu(&s, 48.0, "Critical");
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert_eq!(leak(&out.events), Some(true));

    // A detector that answers invalid JSON is a problem naming its path;
    // the unit's reading is kept.
    s.set(
        "/redfish/v1/ThermalEquipment/CDUs/1/LeakDetection/LeakDetectors/Moisture",
        200,
        "{\"Id\": ",
    );
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let p = out
        .problems
        .iter()
        .find(|p| p.reason == "invalid_json")
        .expect("invalid json named");
    assert!(p.oid.ends_with("/LeakDetectors/Moisture"), "{p:?}");
    assert!(out
        .events
        .iter()
        .any(|e| matches!(&e.data, EventData::FacilityCooling(c) if c.supply_c == Some(48.0))));

    // The service root itself broken: the device is down, its error names the path.
    s.set("/redfish/v1/ThermalEquipment", 200, "not json");
    let out = poller.poll(&mut st, Timestamp::now()).await;
    let e = out.error.unwrap().to_string();
    assert!(
        e.contains("cdu-r3")
            && e.contains("/redfish/v1/ThermalEquipment")
            && e.contains("invalid JSON"),
        "{e}"
    );
    // A slow service: a timeout, not a hang.
    serve_cdu(&s, 42.0, "OK");
    s.set_delay(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let out = poller.poll(&mut st, Timestamp::now()).await;
    assert!(out.error.unwrap().to_string().contains("timeout"));
    assert!(started.elapsed() < Duration::from_millis(1900));
}
