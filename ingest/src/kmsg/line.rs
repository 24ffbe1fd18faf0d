//! One kernel log line in any of the forms it reaches us: a `/dev/kmsg`
//! record, `dmesg` output (monotonic `[  12.345678]`, `-T`/`--ctime`
//! `[Fri Aug 30 11:43:09 2024]`, `--time-format iso`
//! `2024-08-30T11:43:09,123456+02:00`), a journal line (`short`, `short-iso`,
//! `short-iso-precise`), a syslog line (RFC 3164 `Feb 14 05:03:41 host
//! kernel:`, RFC 5424-style ISO stamps), or the bare message.
//!
//! The line's own wall-clock time is kept where it has one ([`Wall`]):
//! ISO stamps with their offset; `dmesg -T` and RFC 3164 stamps carry no
//! zone and are read as UTC, and RFC 3164 carries no year (the reader
//! supplies it). Month names are read in English, German, French, Spanish,
//! Italian and Portuguese; a line in another locale keeps its message and
//! loses only its time.

use pitcrew_contract::Timestamp;

/// The wall-clock time a line gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wall {
    /// A complete instant.
    At(Timestamp),
    /// An RFC 3164 stamp: no year, read as UTC.
    NoYear {
        month: u8,
        day: u8,
        seconds_of_day: u32,
    },
}

impl Wall {
    /// The instant, with `now` giving the year a syslog stamp lacks (the
    /// year that puts it no later than a day after `now`).
    pub fn resolve(self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Wall::At(t) => Some(t),
            Wall::NoYear {
                month,
                day,
                seconds_of_day,
            } => {
                let days = now.unix_nanos().div_euclid(86_400 * 1_000_000_000);
                // The civil year of `now` (good to a day at the new year,
                // which the check below absorbs).
                let year = 1970 + days * 400 / 146_097;
                let s = i64::from(seconds_of_day);
                for y in [year + 1, year, year - 1] {
                    if let Some(t) = Timestamp::from_civil(
                        y,
                        i64::from(month),
                        i64::from(day),
                        s / 3600,
                        s / 60 % 60,
                        s % 60,
                        0,
                        0,
                    ) {
                        if t.unix_nanos() <= now.unix_nanos() + 86_400 * 1_000_000_000 {
                            return Some(t);
                        }
                    }
                }
                None
            }
        }
    }
}

/// A line with its prefix taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// `/dev/kmsg` sequence number.
    pub seq: Option<u64>,
    /// Microseconds since boot (kmsg records, `dmesg` monotonic stamps).
    pub monotonic_us: Option<u64>,
    /// The wall-clock time the line gives, if any.
    pub wall: Option<Wall>,
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
                        wall: None,
                        continuation: true,
                        text: "",
                    };
                }
            }
        }
        if let Some(l) = kmsg_record(raw) {
            return l;
        }
        let raw = strip_syslog_priority(raw);
        let raw = strip_decoded_level(raw);
        if let Some(l) = rfc5424(raw) {
            return l;
        }
        let (rest, mono, mut wall) = match bracket_stamp(raw) {
            Some((rest, mono, wall)) => (rest, mono, wall),
            None => match iso_prefix(raw) {
                // dmesg --time-format iso: the stamp, then the message; or an
                // ISO-stamped syslog/journal line: host and "kernel: " follow.
                Some((t, after)) => (syslog_body(after).unwrap_or(after), None, Some(Wall::At(t))),
                None => (
                    syslog_body(raw).unwrap_or(raw),
                    None,
                    syslog_body(raw).and_then(|_| rfc3164(raw)),
                ),
            },
        };
        // journal lines keep the dmesg stamp after "kernel: ".
        let (text, mono) = match (mono, bracket_stamp(rest)) {
            (None, Some((t, m, w))) => {
                wall = wall.or(w);
                (t, m)
            }
            _ => (rest, mono),
        };
        // A message quoted from `journalctl -o cat`-like output keeps the
        // syslog tag alone: "kernel: NVRM: Xid ...".
        let text = text.strip_prefix("kernel: ").unwrap_or(text);
        Line {
            seq: None,
            monotonic_us: mono,
            wall,
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
        wall: None,
        continuation: false,
        text: &raw[semi + 1..],
    })
}

/// `<4>` before a syslog line received raw (RFC 3164 and 5424 both start
/// with the priority).
fn strip_syslog_priority(raw: &str) -> &str {
    let Some(rest) = raw.strip_prefix('<') else {
        return raw;
    };
    match rest.find('>') {
        Some(end) if (1..=3).contains(&end) && rest[..end].bytes().all(|b| b.is_ascii_digit()) => {
            &rest[end + 1..]
        }
        _ => raw,
    }
}

/// `dmesg -x`: `kern  :err   : ` (facility and level, padded) first.
fn strip_decoded_level(raw: &str) -> &str {
    let b = raw.as_bytes();
    let word = |from: usize| {
        let end = b[from..]
            .iter()
            .position(|c| !c.is_ascii_lowercase())
            .map_or(b.len(), |n| from + n);
        (end > from).then_some(end)
    };
    let pad = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let Some(fac_end) = word(0) else { return raw };
    let colon = pad(fac_end);
    if b.get(colon) != Some(&b':') {
        return raw;
    }
    let Some(level_end) = word(colon + 1) else {
        return raw;
    };
    let colon2 = pad(level_end);
    if b.get(colon2) != Some(&b':') || b.get(colon2 + 1) != Some(&b' ') {
        return raw;
    }
    const FACILITIES: [&str; 9] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "local",
    ];
    let facility = &raw[..fac_end];
    if FACILITIES.iter().any(|f| facility.starts_with(f)) {
        &raw[colon2 + 2..]
    } else {
        raw
    }
}

/// RFC 5424: `1 2024-08-30T11:43:09.123Z host kernel - - - message` (the
/// priority already taken off).
fn rfc5424(raw: &str) -> Option<Line<'_>> {
    let rest = raw.strip_prefix("1 ")?;
    let (t, rest) = iso_prefix(rest)?;
    let mut parts = rest.splitn(5, ' ');
    let _host = parts.next()?;
    let app = parts.next()?;
    let _procid = parts.next()?;
    let _msgid = parts.next()?;
    let rest = parts.next()?;
    if app != "kernel" {
        return None;
    }
    // Structured data: "-" or one or more "[...]" elements.
    let text = match rest.strip_prefix("- ") {
        Some(t) => t,
        None => {
            let end = rest.rfind("] ")?;
            &rest[end + 2..]
        }
    };
    let (text, mono) = match bracket_stamp(text) {
        Some((t, m, _)) => (t, m),
        None => (text, None),
    };
    Some(Line {
        seq: None,
        monotonic_us: mono,
        wall: Some(Wall::At(t)),
        continuation: false,
        text,
    })
}

/// `[  123.456789] rest` (monotonic) or `[Fri Aug 30 11:43:09 2024] rest`;
/// also `dmesg -H`'s `[Feb22 04:01]` and `[  +0.000001]` (no time kept)
/// and a `[  T291]` caller id after the stamp (CONFIG_PRINTK_CALLER).
fn bracket_stamp(raw: &str) -> Option<(&str, Option<u64>, Option<Wall>)> {
    let s = raw.strip_prefix('[')?;
    let close = s.find(']')?;
    if close > 40 {
        return None;
    }
    let stamp = s[..close].trim();
    let mut rest = &s[close + 1..];
    if let Some(caller) = rest.strip_prefix('[') {
        if let Some(end) = caller.find(']') {
            let id = caller[..end].trim();
            if end <= 16
                && (id.starts_with('T') || id.starts_with('C'))
                && id.len() > 1
                && id[1..].bytes().all(|b| b.is_ascii_digit())
            {
                rest = &caller[end + 1..];
            }
        }
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    if let Some(delta) = stamp.strip_prefix('+') {
        if !delta.is_empty() && delta.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Some((rest, None, None));
        }
    }
    if reltime_header(stamp) {
        return Some((rest, None, None));
    }
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
                None,
            ));
        }
    }
    // A wall-clock stamp (dmesg --ctime): a weekday name first.
    let b = stamp.as_bytes();
    if b.len() >= 20 && b[3] == b' ' && b[..3].iter().all(u8::is_ascii_alphabetic) {
        return Some((rest, None, ctime(&stamp[4..])));
    }
    None
}

/// `Feb22 04:01` (dmesg -H): a month name, the day, then `HH:MM`.
fn reltime_header(stamp: &str) -> bool {
    let Some((date, clock)) = stamp.split_once(' ') else {
        return false;
    };
    let split = date
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i);
    let Some(split) = split else { return false };
    let (mon, day) = date.split_at(split);
    let c = clock.as_bytes();
    month(mon).is_some()
        && day.len() <= 2
        && day.bytes().all(|b| b.is_ascii_digit())
        && c.len() == 5
        && c[2] == b':'
        && c.iter()
            .enumerate()
            .all(|(i, b)| i == 2 || b.is_ascii_digit())
}

/// `Aug 30 11:43:09 2024` (dmesg -T, after the weekday), read as UTC.
fn ctime(s: &str) -> Option<Wall> {
    let mut parts = s.split_whitespace();
    let month = month(parts.next()?)?;
    let day: i64 = parts.next()?.parse().ok()?;
    let secs = clock(parts.next()?)?;
    let year: i64 = parts.next()?.parse().ok()?;
    let secs = i64::from(secs);
    Timestamp::from_civil(
        year,
        i64::from(month),
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        0,
        0,
    )
    .map(Wall::At)
}

/// `HH:MM:SS` as seconds of the day.
fn clock(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let n = |i: usize| -> Option<u32> {
        let (x, y) = (b[i], b[i + 1]);
        (x.is_ascii_digit() && y.is_ascii_digit())
            .then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
    };
    let (h, m, sec) = (n(0)?, n(3)?, n(6)?);
    (h < 24 && m < 60 && sec <= 60).then_some(h * 3600 + m * 60 + sec)
}

/// A month's name or abbreviation, in the locales journald and syslog
/// daemons write most (English, German, French, Spanish, Italian,
/// Portuguese); case and a trailing period do not matter.
fn month(s: &str) -> Option<u8> {
    let w = s.trim_end_matches('.').to_lowercase();
    let w = w.as_str();
    const NAMES: [&[&str]; 12] = [
        &[
            "jan", "january", "januar", "jän", "janv", "janvier", "ene", "enero", "gen", "gennaio",
            "janeiro",
        ],
        &[
            "feb",
            "february",
            "februar",
            "févr",
            "fév",
            "février",
            "fevereiro",
            "fev",
            "febrero",
            "febbraio",
        ],
        &["mar", "march", "märz", "mär", "mars", "marzo", "março"],
        &["apr", "april", "avr", "avril", "abr", "abril", "aprile"],
        &["may", "mai", "mayo", "mag", "maggio", "maio"],
        &[
            "jun", "june", "juni", "juin", "junio", "giu", "giugno", "junho",
        ],
        &[
            "jul", "july", "juli", "juil", "juillet", "julio", "lug", "luglio", "julho",
        ],
        &["aug", "august", "août", "ago", "agosto"],
        &[
            "sep",
            "sept",
            "september",
            "septembre",
            "septiembre",
            "set",
            "settembre",
            "setembro",
        ],
        &[
            "oct", "october", "okt", "oktober", "octobre", "octubre", "ott", "ottobre", "out",
            "outubro",
        ],
        &["nov", "november", "novembre", "noviembre", "novembro"],
        &[
            "dec",
            "december",
            "dez",
            "dezember",
            "déc",
            "décembre",
            "dic",
            "diciembre",
            "dicembre",
            "dezembro",
        ],
    ];
    NAMES
        .iter()
        .position(|names| names.contains(&w))
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// `Feb 14 05:03:41 host kernel: ...` (also `Feb  4 ...`).
fn rfc3164(raw: &str) -> Option<Wall> {
    let mut parts = raw.split_whitespace();
    let month = month(parts.next()?)?;
    let day: u8 = parts.next()?.parse().ok()?;
    let seconds_of_day = clock(parts.next()?)?;
    (1..=31).contains(&day).then_some(Wall::NoYear {
        month,
        day,
        seconds_of_day,
    })
}

/// An ISO 8601 stamp at the start of the line: `2024-08-30T11:43:09`, with
/// `.` or `,` fractions and `Z`, `+02:00` or `+0200` (none: UTC); returns
/// it and the rest of the line.
fn iso_prefix(raw: &str) -> Option<(Timestamp, &str)> {
    let b = raw.as_bytes();
    if b.len() < 20 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let end = raw.find(' ')?;
    let token = &raw[..end];
    let rest = &raw[end + 1..];
    let mut norm = token.replace(',', ".");
    // "+0200" -> "+02:00"
    let zone_at = norm[19..].find(['+', '-', 'Z']).map(|i| i + 19);
    match zone_at {
        Some(i) if norm.as_bytes()[i] != b'Z' && norm.len() == i + 5 => norm.insert(i + 3, ':'),
        Some(_) => {}
        None => norm.push('Z'),
    }
    Timestamp::parse_rfc3339(&norm).ok().map(|t| (t, rest))
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_lines_own_time_in_every_stamped_form() {
        let at = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let iso = Line::split("2024-08-30T11:43:09,123456+02:00 NVRM: Xid (PCI:0000:2b:00): 79, x");
        assert_eq!(iso.wall, Some(Wall::At(at("2024-08-30T09:43:09.123456Z"))));
        assert!(iso.text.starts_with("NVRM"));
        let journal = Line::split("2024-08-30T11:43:09+0200 gpu-1 kernel: mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link DOWN");
        assert_eq!(journal.wall, Some(Wall::At(at("2024-08-30T09:43:09Z"))));
        assert!(journal.text.starts_with("mlx5_core"));
        let precise = Line::split(
            "2024-08-30T11:43:09.500000+00:00 gpu-1 kernel: [ 3.5] pcieport 0000:00:1d.0: x",
        );
        assert_eq!(precise.wall, Some(Wall::At(at("2024-08-30T11:43:09.5Z"))));
        assert_eq!(precise.monotonic_us, Some(3_500_000));
        let ctime = Line::split("[Fri Aug 30 11:43:09 2024] NVRM: Xid (PCI:0000:cb:00): 13, x");
        assert_eq!(ctime.wall, Some(Wall::At(at("2024-08-30T11:43:09Z"))));
        // Syslog: no year, the reader's clock gives it; other locales too.
        let now = at("2026-02-20T00:00:00Z");
        for raw in [
            "Feb 14 05:03:41 gpu-1 kernel: x",
            "Feb  14 05:03:41 gpu-1 kernel: x",
            "févr. 14 05:03:41 gpu-1 kernel: x",
        ] {
            let w = Line::split(raw).wall.unwrap();
            assert_eq!(w.resolve(now), Some(at("2026-02-14T05:03:41Z")), "{raw}");
        }
        // December's lines read in January belong to last year.
        let dec = Line::split("Dez 31 23:59:59 gpu-1 kernel: x").wall.unwrap();
        assert_eq!(
            dec.resolve(at("2026-01-01T00:00:10Z")),
            Some(at("2025-12-31T23:59:59Z"))
        );
        // No stamp, no time.
        assert_eq!(Line::split("plain").wall, None);
        assert_eq!(Line::split("[ 12.5] x").wall, None);
    }

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
