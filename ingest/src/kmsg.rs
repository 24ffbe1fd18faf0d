//! The kernel-log source: `/dev/kmsg` followed live, or a file read once.
//!
//! [`Line`] takes a raw line apart (kmsg record, dmesg, syslog/journal);
//! [`Parser`] turns messages into findings; [`KmsgSource`] gives findings
//! their node, time and stable id.

mod follow;
mod host;
mod line;
mod net;
mod nvidia;
mod parse;
mod pcie;

pub use follow::{KmsgFollower, SeqFile};
pub use line::{Line, Wall};
pub use parse::{Finding, Parser};

use pitcrew_contract::{deterministic_id, Event, Source, Timestamp};

/// A pushed line's index, kmsg sequence, monotonic stamp and own time.
type LineMeta = (u64, Option<u64>, Option<u64>, Option<Timestamp>);

/// Findings into events for one node.
#[derive(Debug)]
pub struct KmsgSource {
    node: String,
    boot_id: String,
    /// Wall-clock time of boot, to place monotonic stamps.
    boot_time: Option<Timestamp>,
    parser: Parser,
    /// Per pushed line: kmsg sequence, monotonic stamp and the line's own
    /// wall-clock time, for the event of a finding that started on it (kept
    /// only for open records).
    meta: std::collections::VecDeque<LineMeta>,
    findings: Vec<Finding>,
}

impl KmsgSource {
    pub fn new(node: &str, boot_id: &str, boot_time: Option<Timestamp>) -> KmsgSource {
        KmsgSource {
            node: node.to_owned(),
            boot_id: boot_id.to_owned(),
            boot_time,
            parser: Parser::new(),
            meta: std::collections::VecDeque::new(),
            findings: Vec::new(),
        }
    }

    /// Reads one raw line; events for whatever it completed go to `out`.
    /// `now` stamps lines that carry no time of their own.
    pub fn push(&mut self, raw: &str, now: Timestamp, out: &mut Vec<Event>) {
        let line = Line::split(raw);
        if line.continuation {
            return;
        }
        let index = self.parser_lines();
        let wall = line.wall.and_then(|w| w.resolve(now));
        self.meta
            .push_back((index, line.seq, line.monotonic_us, wall));
        self.parser.push(line.text, &mut self.findings);
        self.drain(now, out);
    }

    /// Completes open records (call when input pauses or ends).
    pub fn flush(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        self.parser.flush(&mut self.findings);
        self.drain(now, out);
        self.meta.clear();
    }

    fn parser_lines(&self) -> u64 {
        self.meta.back().map_or(0, |m| m.0 + 1)
    }

    fn drain(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        for f in self.findings.drain(..) {
            let meta = self.meta.iter().find(|m| m.0 == f.line).copied();
            let (seq, stamp, wall) = meta.map_or((None, None, None), |m| (m.1, m.2, m.3));
            // The line's own time first (a file read long after), then its
            // monotonic stamp placed at boot, then the time it was read.
            let time = match (wall, stamp, self.boot_time) {
                (Some(t), _, _) => t,
                (None, Some(us), Some(boot)) => {
                    boot.add_nanos(i64::try_from(us).unwrap_or(0).saturating_mul(1000))
                }
                _ => now,
            };
            // The same kernel record always gets the same id: by sequence
            // number when there is one, else by line position and stamp.
            let position = match seq {
                Some(s) => format!("seq{s}"),
                None => format!("line{}-{}", f.line, stamp.unwrap_or(0)),
            };
            out.push(Event {
                id: deterministic_id(
                    "kmsg",
                    &[&self.node, &self.boot_id, &position, f.data.kind().as_str()],
                ),
                node: self.node.clone(),
                time,
                source: Source::Kmsg,
                gpu: f.gpu,
                count: 1,
                labels: Default::default(),
                data: f.data,
            });
        }
        // Keep line metadata only as far back as an open record may reach.
        let keep = self.parser.open_records().max(1) * 64;
        while self.meta.len() > keep {
            self.meta.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;

/// A realistic mix of kernel log lines for benchmarks: the test corpus's
/// fault records (about one line in ten) among ordinary kernel chatter.
pub fn benchmark_corpus() -> Vec<String> {
    const FAULTS: &[&str] = &[
        include_str!("../testdata/kmsg/aer-corrected-old-spelling.log"),
        include_str!("../testdata/kmsg/aer-corrected-new-prefix-interleaved.log"),
        include_str!("../testdata/kmsg/aer-uncorrected-nonfatal.log"),
        include_str!("../testdata/kmsg/aer-data-link-timeout.log"),
        include_str!("../testdata/kmsg/gpu-off-the-bus-fatal.log"),
        include_str!("../testdata/kmsg/nvrm.log"),
        include_str!("../testdata/kmsg/host.log"),
        include_str!("../testdata/kmsg/lookalikes.log"),
    ];
    const CHATTER: &[&str] = &[
        "6,{seq},{us},-;audit: type=1400 audit(1795530212.123:412): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"nvidia_modprobe\" pid=1123 comm=\"apparmor_parser\"",
        "6,{seq},{us},-;IPv6: ADDRCONF(NETDEV_UP): eth0: link is not ready",
        "6,{seq},{us},-;EXT4-fs (md127p3): re-mounted 0f3cd65a-338b-4574-bba3-ecef214e1917 r/w. Quota mode: none.",
        "6,{seq},{us},-;mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link INIT",
        "4,{seq},{us},-;workqueue: ib_cache_event_task [ib_core] hogged CPU for >10000us 4 times, consider switching to WQ_UNBOUND",
        "6,{seq},{us},-;nvidia-peermem nv_get_p2p_free_callback:127 ERROR detected invalid context, skipping further processing",
        "6,{seq},{us},-;systemd[1]: Started session-42.scope - Session 42 of User slurm.",
        "5,{seq},{us},-;NFS: state manager: check lease failed on NFSv4 server 10.0.0.5 with error 13",
        "6,{seq},{us},-;br-4c1d2e: port 3(veth91a2f) entered forwarding state",
    ];
    let faults: Vec<&str> = FAULTS.iter().flat_map(|f| f.lines()).collect();
    let mut out = Vec::new();
    let mut seq = 1000u64;
    for (i, fault) in faults.iter().cycle().take(faults.len() * 8).enumerate() {
        for j in 0..9 {
            let c = CHATTER[(i + j) % CHATTER.len()];
            out.push(
                c.replace("{seq}", &seq.to_string())
                    .replace("{us}", &(seq * 1000).to_string()),
            );
            seq += 1;
        }
        out.push((*fault).to_owned());
    }
    out
}
