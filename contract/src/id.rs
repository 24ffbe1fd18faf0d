//! Deterministic ids. The same inputs give the same id in every process and
//! every version of pitcrew, so replays and duplicate deliveries converge.
//!
//! An id is a prefix and the first 16 bytes of SHA-256 over the parts, each
//! part length-prefixed so `("ab","c")` and `("a","bc")` differ.

use sha2::{Digest, Sha256};

/// `prefix-<32 hex digits>` over the given parts.
pub fn deterministic_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(prefix.len() + 33);
    out.push_str(prefix);
    out.push('-');
    for b in &digest[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_unambiguous() {
        let a = deterministic_id("act", &["inc-1", "power_cycle"]);
        assert_eq!(a, deterministic_id("act", &["inc-1", "power_cycle"]));
        assert_eq!(a.len(), 4 + 32);
        assert_ne!(
            deterministic_id("x", &["ab", "c"]),
            deterministic_id("x", &["a", "bc"])
        );
        // Pinned (computed independently): a change here changes every id
        // on the wire, which is a versioned change.
        assert_eq!(
            deterministic_id("act", &["a"]),
            "act-3b196fd4907bedf51c3090e9835f2f7c"
        );
    }
}
