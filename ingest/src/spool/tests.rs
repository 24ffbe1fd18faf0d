use super::*;

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Dir(std::env::temp_dir().join(format!(
            "pitcrew-spool-{name}-{}-{nanos}",
            std::process::id()
        )))
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payloads(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect()
}

#[test]
fn fifo_across_segments_and_acks() {
    let d = Dir::new("fifo");
    // 64 KiB: 4 KiB segments, so 2,000 entries span several.
    let mut s = Spool::open(&d.0, 64 * 1024).unwrap();
    for i in 0..2000 {
        assert_eq!(
            s.push(format!("{{\"n\":{i}}}").as_bytes(), Priority::Fault)
                .unwrap(),
            Pushed::Spooled
        );
    }
    assert!(s.segments.len() > 1, "rotated");
    let mut seen = Vec::new();
    while !s.is_empty() {
        let batch = s.peek(300).unwrap();
        assert!(!batch.is_empty());
        seen.extend(payloads(&batch));
        s.ack(batch.last().unwrap(), batch.len() as u64).unwrap();
    }
    let expected: Vec<String> = (0..2000).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(s.stats().acknowledged, 2000);
    assert!(s.segments.len() <= 1, "consumed segments are deleted");
}

#[test]
fn survives_a_restart_with_unacknowledged_entries() {
    let d = Dir::new("restart");
    {
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        for i in 0..10 {
            s.push(format!("e{i}").as_bytes(), Priority::Fault).unwrap();
        }
        let batch = s.peek(4).unwrap();
        s.ack(batch.last().unwrap(), 4).unwrap();
    }
    // The agent died mid-write of an 11th line.
    let last = std::fs::read_dir(&d.0)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .max()
        .unwrap();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(b"{\"torn").unwrap();
    drop(f);

    let mut s = Spool::open(&d.0, 1 << 20).unwrap();
    let rest = s.peek(100).unwrap();
    assert_eq!(payloads(&rest), ["e4", "e5", "e6", "e7", "e8", "e9"]);
    s.push(b"e10", Priority::Fault).unwrap();
    assert_eq!(
        payloads(&s.peek(100).unwrap()).last().unwrap(),
        "e10",
        "the torn line is gone"
    );
}

#[test]
fn overflow_drops_periodic_first_then_refuses_when_full() {
    let d = Dir::new("overflow");
    let mut s = Spool::open(&d.0, 1024).unwrap();
    let line = [b'x'; 99]; // 100 bytes with its newline
    let mut outcomes = Vec::new();
    for i in 0..16 {
        let p = if i % 2 == 0 {
            Priority::Periodic
        } else {
            Priority::Fault
        };
        outcomes.push(s.push(&line, p).unwrap());
    }
    use Pushed::*;
    assert_eq!(
        outcomes,
        [
            Spooled,
            Spooled,
            Spooled,
            Spooled,
            Spooled,
            Spooled, // up to half full (600 of 1024)
            DroppedPeriodic,
            Spooled,
            DroppedPeriodic,
            Spooled, // faults still go in
            DroppedPeriodic,
            Spooled,
            DroppedPeriodic,
            Spooled, // 1000 of 1024
            DroppedFull,
            DroppedFull, // no room: nothing more
        ]
    );
    let st = s.stats();
    assert_eq!(
        (st.spooled, st.dropped_periodic, st.dropped_full),
        (10, 4, 2)
    );
    assert!(s.pending_bytes() <= 1024);
}

#[test]
fn priorities_of_kinds() {
    assert_eq!(Priority::of(EventKind::GpuThermal), Priority::Periodic);
    assert_eq!(Priority::of(EventKind::NodeHeartbeat), Priority::Periodic);
    assert_eq!(Priority::of(EventKind::GpuXid), Priority::Fault);
    assert_eq!(Priority::of(EventKind::PcieAer), Priority::Fault);
}
