//! What the BMC sources share, whatever the protocol (IPMI in `ipmi`,
//! Redfish in `redfish`): a threshold sensor's reading, and the events of
//! one BMC: stable ids in the source's namespace, and a sensor's event on
//! its first reading and on each change of state.

use std::collections::HashMap;

use pitcrew_contract::{
    deterministic_id, Event, EventData, Sensor, SensorState, Source, Timestamp,
};

/// One threshold sensor's reading.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorRead {
    pub name: String,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub state: SensorState,
}

/// The events of one node's BMC.
#[derive(Debug)]
pub struct BmcEvents {
    node: String,
    boot_id: String,
    /// The id namespace and the events' source: `ipmi` or `redfish`.
    source: Source,
    sensor_state: HashMap<String, SensorState>,
}

impl BmcEvents {
    pub fn new(node: &str, boot_id: &str, source: Source) -> BmcEvents {
        BmcEvents {
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            source,
            sensor_state: HashMap::new(),
        }
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// An event whose id is made of the node, the kind and `id_parts`.
    pub fn event(&self, now: Timestamp, id_parts: &[&str], data: EventData) -> Event {
        let mut parts: Vec<&str> = vec![&self.node, data.kind().as_str()];
        parts.extend_from_slice(id_parts);
        Event {
            id: deterministic_id(self.source.as_str(), &parts),
            node: self.node.clone(),
            time: now,
            source: self.source.clone(),
            gpu: None,
            count: 1,
            labels: Default::default(),
            data,
        }
    }

    /// Events for one read of the sensors: first readings and changes.
    pub fn sensor_events(&mut self, sensors: &[SensorRead], now: Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        for s in sensors {
            if self.sensor_state.insert(s.name.clone(), s.state) == Some(s.state) {
                continue;
            }
            out.push(self.event(
                now,
                &[
                    &s.name,
                    &format!("{:?}", s.state),
                    &now.unix_nanos().to_string(),
                ],
                EventData::BmcSensor(Sensor {
                    sensor: s.name.clone(),
                    value: s.value,
                    unit: s.unit.clone(),
                    state: s.state,
                }),
            ));
        }
        out
    }
}
