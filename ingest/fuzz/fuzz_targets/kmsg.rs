//! Fuzz the kernel-log parser: any bytes as log lines. It must never
//! panic, and every event it makes must be valid on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitcrew_contract::{decode, encode, Event, Timestamp};
use pitcrew_ingest::kmsg::KmsgSource;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut src = KmsgSource::new("n1", "boot", Some(Timestamp::EPOCH));
    let mut out = Vec::new();
    for line in text.lines() {
        src.push(line, Timestamp::EPOCH, &mut out);
    }
    src.flush(Timestamp::EPOCH, &mut out);
    for ev in out {
        let back: Event = decode(&encode(&ev)).expect("parser output decodes");
        assert_eq!(back, ev);
    }
});
