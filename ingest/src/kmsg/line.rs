//! One kernel log line in any of the forms it reaches us: a `/dev/kmsg`
//! record, `dmesg` output (with a monotonic or a wall-clock stamp), a
//! syslog/journal line, or the bare message.

/// A line with its prefix taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// `/dev/kmsg` sequence number.
    pub seq: Option<u64>,
    /// Microseconds since boot (kmsg records, `dmesg` monotonic stamps).
    pub monotonic_us: Option<u64>,
    /// A continuation of the previous record (kmsg dictionary lines start
    /// with a space): carries no message of its own.
    pub continuation: bool,
    /// The message itself.
    pub text: &'a str,
}

impl<'a> Line<'a> {
    /// Takes a raw line apart. Never fails: an unknown prefix is message.
    pub fn split(raw: &'a str) -> Line<'a> {
        let raw = raw.trim_end_matches(['\n', '\r']);
        if raw.starts_with(' ') && raw.contains('=') && !raw.trim_start().starts_with('[') {
            // kmsg dictionary continuation (" SUBSYSTEM=pci"). dmesg output
            // does not indent messages, except after its own stamp.
            if let Some(eq) = raw.find('=') {
                let key = &raw[1..eq];
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                    return Line {
                        seq: None,
                        monotonic_us: None,
                        continuation: true,
                        text: "",
                    };
                }
            }
        }
        if let Some(l) = kmsg_record(raw) {
            return l;
        }
        let (rest, mono) = match bracket_stamp(raw) {
            Some((rest, mono)) => (rest, mono),
            None => (syslog_body(raw).unwrap_or(raw), None),
        };
        // journal lines keep the dmesg stamp after "kernel: ".
        let (text, mono) = match (mono, bracket_stamp(rest)) {
            (None, Some((t, m))) => (t, m),
            _ => (rest, mono),
        };
        Line {
            seq: None,
            monotonic_us: mono,
            continuation: false,
            text,
        }
    }
}

/// `prio,seq,usec,flags[,more];message`
fn kmsg_record(raw: &str) -> Option<Line<'_>> {
    let semi = raw.find(';')?;
    let head = &raw[..semi];
    if head.is_empty() || !head.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let mut parts = head.split(',');
    let _prio: u32 = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    let usec: u64 = parts.next()?.parse().ok()?;
    Some(Line {
        seq: Some(seq),
        monotonic_us: Some(usec),
        continuation: false,
        text: &raw[semi + 1..],
    })
}

/// `[  123.456789] rest` (monotonic) or `[Fri Aug 30 11:43:09 2024] rest`.
fn bracket_stamp(raw: &str) -> Option<(&str, Option<u64>)> {
    let s = raw.strip_prefix('[')?;
    let close = s.find(']')?;
    if close > 40 {
        return None;
    }
    let stamp = s[..close].trim();
    let rest = s[close + 1..].strip_prefix(' ').unwrap_or(&s[close + 1..]);
    if let Some((secs, frac)) = stamp.split_once('.') {
        if let (Ok(secs), true) = (
            secs.parse::<u64>(),
            frac.bytes().all(|b| b.is_ascii_digit()),
        ) {
            let mut us = 0u64;
            for (i, b) in frac.bytes().take(6).enumerate() {
                us += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
            }
            return Some((
                rest,
                Some(secs.saturating_mul(1_000_000).saturating_add(us)),
            ));
        }
    }
    // A wall-clock stamp (dmesg --ctime): a weekday name first.
    let b = stamp.as_bytes();
    if b.len() >= 20 && b[3] == b' ' && b[..3].iter().all(u8::is_ascii_alphabetic) {
        return Some((rest, None));
    }
    None
}

/// `Feb 14 05:03:41 host kernel: message`
fn syslog_body(raw: &str) -> Option<&str> {
    let i = raw.find(" kernel: ")?;
    if i > 80 {
        return None;
    }
    Some(&raw[i + " kernel: ".len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_form() {
        let k = Line::split(
            "4,1042,1843308145,-;NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.",
        );
        assert_eq!((k.seq, k.monotonic_us), (Some(1042), Some(1_843_308_145)));
        assert!(k.text.starts_with("NVRM: Xid"));
        let d = Line::split("[ 1843.308145] NVRM: Xid (PCI:0000:2b:00): 79, x");
        assert_eq!(d.monotonic_us, Some(1_843_308_145));
        assert!(d.text.starts_with("NVRM"));
        let c = Line::split("[Fri Aug 30 11:43:09 2024] NVRM: Xid (PCI:0000:cb:00): 13, x");
        assert_eq!(c.monotonic_us, None);
        assert!(c.text.starts_with("NVRM"));
        let j = Line::split(
            "Feb 14 05:03:41 gpu-1 kernel: mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link INIT",
        );
        assert!(j.text.starts_with("mlx5_core"));
        let jd = Line::split("Feb 14 05:03:41 gpu-1 kernel: [ 3.5] pcieport 0000:00:1d.0: x");
        assert_eq!(jd.monotonic_us, Some(3_500_000));
        assert!(jd.text.starts_with("pcieport"));
        assert!(Line::split(" SUBSYSTEM=pci").continuation);
        assert!(
            !Line::split(
                " pcieport 0000:00:1c.5:   device [8086:9d15] error status/mask=00000001/00002000"
            )
            .continuation
        );
        assert_eq!(Line::split("plain").text, "plain");
        // Multi-byte characters where a weekday would be.
        assert_eq!(
            Line::split("[é€ Aug 30 11:43:09 2024] x").text,
            "[é€ Aug 30 11:43:09 2024] x"
        );
    }
}
