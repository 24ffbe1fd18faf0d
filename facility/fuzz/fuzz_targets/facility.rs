//! Fuzz every parser of device input: a walk (as snmprec text) through every
//! shipped profile into events, a profile file, a register map and its
//! decode, an address, and a Redfish document. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitcrew_contract::Timestamp;
use pitcrew_facility::assemble::{events, Meters, Subject};
use pitcrew_facility::modbus::{RegisterMap, Registers, Table};
use pitcrew_facility::profile::{Profile, BUILTIN};
use pitcrew_facility::snmprec::parse_snmprec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let walk = parse_snmprec(&text);
    for (name, src) in BUILTIN {
        let p = Profile::parse(name, src).expect("shipped profiles parse");
        let mut problems = Vec::new();
        let readings = p.assemble(&walk, &mut problems);
        let _ = events(&Subject::default(), p.kind, readings, Timestamp::from_unix_millis(0), &mut Meters::default(), &mut problems);
    }
    let _ = Profile::parse("fuzz.toml", &text);
    if let Ok(map) = RegisterMap::parse("fuzz.toml", &text) {
        let mut regs = Registers::new();
        for (i, w) in data.chunks(2).enumerate().take(256) {
            let v = u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]);
            regs.insert((if i % 2 == 0 { Table::Input } else { Table::Holding }, (i / 2) as u16), v);
        }
        let _ = map.decode(&regs, &mut Vec::new());
    }
    let _ = pitcrew_facility::Address::parse(&text);
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = pitcrew_facility::redfish::decode_unit(&doc, Some(&doc), std::slice::from_ref(&doc));
        let _ = pitcrew_facility::redfish::decode_detector(&doc, 1);
    }
});
