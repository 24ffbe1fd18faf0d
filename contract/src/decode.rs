//! Decoding bytes from Kafka into contract types, and encoding back.
//!
//! Decoding never panics and every failure names what is wrong: the size
//! limit, the byte offset of invalid UTF-8, the line and column of a JSON
//! syntax error, or the dotted path of the field that is missing, of the
//! wrong type, or out of range. The fast path is plain serde_json; only a
//! failed decode pays for a second, path-tracking pass.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::{DATA_PREFIX, DATA_SEPARATOR, FIELD_PREFIX, UNKNOWN_KIND};
use crate::version::{UNSUPPORTED_VERSION, WIRE_VERSION};

/// Default upper bound on one message, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why bytes could not be decoded. Every variant is permanent: the same
/// bytes will fail the same way, so the message goes to the dead-letter
/// topic rather than being retried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, over the {limit}-byte limit")]
    Oversize { size: usize, limit: usize },
    #[error("invalid utf-8 at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("malformed json at line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unsupported version {found} in field `v` (this build reads version {supported})")]
    UnsupportedVersion { found: String, supported: u64 },
    #[error("unknown event kind {found} in field `kind`")]
    UnknownKind { found: String },
    #[error("missing field `{field}`")]
    MissingField { field: String },
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
}

impl DecodeError {
    /// The dotted path of the offending field, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::MissingField { field } | DecodeError::InvalidField { field, .. } => {
                Some(field)
            }
            DecodeError::UnsupportedVersion { .. } => Some("v"),
            DecodeError::UnknownKind { .. } => Some("kind"),
            _ => None,
        }
    }

    /// Decode errors are never worth retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// A short, bounded label for metrics (`reason` label of DLQ counters).
    pub fn reason_label(&self) -> &'static str {
        match self {
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::Syntax { .. } => "syntax",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::UnknownKind { .. } => "unknown_kind",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
        }
    }
}

/// Decodes one message of type `T`, rejecting messages over `limit` bytes.
pub fn decode_with_limit<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::Oversize {
            size: bytes.len(),
            limit,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(fast) => Err(explain::<T>(text, fast)),
    }
}

/// Decodes one message of type `T` under [`DEFAULT_MAX_MESSAGE_BYTES`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with_limit(bytes, DEFAULT_MAX_MESSAGE_BYTES)
}

/// Encodes a contract value as compact JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Contract types serialise infallibly: no maps with non-string keys,
    // no custom serialisers that error.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The slow path: decode again tracking the field path, then classify.
fn explain<T: DeserializeOwned>(text: &str, fast: serde_json::Error) -> DecodeError {
    if fast.is_syntax() || fast.is_eof() {
        return syntax(&fast);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => return syntax(&fast),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return syntax(&inner);
    }
    classify(&path, &message_without_position(&inner))
}

fn syntax(e: &serde_json::Error) -> DecodeError {
    DecodeError::Syntax {
        line: e.line(),
        column: e.column(),
        message: message_without_position(e),
    }
}

fn classify(path: &str, message: &str) -> DecodeError {
    if let Some(rest) = message.strip_prefix(DATA_PREFIX) {
        let (inner_path, inner_message) = rest.split_once(DATA_SEPARATOR).unwrap_or(("", rest));
        let inner_message = inner_message
            .rsplit_once(" at line ")
            .map_or(inner_message, |(m, _)| m);
        return classify(&join("data", inner_path), inner_message);
    }
    if let Some(found) = message.strip_prefix(UNSUPPORTED_VERSION) {
        return DecodeError::UnsupportedVersion {
            found: found.to_owned(),
            supported: WIRE_VERSION,
        };
    }
    if let Some(found) = message.strip_prefix(UNKNOWN_KIND) {
        return DecodeError::UnknownKind {
            found: found.to_owned(),
        };
    }
    if let Some(rest) = message.strip_prefix(FIELD_PREFIX) {
        let (field, msg) = rest.split_once(": ").unwrap_or((rest, "invalid"));
        return DecodeError::InvalidField {
            field: join(path, field),
            message: msg.to_owned(),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return DecodeError::MissingField {
            field: join(path, field),
        };
    }
    DecodeError::InvalidField {
        field: if path.is_empty() || path == "." {
            "(message)".to_owned()
        } else {
            path.to_owned()
        },
        message: message.to_owned(),
    }
}

fn join(path: &str, field: &str) -> String {
    match (path, field) {
        ("" | ".", f) => f.to_owned(),
        (p, "" | ".") => p.to_owned(),
        (p, f) => format!("{p}.{f}"),
    }
}

fn message_without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rsplit_once(" at line ") {
        Some((m, _)) => m.to_owned(),
        None => full,
    }
}
