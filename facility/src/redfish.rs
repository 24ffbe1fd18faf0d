//! Redfish for liquid-cooling units and leak detectors that speak it: the
//! DMTF ThermalEquipment model (DSP0268 2022.2+): `CoolingUnit` (CDUs),
//! its `PrimaryCoolantConnectors` (supply/return temperature, ΔT, flow,
//! pressure), `Pumps`, and `LeakDetection/LeakDetectors` (DetectorState
//! OK, Warning or Critical).
//!
//! [`decode_unit`] and [`decode_detector`] are pure: documents in,
//! readings out.

use std::time::Duration;

use serde_json::Value as Json;

use crate::config::Credentials;
use crate::error::FacilityError;
use crate::profile::{DeviceKind, Problem, Reading, Value};

/// A Redfish session: one HTTP client with the device's credentials.
#[derive(Clone, Debug)]
pub struct Session {
    client: reqwest::Client,
    base: String,
    device: String,
    timeout: Duration,
    username: Option<String>,
    password: Option<pitcrew_config::Secret>,
}

fn reading_of(doc: &Json, key: &str) -> Option<f64> {
    // Excerpts are `{"Reading": 42.5}`; some services give the number itself.
    match doc.get(key)? {
        Json::Object(o) => o.get("Reading").and_then(Json::as_f64),
        other => other.as_f64(),
    }
}

fn link<'a>(doc: &'a Json, key: &str) -> Option<&'a str> {
    doc.get(key)?.get("@odata.id")?.as_str()
}

/// A CDU and its first primary coolant connector (and pumps) into a
/// cooling reading.
pub fn decode_unit(unit: &Json, connector: Option<&Json>, pumps: &[Json]) -> Reading {
    let mut r = Reading::default();
    let kind = match unit.get("EquipmentType").and_then(Json::as_str) {
        Some("CDU") => "cdu",
        Some("CRAC") => "crac",
        Some("CRAH") => "crah",
        Some("Chiller") => "chiller",
        _ => "other",
    };
    r.fields.insert("unit".into(), Value::Text(kind.into()));
    if let Some(c) = connector {
        for (field, key) in [
            ("supply_c", "SupplyTemperatureCelsius"),
            ("return_c", "ReturnTemperatureCelsius"),
            ("delta_t_c", "DeltaTemperatureCelsius"),
            ("flow_lpm", "FlowLitersPerMinute"),
            ("pressure_kpa", "DeltaPressurekPa"),
        ] {
            if let Some(v) = reading_of(c, key) {
                r.fields.insert(field.into(), Value::Num(v));
            }
        }
        if !r.fields.contains_key("pressure_kpa") {
            if let Some(v) = reading_of(c, "SupplyPressurekPa") {
                r.fields.insert("pressure_kpa".into(), Value::Num(v));
            }
        }
    }
    if !pumps.is_empty() {
        let running = pumps.iter().any(|p| {
            p.pointer("/Status/State").and_then(Json::as_str) == Some("Enabled")
                && p.pointer("/Status/Health").and_then(Json::as_str) != Some("Critical")
        });
        r.fields.insert("pump_on".into(), Value::Bool(running));
    }
    let mut alarms = Vec::new();
    match unit.pointer("/Status/Health").and_then(Json::as_str) {
        Some("Warning") => alarms.push("health_warning".to_owned()),
        Some("Critical") => alarms.push("health_critical".to_owned()),
        _ => {}
    }
    for p in pumps {
        if p.pointer("/Status/Health").and_then(Json::as_str) == Some("Critical") {
            let id = p.get("Id").and_then(Json::as_str).unwrap_or("?");
            alarms.push(format!("pump_{id}_critical"));
        }
    }
    r.fields.insert("alarms".into(), Value::List(alarms));
    r
}

/// A LeakDetector into a leak reading: anything but `OK` is a leak (the
/// schema's Warning is "moisture detected", Critical "leak detected").
pub fn decode_detector(doc: &Json, index: u32) -> Reading {
    let mut r = Reading {
        kind: Some(DeviceKind::Leak),
        scope: Some("leak".into()),
        index: Some(index),
        ..Reading::default()
    };
    let name = doc
        .get("Id")
        .and_then(Json::as_str)
        .or_else(|| doc.get("Name").and_then(Json::as_str))
        .unwrap_or("detector");
    r.fields
        .insert("detector".into(), Value::Text(name.to_owned()));
    let state = doc
        .get("DetectorState")
        .and_then(Json::as_str)
        .unwrap_or("OK");
    r.fields.insert("leak".into(), Value::Bool(state != "OK"));
    r
}

impl Session {
    pub fn new(
        device: &str,
        base: &str,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Session, FacilityError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| FacilityError::Config {
                message: format!("{device}: http client: {e}"),
            })?;
        Ok(Session {
            client,
            base: base.trim_end_matches('/').to_owned(),
            device: device.to_owned(),
            timeout,
            username: credentials.username.clone(),
            password: credentials.password.clone(),
        })
    }

    /// GETs a path; errors name the device and the path.
    pub async fn get(&self, path: &str) -> Result<Json, FacilityError> {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_ref().map(|p| p.expose().to_owned()));
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                FacilityError::Timeout {
                    device: self.device.clone(),
                    protocol: "redfish",
                    after_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                }
            } else {
                FacilityError::Unreachable {
                    device: self.device.clone(),
                    protocol: "redfish",
                    detail: format!("{path}: {}", e.without_url()),
                }
            }
        })?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(FacilityError::Auth {
                device: self.device.clone(),
                protocol: "redfish",
                detail: format!("{path}: HTTP {status}"),
            });
        }
        let body = resp.bytes().await.map_err(|e| FacilityError::Unreachable {
            device: self.device.clone(),
            protocol: "redfish",
            detail: format!("{path}: {}", e.without_url()),
        })?;
        if !status.is_success() {
            return Err(FacilityError::Protocol {
                device: self.device.clone(),
                protocol: "redfish",
                at: path.to_owned(),
                detail: format!("HTTP {status}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| FacilityError::Protocol {
            device: self.device.clone(),
            protocol: "redfish",
            at: path.to_owned(),
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// A collection's members, each fetched; one that fails is a problem.
    async fn members(
        &self,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<Json>, FacilityError> {
        let col = self.get(path).await?;
        let mut out = Vec::new();
        for m in col
            .get("Members")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let Some(p) = m.get("@odata.id").and_then(Json::as_str) else {
                continue;
            };
            match self.get(p).await {
                Ok(doc) => out.push(doc),
                Err(e) => problems.push(Problem {
                    reason: if e.to_string().contains("invalid JSON") {
                        "invalid_json"
                    } else {
                        "member_failed"
                    },
                    oid: p.to_owned(),
                    detail: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// Every CDU (with its leak detectors) of the service.
    pub async fn poll(&self, problems: &mut Vec<Problem>) -> Result<Vec<Reading>, FacilityError> {
        let te = self.get("/redfish/v1/ThermalEquipment").await?;
        let mut readings = Vec::new();
        let mut detector_no = 0;
        let units_path = link(&te, "CDUs").map(str::to_owned);
        let Some(units_path) = units_path else {
            return Err(FacilityError::Protocol {
                device: self.device.clone(),
                protocol: "redfish",
                at: "/redfish/v1/ThermalEquipment".into(),
                detail: "no CDUs collection".into(),
            });
        };
        for (i, unit) in self
            .members(&units_path, problems)
            .await?
            .into_iter()
            .enumerate()
        {
            let connector = match link(&unit, "PrimaryCoolantConnectors") {
                Some(p) => self.members(p, problems).await?.into_iter().next(),
                None => None,
            };
            let pumps = match link(&unit, "Pumps") {
                Some(p) => self.members(p, problems).await.unwrap_or_default(),
                None => Vec::new(),
            };
            let mut r = decode_unit(&unit, connector.as_ref(), &pumps);
            r.index = u32::try_from(i + 1).ok();
            readings.push(r);
            if let Some(ld) = link(&unit, "LeakDetection") {
                let ld = self.get(ld).await?;
                if let Some(p) = link(&ld, "LeakDetectors") {
                    for d in self.members(p, problems).await? {
                        detector_no += 1;
                        readings.push(decode_detector(&d, detector_no));
                    }
                }
            }
        }
        Ok(readings)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn dmtf_shaped_documents_decode() {
        let unit: Json = serde_json::from_str(
            r#"{"Id":"1","EquipmentType":"CDU","Status":{"State":"Enabled","Health":"Warning"}}"#,
        )
        .unwrap();
        let conn: Json = serde_json::from_str(
            r#"{"SupplyTemperatureCelsius":{"Reading":14.8},"ReturnTemperatureCelsius":{"Reading":38.2},
               "DeltaTemperatureCelsius":{"Reading":23.4},"FlowLitersPerMinute":{"Reading":24.3},
               "DeltaPressurekPa":{"Reading":31.7}}"#,
        )
        .unwrap();
        let pump: Json =
            serde_json::from_str(r#"{"Id":"A","Status":{"State":"Enabled","Health":"OK"}}"#)
                .unwrap();
        let r = decode_unit(&unit, Some(&conn), &[pump]);
        assert_eq!(r.fields.get("supply_c"), Some(&Value::Num(14.8)));
        assert_eq!(r.fields.get("delta_t_c"), Some(&Value::Num(23.4)));
        assert_eq!(r.fields.get("pressure_kpa"), Some(&Value::Num(31.7)));
        assert_eq!(r.fields.get("pump_on"), Some(&Value::Bool(true)));
        assert_eq!(
            r.fields.get("alarms"),
            Some(&Value::List(vec!["health_warning".into()]))
        );
        let d: Json =
            serde_json::from_str(r#"{"Id":"Moisture","DetectorState":"Critical"}"#).unwrap();
        let l = decode_detector(&d, 1);
        assert_eq!(l.fields.get("leak"), Some(&Value::Bool(true)));
        assert_eq!(l.kind, Some(DeviceKind::Leak));
    }
}
