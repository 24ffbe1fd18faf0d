//! What a rule can read from an event: envelope fields (`node`, `source`,
//! `gpu.index`, `labels.X`...) and each kind's `data.*` fields. The table
//! here is the schema the compiler checks field names against, and the
//! accessors the evaluator reads through without converting events to JSON.

use pitcrew_contract::{Event, EventData, EventKind, ThrottleReason};
use serde::Serialize;

/// A field's value in one event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Missing,
    Num(f64),
    Str(&'a str),
    Bool(bool),
    Strings(&'a [String]),
    Throttle(&'a [ThrottleReason]),
}

impl Val<'_> {
    pub(crate) fn as_num(&self) -> Option<f64> {
        match *self {
            Val::Num(n) => Some(n),
            Val::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        match *self {
            Val::Strings(l) => l.iter().any(|x| x == s),
            Val::Throttle(l) => l.iter().any(|r| variant_name(r) == s),
            Val::Str(x) => x.contains(s),
            _ => false,
        }
    }

    /// For templates.
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write;
        match *self {
            Val::Missing => out.push('?'),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                let _ = write!(out, "{}", n as i64);
            }
            Val::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Str(s) => out.push_str(s),
            Val::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Val::Strings(l) => out.push_str(&l.join(",")),
            Val::Throttle(l) => {
                let names: Vec<&str> = l.iter().map(variant_name).collect();
                out.push_str(&names.join(","));
            }
        }
    }
}

/// The type of a field, for the compiler's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Num,
    Str,
    Bool,
    List,
}

impl Ty {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Num => "number",
            Ty::Str => "string",
            Ty::Bool => "boolean",
            Ty::List => "list",
        }
    }
}

type Getter = for<'a> fn(&'a EventData) -> Val<'a>;

/// One `data.*` field of one kind.
pub(crate) struct DataField {
    pub(crate) kind: EventKind,
    pub(crate) path: &'static str,
    pub(crate) ty: Ty,
    pub(crate) get: Getter,
}

impl std::fmt::Debug for DataField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.path)
    }
}

/// A resolved field reference.
#[derive(Clone, Debug)]
pub(crate) enum FieldRef {
    Node,
    Source,
    Id,
    Count,
    GpuIndex,
    GpuUuid,
    Label(u16),
    /// A `data.*` field of one kind.
    Data(&'static DataField),
    /// A `data.*` field the rule reads from several kinds (`data.delta`
    /// exists in several): one accessor per kind.
    DataAny(std::sync::Arc<[&'static DataField]>),
}

fn num<T: Into<f64>>(v: T) -> Val<'static> {
    Val::Num(v.into())
}

fn unum(v: u64) -> Val<'static> {
    Val::Num(v as f64)
}

fn opt_num<T: Into<f64> + Copy>(v: Option<T>) -> Val<'static> {
    v.map_or(Val::Missing, |x| Val::Num(x.into()))
}

fn opt_str(v: &Option<String>) -> Val<'_> {
    v.as_deref().map_or(Val::Missing, Val::Str)
}

macro_rules! fields {
    ($( $variant:ident { $( $path:literal : $ty:ident => |$x:ident| $get:expr ),* $(,)? } )*) => {
        /// Every `data.*` field of every kind.
        pub(crate) static DATA_FIELDS: &[DataField] = &[
            $( $( DataField {
                kind: EventKind::$variant,
                path: $path,
                ty: Ty::$ty,
                get: |d| match d { EventData::$variant($x) => $get, _ => Val::Missing },
            }, )* )*
        ];
    };
}

fields! {
    GpuXid {
        "data.code": Num => |x| num(x.code),
        "data.pid": Num => |x| opt_num(x.pid),
        "data.process": Str => |x| opt_str(&x.process),
        "data.message": Str => |x| opt_str(&x.message),
        "data.recovery_action.action": Num => |x| opt_num(x.recovery_action.as_ref().map(|r| r.action)),
        "data.recovery_action.previous": Num => |x| opt_num(x.recovery_action.as_ref().and_then(|r| r.previous)),
        "data.gpu_instance": Num => |x| opt_num(x.gpu_instance),
        "data.compute_instance": Num => |x| opt_num(x.compute_instance),
    }
    GpuEcc {
        "data.counter": Str => |x| Val::Str(variant_name(&x.counter)),
        "data.corrected_delta": Num => |x| unum(x.corrected_delta),
        "data.uncorrected_delta": Num => |x| unum(x.uncorrected_delta),
        "data.corrected_total": Num => |x| unum(x.corrected_total),
        "data.uncorrected_total": Num => |x| unum(x.uncorrected_total),
    }
    GpuRowRemap {
        "data.correctable_total": Num => |x| num(x.correctable_total),
        "data.uncorrectable_total": Num => |x| num(x.uncorrectable_total),
        "data.correctable_delta": Num => |x| num(x.correctable_delta),
        "data.uncorrectable_delta": Num => |x| num(x.uncorrectable_delta),
        "data.pending": Bool => |x| Val::Bool(x.pending),
        "data.failure": Bool => |x| Val::Bool(x.failure),
    }
    GpuRetiredPages {
        "data.single_bit_total": Num => |x| num(x.single_bit_total),
        "data.double_bit_total": Num => |x| num(x.double_bit_total),
        "data.delta": Num => |x| num(x.delta),
        "data.pending": Bool => |x| Val::Bool(x.pending),
    }
    GpuPcieReplay {
        "data.delta": Num => |x| unum(x.delta),
        "data.total": Num => |x| unum(x.total),
        "data.reset": Bool => |x| Val::Bool(x.reset),
    }
    GpuThermal {
        "data.gpu_temp_c": Num => |x| opt_num(x.gpu_temp_c),
        "data.memory_temp_c": Num => |x| opt_num(x.memory_temp_c),
        "data.power_w": Num => |x| opt_num(x.power_w),
        "data.clock_event_reasons": Num => |x| unum(x.clock_event_reasons),
        "data.throttle": List => |x| Val::Throttle(&x.throttle),
    }
    GpuNvlink {
        "data.link": Num => |x| num(x.link),
        "data.counter": Str => |x| Val::Str(variant_name(&x.counter)),
        "data.delta": Num => |x| unum(x.delta),
        "data.total": Num => |x| unum(x.total),
        "data.reset": Bool => |x| Val::Bool(x.reset),
    }
    GpuLost {
        "data.reason": Str => |x| Val::Str(&x.reason),
    }
    GpuRecoveryAction {
        "data.action": Num => |x| num(x.action),
        "data.previous": Num => |x| opt_num(x.previous),
    }
    NvswitchSxid {
        "data.switch": Str => |x| Val::Str(&x.switch),
        "data.code": Num => |x| num(x.code),
        "data.fatal": Bool => |x| Val::Bool(x.fatal),
        "data.link": Num => |x| opt_num(x.link),
        "data.message": Str => |x| opt_str(&x.message),
    }
    PcieAer {
        "data.severity": Str => |x| Val::Str(variant_name(&x.severity)),
        "data.layer": Str => |x| x.layer.as_ref().map_or(Val::Missing, |l| Val::Str(variant_name(l))),
        "data.agent": Str => |x| opt_str(&x.agent),
        "data.vendor_device": Str => |x| opt_str(&x.vendor_device),
        "data.errors": List => |x| Val::Strings(&x.errors),
        "data.first": Str => |x| opt_str(&x.first),
    }
    PcieDpc {
        "data.reason": Str => |x| opt_str(&x.reason),
    }
    PcieLinkDown {
        "data.slot": Str => |x| opt_str(&x.slot),
    }
    HostEdac {
        "data.controller": Num => |x| num(x.controller),
        "data.severity": Str => |x| Val::Str(variant_name(&x.severity)),
        "data.count": Num => |x| unum(x.count),
        "data.location": Str => |x| opt_str(&x.location),
        "data.message": Str => |x| opt_str(&x.message),
    }
    HostMce {
        "data.cpu": Num => |x| opt_num(x.cpu),
        "data.bank": Num => |x| opt_num(x.bank),
        "data.message": Str => |x| Val::Str(&x.message),
    }
    HostThermal {
        "data.cpu": Num => |x| num(x.cpu),
        "data.scope": Str => |x| Val::Str(variant_name(&x.scope)),
        "data.state": Str => |x| Val::Str(variant_name(&x.state)),
        "data.total_events": Num => |x| x.total_events.map_or(Val::Missing, unum),
    }
    HostSensor {
        "data.sensor": Str => |x| Val::Str(&x.sensor),
        "data.value": Num => |x| opt_num(x.value),
        "data.unit": Str => |x| opt_str(&x.unit),
        "data.state": Str => |x| Val::Str(variant_name(&x.state)),
    }
    NetIbCounter {
        "data.device": Str => |x| Val::Str(&x.device),
        "data.port": Num => |x| num(x.port),
        "data.counter": Str => |x| Val::Str(variant_name(&x.counter)),
        "data.delta": Num => |x| unum(x.delta),
        "data.total": Num => |x| unum(x.total),
        "data.reset": Bool => |x| Val::Bool(x.reset),
    }
    NetLink {
        "data.interface": Str => |x| Val::Str(&x.interface),
        "data.up": Bool => |x| Val::Bool(x.up),
        "data.speed_mbps": Num => |x| opt_num(x.speed_mbps),
    }
    BmcSel {
        "data.record_id": Num => |x| num(x.record_id),
        "data.sensor_type": Str => |x| Val::Str(&x.sensor_type),
        "data.sensor": Str => |x| Val::Str(&x.sensor),
        "data.description": Str => |x| Val::Str(&x.description),
        "data.asserted": Bool => |x| Val::Bool(x.asserted),
    }
    BmcSensor {
        "data.sensor": Str => |x| Val::Str(&x.sensor),
        "data.value": Num => |x| opt_num(x.value),
        "data.unit": Str => |x| opt_str(&x.unit),
        "data.state": Str => |x| Val::Str(variant_name(&x.state)),
    }
    NodeHeartbeat {
        "data.agent_version": Str => |x| Val::Str(&x.agent_version),
        "data.driver_version": Str => |x| opt_str(&x.driver_version),
        "data.boot_id": Str => |x| Val::Str(&x.boot_id),
        "data.uptime_s": Num => |x| unum(x.uptime_s),
        "data.gpu_count": Num => |x| opt_num(x.gpu_count),
    }
    NodeCondition {
        "data.condition": Str => |x| Val::Str(&x.condition),
        "data.status": Str => |x| Val::Str(variant_name(&x.status)),
        "data.reason": Str => |x| opt_str(&x.reason),
        "data.message": Str => |x| opt_str(&x.message),
    }
    NodeMaintenance {
        "data.state": Str => |x| Val::Str(variant_name(&x.state)),
        "data.reason": Str => |x| opt_str(&x.reason),
    }
    JobStarted {
        "data.job": Str => |x| Val::Str(&x.job),
        "data.rank": Num => |x| opt_num(x.rank),
        "data.ranks": Num => |x| opt_num(x.ranks),
        "data.owner": Str => |x| opt_str(&x.owner),
    }
    JobFinished {
        "data.job": Str => |x| Val::Str(&x.job),
        "data.outcome": Str => |x| Val::Str(variant_name(&x.outcome)),
        "data.exit_code": Num => |x| opt_num(x.exit_code),
        "data.rank": Num => |x| opt_num(x.rank),
    }
    JobNcclTimeout {
        "data.job": Str => |x| Val::Str(&x.job),
        "data.rank": Num => |x| num(x.rank),
        "data.collective": Str => |x| opt_str(&x.collective),
        "data.timeout_s": Num => |x| opt_num(x.timeout_s),
    }
    JobStep {
        "data.job": Str => |x| Val::Str(&x.job),
        "data.rank": Num => |x| num(x.rank),
        "data.step": Num => |x| unum(x.step),
        "data.step_time_s": Num => |x| num(x.step_time_s),
        "data.traffic_bytes": Num => |x| x.traffic_bytes.map_or(Val::Missing, unum),
    }
    FacilityPdu {
        "data.racks": List => |x| Val::Strings(&x.racks),
        "data.scope": Str => |x| Val::Str(variant_name(&x.scope)),
        "data.index": Num => |x| opt_num(x.index),
        "data.name": Str => |x| opt_str(&x.name),
        "data.current_a": Num => |x| opt_num(x.current_a),
        "data.voltage_v": Num => |x| opt_num(x.voltage_v),
        "data.power_w": Num => |x| opt_num(x.power_w),
        "data.energy_kwh": Num => |x| opt_num(x.energy_kwh),
        "data.energy_delta_kwh": Num => |x| opt_num(x.energy_delta_kwh),
        "data.rating_a": Num => |x| opt_num(x.rating_a),
        "data.load": Str => |x| x.load.as_ref().map_or(Val::Missing, |l| Val::Str(variant_name(l))),
        "data.state": Str => |x| x.state.as_ref().map_or(Val::Missing, |l| Val::Str(variant_name(l))),
        "data.temperature_c": Num => |x| opt_num(x.temperature_c),
        "data.humidity_pct": Num => |x| opt_num(x.humidity_pct),
    }
    FacilityUps {
        "data.racks": List => |x| Val::Strings(&x.racks),
        "data.source": Str => |x| Val::Str(variant_name(&x.source)),
        "data.battery": Str => |x| x.battery.as_ref().map_or(Val::Missing, |l| Val::Str(variant_name(l))),
        "data.charge_pct": Num => |x| opt_num(x.charge_pct),
        "data.runtime_s": Num => |x| opt_num(x.runtime_s),
        "data.on_battery_s": Num => |x| opt_num(x.on_battery_s),
        "data.load_pct": Num => |x| opt_num(x.load_pct),
        "data.input_voltage_v": Num => |x| opt_num(x.input_voltage_v),
        "data.output_voltage_v": Num => |x| opt_num(x.output_voltage_v),
        "data.output_power_w": Num => |x| opt_num(x.output_power_w),
        "data.temperature_c": Num => |x| opt_num(x.temperature_c),
        "data.alarms": List => |x| Val::Strings(&x.alarms),
    }
    FacilityCooling {
        "data.racks": List => |x| Val::Strings(&x.racks),
        "data.unit": Str => |x| Val::Str(variant_name(&x.unit)),
        "data.loop": Str => |x| opt_str(&x.loop_name),
        "data.supply_c": Num => |x| opt_num(x.supply_c),
        "data.return_c": Num => |x| opt_num(x.return_c),
        "data.delta_t_c": Num => |x| opt_num(x.delta_t_c),
        "data.flow_lpm": Num => |x| opt_num(x.flow_lpm),
        "data.pressure_kpa": Num => |x| opt_num(x.pressure_kpa),
        "data.setpoint_c": Num => |x| opt_num(x.setpoint_c),
        "data.pump_on": Bool => |x| x.pump_on.map_or(Val::Missing, Val::Bool),
        "data.fan_on": Bool => |x| x.fan_on.map_or(Val::Missing, Val::Bool),
        "data.alarms": List => |x| Val::Strings(&x.alarms),
    }
    FacilityLeak {
        "data.racks": List => |x| Val::Strings(&x.racks),
        "data.detector": Str => |x| Val::Str(&x.detector),
        "data.leak": Bool => |x| Val::Bool(x.leak),
        "data.zone": Str => |x| opt_str(&x.zone),
    }
    FacilityDevice {
        "data.racks": List => |x| Val::Strings(&x.racks),
        "data.up": Bool => |x| Val::Bool(x.up),
        "data.protocol": Str => |x| Val::Str(variant_name(&x.protocol)),
        "data.profile": Str => |x| opt_str(&x.profile),
        "data.failures": Num => |x| num(x.failures),
        "data.error": Str => |x| opt_str(&x.error),
    }
}

/// Envelope fields every kind has.
pub(crate) const ENVELOPE_FIELDS: &[(&str, Ty)] = &[
    ("node", Ty::Str),
    ("source", Ty::Str),
    ("id", Ty::Str),
    ("count", Ty::Num),
    ("gpu.index", Ty::Num),
    ("gpu.uuid", Ty::Str),
];

/// The `data.*` fields of a kind.
pub(crate) fn data_fields(kind: EventKind) -> impl Iterator<Item = &'static DataField> {
    DATA_FIELDS.iter().filter(move |f| f.kind == kind)
}

/// Reads `field` from `event`. `Data` fields hold one accessor per kind
/// the rule matches; an event of another kind reads `Missing`.
pub(crate) fn read<'a>(field: &FieldRef, event: &'a Event, labels: &[String]) -> Val<'a> {
    match *field {
        FieldRef::Node => Val::Str(&event.node),
        FieldRef::Source => Val::Str(event.source.as_str()),
        FieldRef::Id => Val::Str(&event.id),
        FieldRef::Count => num(event.count),
        FieldRef::GpuIndex => opt_num(event.gpu.as_ref().and_then(|g| g.index)),
        FieldRef::GpuUuid => event
            .gpu
            .as_ref()
            .and_then(|g| g.uuid.as_deref())
            .map_or(Val::Missing, Val::Str),
        FieldRef::Label(i) => labels
            .get(usize::from(i))
            .and_then(|name| event.labels.get(name))
            .map_or(Val::Missing, |v| Val::Str(v)),
        FieldRef::Data(f) => (f.get)(&event.data),
        FieldRef::DataAny(ref table) => {
            let kind = event.kind();
            match table.iter().find(|f| f.kind == kind) {
                Some(f) => (f.get)(&event.data),
                None => Val::Missing,
            }
        }
    }
}

/// The snake_case name serde writes for a unit enum variant, without
/// going through JSON: a serializer that only understands unit variants.
pub(crate) fn variant_name<T: Serialize>(v: &T) -> &'static str {
    v.serialize(VariantName).unwrap_or("?")
}

struct VariantName;

#[derive(Debug)]
struct NotAVariant;

impl std::fmt::Display for NotAVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a unit variant")
    }
}
impl std::error::Error for NotAVariant {}
impl serde::ser::Error for NotAVariant {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAVariant
    }
}

macro_rules! refuse {
    ($($name:ident($($t:ty),*);)*) => {
        $(fn $name(self, $(_: $t),*) -> Result<Self::Ok, NotAVariant> { Err(NotAVariant) })*
    };
}

impl serde::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotAVariant;
    type SerializeSeq = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTuple = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTupleStruct = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTupleVariant = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeMap = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeStruct = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeStructVariant = serde::ser::Impossible<&'static str, NotAVariant>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAVariant> {
        Err(NotAVariant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitcrew_contract::examples;

    #[test]
    fn variant_names_match_the_wire() {
        assert_eq!(variant_name(&ThrottleReason::HwThermal), "hw_thermal");
        assert_eq!(
            variant_name(&pitcrew_contract::IbCounterName::LinkDowned),
            "link_downed"
        );
        assert_eq!(
            variant_name(&pitcrew_contract::ConditionStatus::True),
            "True"
        );
    }

    #[test]
    fn every_kind_has_fields_and_each_reads_its_example() {
        for &kind in EventKind::ALL {
            let ev = examples::event(kind);
            let json = serde_json::to_value(&ev).unwrap_or_default();
            for f in data_fields(kind) {
                let v = (f.get)(&ev.data);
                // Where the example's JSON has the field, the accessor reads it.
                let mut cur = &json;
                for part in f.path.split('.') {
                    cur = cur.get(part).unwrap_or(&serde_json::Value::Null);
                }
                match (cur, v) {
                    (serde_json::Value::Null, _) => {}
                    (serde_json::Value::Number(n), Val::Num(x)) => {
                        assert_eq!(n.as_f64(), Some(x), "{kind} {}", f.path)
                    }
                    (serde_json::Value::String(s), Val::Str(x)) => {
                        assert_eq!(s, x, "{kind} {}", f.path)
                    }
                    (serde_json::Value::Bool(b), Val::Bool(x)) => {
                        assert_eq!(*b, x, "{kind} {}", f.path)
                    }
                    (serde_json::Value::Array(_), Val::Strings(_) | Val::Throttle(_)) => {}
                    (j, v) => panic!("{kind} {}: json {j} vs {v:?}", f.path),
                }
            }
        }
        let with_fields = EventKind::ALL
            .iter()
            .filter(|k| data_fields(**k).next().is_some())
            .count();
        assert_eq!(with_fields, EventKind::ALL.len());
    }
}
