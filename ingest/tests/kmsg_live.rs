//! The follower against the real `/dev/kmsg` of this machine: records the
//! test writes into the kernel log come back as events, a restart within
//! the boot re-emits nothing, and a fresh start begins at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use pitcrew_contract::{EventData, Timestamp};
use pitcrew_ingest::kmsg::{KmsgFollower, KmsgSource};

const KMSG: &str = "/dev/kmsg";

fn write_kmsg(text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(KMSG)
        .expect("root can write /dev/kmsg");
    f.write_all(text.as_bytes()).unwrap();
}

/// Reads until a record containing `marker` shows up (or 5 s pass).
fn read_until(f: &mut KmsgFollower, marker: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match f.next_record().unwrap() {
            Some(r) => {
                let done = r.contains(marker);
                seen.push(r);
                if done {
                    return seen;
                }
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no record with {marker} within 5 s; saw {seen:?}");
}

#[test]
fn follows_dev_kmsg_from_now_and_resumes_without_repeats() {
    assert!(Path::new(KMSG).exists(), "this machine has no /dev/kmsg");
    let tag = format!("{}", std::process::id());
    write_kmsg(&format!(
        "pitcrew-test-{tag}: written before the follower started\n"
    ));

    let mut f = KmsgFollower::open(Path::new(KMSG), None).unwrap();
    write_kmsg(&format!("NVRM: Xid (PCI:0000:2b:00): 79, pid={tag}, name=pitcrew-test, GPU has fallen off the bus.\n"));
    let records = read_until(&mut f, &format!("pid={tag}"));
    assert!(
        !records
            .iter()
            .any(|r| r.contains("written before the follower started") && r.contains(&tag)),
        "a fresh follower starts at the end: {records:?}"
    );
    let mut src = KmsgSource::new("n17", "boot", Some(Timestamp::EPOCH));
    let mut events = Vec::new();
    for r in &records {
        src.push(r, Timestamp::now(), &mut events);
    }
    let xid = events
        .iter()
        .find_map(|e| match &e.data {
            EventData::GpuXid(x) if x.pid.map(|p| p.to_string()) == Some(tag.clone()) => Some(x),
            _ => None,
        })
        .expect("the injected Xid became an event");
    assert_eq!(xid.code, 79);
    let seq = f.last_seq().unwrap();

    // A restart within the boot resumes after `seq`: the Xid is not read again.
    write_kmsg(&format!("pitcrew-test-{tag}: after the restart\n"));
    let mut again = KmsgFollower::open(Path::new(KMSG), Some(seq)).unwrap();
    let records = read_until(
        &mut again,
        &format!("pitcrew-test-{tag}: after the restart"),
    );
    assert!(
        !records.iter().any(|r| r.contains(&format!("pid={tag}"))),
        "{records:?}"
    );
    assert!(again.last_seq().unwrap() > seq);
}
