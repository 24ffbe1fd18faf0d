//! Durations as rule files write them: `250ms`, `30s`, `5m`, `2h`, `7d`,
//! or several parts (`1h30m`). Kept in nanoseconds, like event time.

/// A span of event time, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub i64);

impl Span {
    pub const ZERO: Span = Span(0);

    pub const fn from_secs(s: i64) -> Span {
        Span(s.saturating_mul(1_000_000_000))
    }

    pub const fn from_millis(ms: i64) -> Span {
        Span(ms.saturating_mul(1_000_000))
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Parses `30s`, `5m`, `1h30m`, `250ms`, `7d`, `0s`.
    pub fn parse(s: &str) -> Result<Span, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration: write it like 30s, 5m, 2h or 7d".into());
        }
        let b = t.as_bytes();
        let mut i = 0;
        let mut total: i64 = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(format!(
                    "bad duration `{t}`: expected a number then a unit (ms, s, m, h, d)"
                ));
            }
            let n: i64 = t[start..i]
                .parse()
                .map_err(|_| format!("bad duration `{t}`: number too large"))?;
            let ustart = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = match &t[ustart..i] {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                "" => {
                    return Err(format!(
                        "bad duration `{t}`: missing unit after {n} (ms, s, m, h, d)"
                    ))
                }
                u => {
                    return Err(format!(
                        "bad duration `{t}`: unknown unit `{u}` (ms, s, m, h, d)"
                    ))
                }
            };
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("bad duration `{t}`: too long"))?;
        }
        Ok(Span(total))
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        const UNITS: [(i64, &str); 5] = [
            (86_400_000_000_000, "d"),
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
        ];
        if n == 0 {
            return f.write_str("0s");
        }
        for (u, name) in UNITS {
            if n % u == 0 {
                return write!(f, "{}{name}", n / u);
            }
        }
        write!(f, "{}ns", n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(Span::parse("30s"), Ok(Span::from_secs(30)));
        assert_eq!(Span::parse("250ms"), Ok(Span::from_millis(250)));
        assert_eq!(Span::parse("1h30m"), Ok(Span::from_secs(5400)));
        assert_eq!(Span::parse("7d"), Ok(Span::from_secs(7 * 86400)));
        assert_eq!(Span::parse("0s"), Ok(Span::ZERO));
        assert!(Span::parse("30").unwrap_err().contains("missing unit"));
        assert!(Span::parse("5 minutes").is_err());
        assert!(Span::parse("3w").unwrap_err().contains("unknown unit `w`"));
        assert!(Span::parse("").is_err());
        assert!(Span::parse("99999999999999999999s").is_err());
        assert_eq!(Span::from_secs(90).to_string(), "90s");
        assert_eq!(Span::from_secs(3600).to_string(), "1h");
    }
}
