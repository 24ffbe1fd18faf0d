//! PCI addresses, normalised to `dddd:bb:dd.f` in lower case.
//!
//! The kernel's Xid tag writes `0000:2b:00` (no function), NVML writes
//! `00000000:2B:00.0` (32-bit domain, upper case) and lspci writes `2b:00.0`
//! (no domain). Rules join on the address, so every form becomes
//! `0000:2b:00.0`.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A normalised PCI address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// A string that is not a PCI address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid pci address `{0}`: expected [domain:]bus:device[.function] in hex")]
pub struct PciAddressError(String);

fn hex(s: &str, max_len: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl PciAddress {
    /// Accepts `0000:2b:00.0`, `00000000:2B:00.0`, `0000:2b:00` and `2b:00.0`.
    pub fn parse(s: &str) -> Result<Self, PciAddressError> {
        Self::parse_inner(s.trim()).ok_or_else(|| PciAddressError(s.chars().take(64).collect()))
    }

    fn parse_inner(s: &str) -> Option<Self> {
        let (rest, function) = match s.rsplit_once('.') {
            Some((rest, f)) => (rest, hex(f, 1)?),
            None => (s, 0),
        };
        let mut parts = rest.rsplitn(3, ':');
        let device = hex(parts.next()?, 2)?;
        let bus = hex(parts.next()?, 2)?;
        let domain = match parts.next() {
            Some(d) => hex(d, 8)?,
            None => 0,
        };
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(PciAddress {
            domain: u16::try_from(domain).ok()?,
            bus: u8::try_from(bus).ok()?,
            device: u8::try_from(device).ok()?,
            function: u8::try_from(function).ok()?,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for PciAddress {
    type Err = PciAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PciAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pci address string like 0000:3b:00.0")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PciAddress, E> {
                PciAddress::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_every_spelling() {
        for s in [
            "0000:2b:00",
            "00000000:2B:00.0",
            "2b:00.0",
            "0000:2b:00.0",
            " 0000:2B:00.0 ",
        ] {
            assert_eq!(
                PciAddress::parse(s).unwrap().to_string(),
                "0000:2b:00.0",
                "{s}"
            );
        }
        assert_eq!(
            PciAddress::parse("0001:05:1f.7").unwrap().to_string(),
            "0001:05:1f.7"
        );
        // As NVML reported it on a real H100 (ingest/testdata).
        assert_eq!(
            PciAddress::parse("00000000:00:06.0").unwrap().to_string(),
            "0000:00:06.0"
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2b",
            "zz:00.0",
            "0000:2b:20.0",
            "0000:2b:00.8",
            "1:2:3:4",
            "100000000:00:00.0",
            ":00.0",
        ] {
            assert!(PciAddress::parse(s).is_err(), "{s}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(domain: u16, bus: u8, device in 0u8..32, function in 0u8..8) {
            let a = PciAddress { domain, bus, device, function };
            prop_assert_eq!(PciAddress::parse(&a.to_string()).unwrap(), a);
        }
    }
}
