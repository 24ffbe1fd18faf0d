//! The `"v"` field every message carries.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u64 = 1;

/// Prefix of the serde error a wrong version produces; `decode` turns it
/// into [`crate::DecodeError::UnsupportedVersion`].
pub(crate) const UNSUPPORTED_VERSION: &str = "unsupported version ";

/// Marker for `"v": 1`. Deserialising any other number fails with a precise
/// error before the rest of the message is read (writers put `v` first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(WIRE_VERSION)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == WIRE_VERSION {
            Ok(V1)
        } else {
            Err(de::Error::custom(format_args!("{UNSUPPORTED_VERSION}{v}")))
        }
    }
}
