//! Which partition a key lands in, as pitcrew's producers place it.
//!
//! Stages that attribute keys to partitions without a message in hand (the
//! rules stage's absence rules expect each partition's own inventory nodes;
//! remediation's heartbeat check reads a node's partition) must agree with
//! the producers: librdkafka's default partitioner, `consistent_random`,
//! which for a keyed message is CRC-32 (ISO-HDLC, zlib's) of the key modulo
//! the partition count. Producers that key events by node with another
//! partitioner must say so (see docs/rules.md).

/// The partition of `key` among `partitions` (at least 1).
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(crc32(key.as_bytes()) % n).unwrap_or(0)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        // The standard check value of CRC-32/ISO-HDLC (zlib's crc32).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_key_stays_in_range_and_in_its_partition() {
        for p in 1..40 {
            let q = partition_of("n17", p);
            assert!((0..p).contains(&q));
            assert_eq!(q, partition_of("n17", p));
        }
        assert_eq!(partition_of("anything", 0), 0);
        assert_eq!(partition_of("anything", -3), 0);
    }
}
