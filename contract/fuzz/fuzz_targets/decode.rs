//! Fuzz the wire decoder: any bytes, every message type. Decoding must
//! never panic, and whatever decodes must encode and decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitcrew_contract::{
    decode, encode, ActionRequest, AuditRecord, Event, Incident, RemediationState,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = decode::<Event>(data) {
        let again: Event = decode(&encode(&ev)).expect("re-encoded event decodes");
        assert_eq!(encode(&again), encode(&ev));
    }
    let _ = decode::<Incident>(data);
    let _ = decode::<ActionRequest>(data);
    let _ = decode::<AuditRecord>(data);
    let _ = decode::<RemediationState>(data);
});
