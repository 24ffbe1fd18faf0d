//! Modbus TCP for CRAC/CDU units and BMS gateways, on `tokio-modbus`.
//! Register maps are TOML (`facility/maps/`, or an operator's folder):
//! address, table (holding/input), type (u16, i16, u32, i32, f32), word
//! order, scale, the unit it is in (converted into the contract's: °F, K,
//! GPM, m³/h, psi, bar, kW...) or an offset, the contract field it fills,
//! alarm bits, leak bits.
//!
//! [`RegisterMap::decode`] is pure: the registers a poll read into one
//! reading and the leak readings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio_modbus::client::Reader;

use crate::error::FacilityError;
use crate::profile::{DeviceKind, Problem, Reading, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Holding,
    Input,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl RegType {
    fn words(self) -> u16 {
        match self {
            RegType::U16 | RegType::I16 => 1,
            _ => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (most devices).
    #[default]
    Big,
    Little,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub field: String,
    #[serde(default = "holding")]
    pub table: Table,
    pub address: u16,
    #[serde(rename = "type", default = "u16")]
    pub ty: RegType,
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default)]
    pub scale: Option<f64>,
    /// Added after scaling, for a unit `unit` does not know.
    #[serde(default)]
    pub offset: Option<f64>,
    /// The unit the (scaled) register is in, converted into the
    /// contract's: `degC`, `degF`, `K`, `lpm`, `gpm` (US), `m3h`, `kPa`,
    /// `psi`, `bar`, `A`, `V`, `W`, `kW`, `pct`.
    #[serde(default)]
    pub unit: Option<Unit>,
    /// Alarm bits: bit number -> alarm name (the field is a list).
    #[serde(default)]
    pub bits: BTreeMap<u8, String>,
}

/// A source unit and its conversion into the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Unit {
    #[serde(rename = "degC")]
    DegC,
    #[serde(rename = "degF")]
    DegF,
    #[serde(rename = "K")]
    Kelvin,
    #[serde(rename = "lpm")]
    Lpm,
    #[serde(rename = "gpm")]
    Gpm,
    #[serde(rename = "m3h")]
    CubicMetresPerHour,
    #[serde(rename = "kPa")]
    KPa,
    #[serde(rename = "psi")]
    Psi,
    #[serde(rename = "bar")]
    Bar,
    #[serde(rename = "A")]
    Amp,
    #[serde(rename = "V")]
    Volt,
    #[serde(rename = "W")]
    Watt,
    #[serde(rename = "kW")]
    KiloWatt,
    #[serde(rename = "pct")]
    Percent,
}

impl Unit {
    fn to_contract(self, v: f64) -> f64 {
        match self {
            Unit::DegF => (v - 32.0) * 5.0 / 9.0,
            Unit::Kelvin => v - 273.15,
            Unit::Gpm => v * 3.785_411_784,
            Unit::CubicMetresPerHour => v * 1000.0 / 60.0,
            Unit::Psi => v * 6.894_757_293,
            Unit::Bar => v * 100.0,
            Unit::KiloWatt => v * 1000.0,
            _ => v,
        }
    }
}

fn holding() -> Table {
    Table::Holding
}

fn u16() -> RegType {
    RegType::U16
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakBit {
    pub detector: String,
    #[serde(default = "holding")]
    pub table: Table,
    pub address: u16,
    pub bit: u8,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    pub name: String,
    pub kind: DeviceKind,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    #[serde(default)]
    pub register: Vec<Register>,
    #[serde(default)]
    pub leak: Vec<LeakBit>,
}

pub const BUILTIN: &[(&str, &str)] = &[("cdu-generic", include_str!("../maps/cdu-generic.toml"))];

/// Registers read, by table and address.
pub type Registers = BTreeMap<(Table, u16), u16>;

impl RegisterMap {
    pub fn parse(origin: &str, text: &str) -> Result<RegisterMap, FacilityError> {
        let m: RegisterMap = toml::from_str(text).map_err(|e| FacilityError::Config {
            message: pitcrew_config::ConfigError::from_toml(origin, text, &e).to_string(),
        })?;
        if m.register.is_empty() && m.leak.is_empty() {
            return Err(FacilityError::Config {
                message: format!("{origin}: a register map needs [[register]] or [[leak]] entries"),
            });
        }
        Ok(m)
    }

    pub fn builtin(name: &str) -> Option<RegisterMap> {
        let (n, t) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        RegisterMap::parse(n, t).ok()
    }

    /// The spans to read: per table, runs of at most 125 registers.
    pub fn spans(&self) -> Vec<(Table, u16, u16)> {
        let mut wanted: BTreeMap<Table, Vec<(u16, u16)>> = BTreeMap::new();
        for r in &self.register {
            wanted
                .entry(r.table)
                .or_default()
                .push((r.address, r.ty.words()));
        }
        for l in &self.leak {
            wanted.entry(l.table).or_default().push((l.address, 1));
        }
        let mut spans = Vec::new();
        for (table, mut regs) in wanted {
            regs.sort_unstable();
            let mut start: Option<(u16, u16)> = None;
            for (addr, words) in regs {
                let end = addr.saturating_add(words);
                start = match start {
                    Some((s, e)) if end.saturating_sub(s) <= 125 => Some((s, e.max(end))),
                    Some((s, e)) => {
                        spans.push((table, s, e - s));
                        Some((addr, end))
                    }
                    None => Some((addr, end)),
                };
            }
            if let Some((s, e)) = start {
                spans.push((table, s, e - s));
            }
        }
        spans
    }

    /// The registers into readings: the unit's, then one per leak bit.
    pub fn decode(&self, regs: &Registers, problems: &mut Vec<Problem>) -> Vec<Reading> {
        let mut unit = Reading::default();
        for (k, v) in &self.constants {
            unit.fields.insert(k.clone(), Value::Text(v.clone()));
        }
        for r in &self.register {
            let at = |a: u16| regs.get(&(r.table, a)).copied();
            let words: Option<Vec<u16>> = (0..r.ty.words()).map(|i| at(r.address + i)).collect();
            let Some(words) = words else {
                problems.push(Problem {
                    reason: "missing_register",
                    oid: format!("{:?} {}", r.table, r.address).to_lowercase(),
                    detail: format!("`{}` was not read", r.field),
                });
                continue;
            };
            let (hi, lo) = match (r.word_order, words.as_slice()) {
                (WordOrder::Big, [h, l]) => (*h, *l),
                (WordOrder::Little, [l, h]) => (*h, *l),
                _ => (0, words.first().copied().unwrap_or(0)),
            };
            let both = (u32::from(hi) << 16) | u32::from(lo);
            let n = match r.ty {
                RegType::U16 => f64::from(lo),
                RegType::I16 => f64::from(lo as i16),
                RegType::U32 => f64::from(both),
                RegType::I32 => f64::from(both as i32),
                RegType::F32 => f64::from(f32::from_bits(both)),
            };
            if !n.is_finite() {
                problems.push(Problem {
                    reason: "wrong_type",
                    oid: format!("{:?} {}", r.table, r.address).to_lowercase(),
                    detail: format!("`{}` is not a finite number", r.field),
                });
                continue;
            }
            if !r.bits.is_empty() {
                let raw = both as u64 | u64::from(lo);
                let names: Vec<String> = r
                    .bits
                    .iter()
                    .filter(|(b, _)| **b < 32 && raw & (1 << **b) != 0)
                    .map(|(_, n)| n.clone())
                    .collect();
                unit.fields.insert(r.field.clone(), Value::List(names));
                continue;
            }
            let scaled = n * r.scale.unwrap_or(1.0);
            let v = r.unit.map_or(scaled, |u| u.to_contract(scaled)) + r.offset.unwrap_or(0.0);
            // Booleans (pump_on, fan_on) are any non-zero value.
            if r.field.ends_with("_on") || r.field == "leak" {
                unit.fields.insert(r.field.clone(), Value::Bool(v != 0.0));
            } else {
                unit.fields
                    .insert(r.field.clone(), Value::Num((v * 1e6).round() / 1e6));
            }
        }
        let mut out = vec![unit];
        for (i, l) in self.leak.iter().enumerate() {
            match regs.get(&(l.table, l.address)) {
                Some(w) => {
                    let mut r = Reading {
                        kind: Some(DeviceKind::Leak),
                        scope: Some("leak".into()),
                        index: u32::try_from(i + 1).ok(),
                        ..Reading::default()
                    };
                    r.fields
                        .insert("detector".into(), Value::Text(l.detector.clone()));
                    r.fields
                        .insert("leak".into(), Value::Bool((w >> l.bit.min(15)) & 1 == 1));
                    out.push(r);
                }
                None => problems.push(Problem {
                    reason: "missing_register",
                    oid: format!("{:?} {}", l.table, l.address).to_lowercase(),
                    detail: format!("leak detector `{}` was not read", l.detector),
                }),
            }
        }
        out
    }
}

/// Reads every span of `map` from a device. A Modbus exception on one span
/// is a problem (naming the register) and the other spans are kept; a
/// connection failure or a timeout fails the poll.
pub async fn read(
    device: &str,
    addr: SocketAddr,
    unit: u8,
    map: &RegisterMap,
    timeout: Duration,
    problems: &mut Vec<Problem>,
) -> Result<Registers, FacilityError> {
    let to = |e: &dyn std::fmt::Display| FacilityError::Unreachable {
        device: device.to_owned(),
        protocol: "modbus",
        detail: e.to_string(),
    };
    let timed_out = || FacilityError::Timeout {
        device: device.to_owned(),
        protocol: "modbus",
        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut ctx = tokio::time::timeout(
        timeout,
        tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(unit)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| to(&e))?;
    let mut regs = Registers::new();
    for (table, start, count) in map.spans() {
        let call = async {
            match table {
                Table::Holding => ctx.read_holding_registers(start, count).await,
                Table::Input => ctx.read_input_registers(start, count).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(to(&e)),
            Ok(Ok(Err(exception))) => problems.push(Problem {
                reason: "modbus_exception",
                oid: format!("{table:?} {start}..{}", start + count).to_lowercase(),
                detail: format!("the device answered exception {exception:?}"),
            }),
            Ok(Ok(Ok(words))) => {
                for (i, w) in words.into_iter().enumerate() {
                    if let Ok(i) = u16::try_from(i) {
                        regs.insert((table, start + i), w);
                    }
                }
            }
        }
    }
    Ok(regs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_generic_map_decodes_types_word_orders_and_bits() {
        let m = RegisterMap::builtin("cdu-generic").unwrap();
        assert_eq!(m.spans(), [(Table::Holding, 0, 1), (Table::Input, 0, 9)]);
        let mut regs = Registers::new();
        let f = 121.5f32.to_bits();
        for (a, v) in [
            (0u16, 425u16),
            (1, 552),
            (2, 0),
            (3, 4100),
            (4, (f >> 16) as u16),
            (5, f as u16),
            (6, 1),
            (7, 0b101),
            (8, 1),
        ] {
            regs.insert((Table::Input, a), v);
        }
        regs.insert((Table::Holding, 0), (-5i16) as u16);
        let mut problems = Vec::new();
        let r = m.decode(&regs, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r[0].fields.get("supply_c"), Some(&Value::Num(42.5)));
        assert_eq!(r[0].fields.get("flow_lpm"), Some(&Value::Num(410.0)));
        assert_eq!(r[0].fields.get("pressure_kpa"), Some(&Value::Num(121.5)));
        assert_eq!(r[0].fields.get("setpoint_c"), Some(&Value::Num(-0.5)));
        assert_eq!(r[0].fields.get("pump_on"), Some(&Value::Bool(true)));
        assert_eq!(
            r[0].fields.get("alarms"),
            Some(&Value::List(vec!["pump_fault".into(), "low_flow".into()]))
        );
        assert_eq!(r[0].fields.get("unit"), Some(&Value::Text("cdu".into())));
        assert_eq!(r[1].fields.get("leak"), Some(&Value::Bool(true)));
        // Units convert into the contract's: a CRAC in °F and GPM.
        let crac = RegisterMap::parse(
            "crac.toml",
            "name = \"crac\"\nkind = \"cooling\"\n[[register]]\nfield = \"supply_c\"\naddress = 0\nscale = 0.1\nunit = \"degF\"\n[[register]]\nfield = \"flow_lpm\"\naddress = 1\nunit = \"gpm\"\n",
        )
        .unwrap();
        let mut r2 = Registers::new();
        r2.insert((Table::Holding, 0), 1076); // 107.6 °F
        r2.insert((Table::Holding, 1), 100); // 100 GPM
        let got = crac.decode(&r2, &mut Vec::new());
        assert_eq!(got[0].fields.get("supply_c"), Some(&Value::Num(42.0)));
        assert_eq!(got[0].fields.get("flow_lpm"), Some(&Value::Num(378.541178)));
        // A register the poll could not read is named.
        regs.remove(&(Table::Input, 1));
        let mut problems = Vec::new();
        m.decode(&regs, &mut problems);
        assert_eq!(problems[0].oid, "input 1");
    }
}
