//! The envelope's serde: `Event` is written with `kind` before `data` and
//! read back without buffering when `kind` comes first (the decode hot path).

use super::*;

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 10)?;
        st.serialize_field("v", &V1)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("node", &self.node)?;
        st.serialize_field("time", &self.time)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("kind", &self.kind())?;
        if let Some(gpu) = &self.gpu {
            st.serialize_field("gpu", gpu)?;
        }
        if self.count != 1 {
            st.serialize_field("count", &self.count)?;
        }
        if !self.labels.is_empty() {
            st.serialize_field("labels", &self.labels)?;
        }
        self.data.serialize_as_field(&mut st)?;
        st.end()
    }
}

enum Field {
    V,
    Id,
    Node,
    Time,
    Source,
    Kind,
    Gpu,
    Count,
    Labels,
    Data,
    Unknown,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "v" => Field::V,
                    "id" => Field::Id,
                    "node" => Field::Node,
                    "time" => Field::Time,
                    "source" => Field::Source,
                    "kind" => Field::Kind,
                    "gpu" => Field::Gpu,
                    "count" => Field::Count,
                    "labels" => Field::Labels,
                    "data" => Field::Data,
                    _ => Field::Unknown,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Bounds on free-form envelope fields, so one message cannot carry
/// unbounded state into the rule engine.
pub const MAX_NODE_LEN: usize = 253;
pub const MAX_ID_LEN: usize = 256;
pub const MAX_LABELS: usize = 32;

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut version = None;
        let mut id: Option<String> = None;
        let mut node: Option<String> = None;
        let mut time = None;
        let mut source = None;
        let mut kind: Option<EventKind> = None;
        let mut gpu: Option<GpuRef> = None;
        let mut count = None;
        let mut labels: Option<BTreeMap<String, String>> = None;
        let mut data: Option<EventData> = None;
        // `data` before `kind`: keep the raw text until the kind is known.
        let mut raw_data: Option<Box<serde_json::value::RawValue>> = None;

        macro_rules! once {
            ($slot:ident, $name:literal, $value:expr) => {{
                if $slot.is_some() {
                    return Err(de::Error::duplicate_field($name));
                }
                $slot = Some($value);
            }};
        }

        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::V => once!(version, "v", map.next_value::<V1>()?),
                Field::Id => once!(id, "id", map.next_value()?),
                Field::Node => once!(node, "node", map.next_value()?),
                Field::Time => once!(time, "time", map.next_value::<Timestamp>()?),
                Field::Source => once!(source, "source", map.next_value::<Source>()?),
                Field::Kind => once!(kind, "kind", map.next_value::<EventKind>()?),
                Field::Gpu => once!(gpu, "gpu", map.next_value()?),
                Field::Count => once!(count, "count", map.next_value::<u32>()?),
                Field::Labels => once!(labels, "labels", map.next_value()?),
                Field::Data => {
                    if data.is_some() || raw_data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    match kind {
                        Some(k) => data = Some(map.next_value_seed(DataSeed(k))?),
                        None => raw_data = Some(map.next_value()?),
                    }
                }
                Field::Unknown => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }

        version.ok_or_else(|| de::Error::missing_field("v"))?;
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let node = node.ok_or_else(|| de::Error::missing_field("node"))?;
        let time = time.ok_or_else(|| de::Error::missing_field("time"))?;
        let source = source.ok_or_else(|| de::Error::missing_field("source"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        let data = match (data, raw_data) {
            (Some(d), _) => d,
            (None, Some(raw)) => {
                let mut track = serde_path_to_error::Track::new();
                let mut inner = serde_json::Deserializer::from_str(raw.get());
                DataSeed(kind)
                    .deserialize(serde_path_to_error::Deserializer::new(
                        &mut inner, &mut track,
                    ))
                    .map_err(|e| {
                        de::Error::custom(format_args!(
                            "{DATA_PREFIX}{}{DATA_SEPARATOR}{e}",
                            track.path()
                        ))
                    })?
            }
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}id: must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
        if node.is_empty() || node.len() > MAX_NODE_LEN {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}node: must be 1 to {MAX_NODE_LEN} bytes"
            )));
        }
        let labels = labels.unwrap_or_default();
        if labels.len() > MAX_LABELS {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}labels: at most {MAX_LABELS} labels"
            )));
        }
        if kind.requires_gpu() && gpu.as_ref().is_none_or(GpuRef::is_empty) {
            return Err(de::Error::custom(format_args!(
                "{FIELD_PREFIX}gpu: required for kind {kind} (index, uuid or pci)"
            )));
        }
        Ok(Event {
            id,
            node,
            time,
            source,
            gpu,
            count: count.unwrap_or(1),
            labels,
            data,
        })
    }
}

/// A validation error that names its own field: `field-error:NAME: msg`.
pub(crate) const FIELD_PREFIX: &str = "field-error:";
/// An error inside a `data` that arrived before `kind`.
pub(crate) const DATA_PREFIX: &str = "data-error:";
pub(crate) const DATA_SEPARATOR: char = '\u{1f}';

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}
