//! snmpsim's recording format (`.snmprec`: `OID|TYPE|VALUE` per line), read
//! into a [`Walk`]: how the tests, the fuzz target and the benchmarks hold a
//! real device's answers without a network.

use crate::profile::{parse_oid, Raw, Walk};

/// Reads an snmpsim `.snmprec` recording (`OID|TYPE|VALUE`) into a walk:
/// the tests' way to check a profile against a real device's data.
pub fn parse_snmprec(text: &str) -> Walk {
    let mut walk = Walk::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, '|');
        let (Some(oid), Some(ty), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(oid) = parse_oid(oid) else { continue };
        // snmpsim variations (`2:numeric|min=1,max=2,initial=2`): the value
        // it serves first.
        let (ty, value) = match ty.split_once(':') {
            Some((base, _)) => match value.split(',').find_map(|kv| kv.strip_prefix("initial=")) {
                Some(initial) => (base, initial),
                None => continue,
            },
            None => (ty, value),
        };
        let raw = match ty {
            "2" | "66" | "67" => value.parse::<i64>().ok().map(Raw::Int),
            "65" => value.parse::<u64>().ok().map(Raw::Counter32),
            "70" => value.parse::<u64>().ok().map(Raw::Counter64),
            "4" => Some(Raw::Str(value.to_owned())),
            "4x" => hex(value).map(|b| Raw::Str(String::from_utf8_lossy(&b).into_owned())),
            "6" => Some(Raw::Oid(value.to_owned())),
            _ => None,
        };
        if let Some(raw) = raw {
            walk.insert(oid, raw);
        }
    }
    walk
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
