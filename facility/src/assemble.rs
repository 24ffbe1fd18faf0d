//! Readings into `facility.*` events: the contract's shapes, the device's
//! racks, counter deltas. Pure but for the meter memory it is handed.

use std::collections::{BTreeMap, HashMap};

use pitcrew_contract::{Event, EventData, Source, Timestamp};
use serde_json::{Map, Value as Json};

use crate::profile::{DeviceKind, Problem, Reading, Value};

/// What an event needs to know about its device.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub name: String,
    pub kind: Option<DeviceKind>,
    pub racks: Vec<String>,
    pub cooling_loop: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Subject {
    /// An event about this device: its name as the node, its labels.
    fn event(&self, id: String, time: Timestamp, data: EventData) -> Event {
        Event {
            id,
            node: self.name.clone(),
            time,
            source: Source::Facility,
            gpu: None,
            count: 1,
            labels: self.labels.clone(),
            data,
        }
    }
}

/// The previous value of every meter, to turn meters into deltas.
#[derive(Clone, Debug, Default)]
pub struct Meters {
    last: HashMap<(String, Option<String>, Option<u32>, String), f64>,
}

impl Meters {
    /// The difference since the last call for this meter; `None` on the
    /// first reading and after a reset (the meter went back without
    /// wrapping), which is listed as a problem.
    fn delta(
        &mut self,
        key: (String, Option<String>, Option<u32>, String),
        value: f64,
        wrap: Option<f64>,
        problems: &mut Vec<Problem>,
    ) -> Option<f64> {
        let prev = self.last.insert(key.clone(), value)?;
        if value >= prev {
            return Some(value - prev);
        }
        match wrap {
            // A 32-bit counter that was in its top half went round.
            Some(span) if prev > span / 2.0 => Some(value + span - prev),
            _ => {
                problems.push(Problem {
                    reason: "counter_reset",
                    oid: key.3.clone(),
                    detail: format!(
                        "{} {}{}: meter went from {prev} to {value}; no delta this poll",
                        key.0,
                        key.1.as_deref().unwrap_or(""),
                        key.2.map(|i| format!(" {i}")).unwrap_or_default()
                    ),
                });
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Num(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Bool(b) => Json::Bool(*b),
        Value::Text(t) => Json::String(t.clone()),
        Value::List(l) => Json::Array(l.iter().cloned().map(Json::String).collect()),
    }
}

/// The event id: device, part and poll time, so a redelivery or a replay
/// deduplicates and two parts never collide.
fn event_id(device: &str, kind: &str, r: &Reading, time: Timestamp) -> String {
    let part = match (&r.scope, r.index) {
        (Some(s), Some(i)) => format!("{s}{i}"),
        (Some(s), None) => s.clone(),
        (None, Some(i)) => i.to_string(),
        (None, None) => kind.to_owned(),
    };
    let mut id = format!("fac-{device}-{part}-{}", time.unix_millis());
    id.truncate(pitcrew_contract::MAX_ID_LEN);
    id
}

/// Builds the events of one poll. A reading that cannot make a valid event
/// (a UPS without its output source) is a problem, not an event.
pub fn events(
    subject: &Subject,
    kind: DeviceKind,
    readings: Vec<Reading>,
    time: Timestamp,
    meters: &mut Meters,
    problems: &mut Vec<Problem>,
) -> Vec<Event> {
    let mut out = Vec::with_capacity(readings.len());
    for r in readings {
        let mut obj = Map::new();
        obj.insert(
            "racks".into(),
            Json::Array(subject.racks.iter().cloned().map(Json::String).collect()),
        );
        for (k, v) in &r.fields {
            obj.insert(k.clone(), to_json(v));
        }
        for (target, value, wrap) in &r.meters {
            let key = (
                subject.name.clone(),
                r.scope.clone(),
                r.index,
                target.clone(),
            );
            if let Some(d) = meters.delta(key, *value, *wrap, problems) {
                obj.insert(target.clone(), to_json(&Value::Num(d)));
            }
        }
        let kind = r.kind.unwrap_or(kind);
        let data = match kind {
            DeviceKind::Pdu => {
                obj.insert(
                    "scope".into(),
                    Json::String(r.scope.clone().unwrap_or_else(|| "pdu".into())),
                );
                if let Some(i) = r.index {
                    obj.insert("index".into(), Json::from(i));
                }
                serde_json::from_value(Json::Object(obj)).map(EventData::FacilityPdu)
            }
            DeviceKind::Ups => {
                serde_json::from_value(Json::Object(obj)).map(EventData::FacilityUps)
            }
            DeviceKind::Cooling => {
                if let Some(l) = &subject.cooling_loop {
                    obj.entry("loop").or_insert_with(|| Json::String(l.clone()));
                }
                let num = |o: &Map<String, Json>, k: &str| o.get(k).and_then(Json::as_f64);
                if let (Some(s), Some(rt), None) = (
                    num(&obj, "supply_c"),
                    num(&obj, "return_c"),
                    num(&obj, "delta_t_c"),
                ) {
                    obj.insert(
                        "delta_t_c".into(),
                        to_json(&Value::Num(((rt - s) * 100.0).round() / 100.0)),
                    );
                }
                obj.entry("unit")
                    .or_insert_with(|| Json::String("other".into()));
                serde_json::from_value(Json::Object(obj)).map(EventData::FacilityCooling)
            }
            DeviceKind::Leak => {
                if let Some(i) = r.index {
                    obj.entry("detector")
                        .or_insert_with(|| Json::String(format!("detector-{i}")));
                }
                serde_json::from_value(Json::Object(obj)).map(EventData::FacilityLeak)
            }
        };
        match data {
            Ok(data) => out.push(subject.event(
                event_id(&subject.name, kind.as_str(), &r, time),
                time,
                data,
            )),
            Err(e) => problems.push(Problem {
                reason: "incomplete_reading",
                oid: r.scope.clone().unwrap_or_else(|| kind.as_str().to_owned()),
                detail: format!("not a valid {} reading: {e}", kind.as_str()),
            }),
        }
    }
    out
}

/// The `facility.device` event of a poll's outcome.
pub fn reachability(
    subject: &Subject,
    protocol: pitcrew_contract::FacilityProtocol,
    profile: Option<&str>,
    failures: u32,
    error: Option<String>,
    time: Timestamp,
) -> Event {
    let up = error.is_none();
    subject.event(
        format!("fac-{}-device-{}", subject.name, time.unix_millis()),
        time,
        EventData::FacilityDevice(pitcrew_contract::DeviceReachability {
            racks: subject.racks.clone(),
            up,
            protocol,
            profile: profile.map(str::to_owned),
            failures,
            error,
        }),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn reading(energy: f64, wrap: Option<f64>) -> Reading {
        let mut r = Reading {
            scope: Some("outlet".into()),
            index: Some(3),
            ..Reading::default()
        };
        r.fields.insert("current_a".into(), Value::Num(1.5));
        r.fields.insert("energy_kwh".into(), Value::Num(energy));
        r.meters.push(("energy_delta_kwh".into(), energy, wrap));
        r
    }

    fn delta(ev: &Event) -> Option<f64> {
        match &ev.data {
            EventData::FacilityPdu(p) => p.energy_delta_kwh,
            _ => None,
        }
    }

    #[test]
    fn meters_give_deltas_across_a_wrap_and_none_after_a_reset() {
        let s = Subject {
            name: "pdu-1".into(),
            racks: vec!["r1".into()],
            ..Subject::default()
        };
        let mut m = Meters::default();
        let mut problems = Vec::new();
        let t = Timestamp::from_unix_millis(1_000);
        let mut one = |e: f64, wrap| {
            events(
                &s,
                DeviceKind::Pdu,
                vec![reading(e, wrap)],
                t,
                &mut m,
                &mut problems,
            )
        };
        assert_eq!(delta(&one(100.0, None)[0]), None);
        assert_eq!(delta(&one(100.5, None)[0]), Some(0.5));
        // A Counter32 (in tenths) near its top wraps to a small value.
        let span = 4_294_967_296.0 * 0.1;
        assert_eq!(
            delta(&one(span - 1.0, Some(span))[0]),
            Some(span - 1.0 - 100.5)
        );
        let after = one(2.0, Some(span));
        assert!((delta(&after[0]).unwrap() - 3.0).abs() < 1e-6);
        // A meter reset (back to 0, no wrap) gives no delta and says so.
        assert_eq!(delta(&one(0.5, None)[0]), None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "counter_reset");
    }

    #[test]
    fn a_ups_without_its_source_is_a_problem_not_an_event() {
        let s = Subject {
            name: "ups-1".into(),
            ..Subject::default()
        };
        let mut r = Reading::default();
        r.fields.insert("charge_pct".into(), Value::Num(50.0));
        let mut problems = Vec::new();
        let evs = events(
            &s,
            DeviceKind::Ups,
            vec![r],
            Timestamp::from_unix_millis(0),
            &mut Meters::default(),
            &mut problems,
        );
        assert!(evs.is_empty());
        assert_eq!(problems[0].reason, "incomplete_reading");
        assert!(problems[0].detail.contains("source"), "{:?}", problems[0]);
    }
}
