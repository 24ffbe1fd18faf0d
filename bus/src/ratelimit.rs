//! Log rate limiting for noisy, repetitive client errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one message per key through every `every`, counting the rest.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter {
            every: Duration::from_secs(30),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl LogLimiter {
    /// `Some(suppressed since the last one)` when this message may be
    /// logged, None when it is suppressed.
    pub(crate) fn allow(&self, key: &str) -> Option<u64> {
        let Ok(mut seen) = self.seen.lock() else {
            return Some(0);
        };
        // Keys are error codes and facilities: a small, bounded set.
        match seen.get_mut(key) {
            Some((last, suppressed)) if last.elapsed() < self.every => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = Instant::now();
                *suppressed = 0;
                Some(n)
            }
            None => {
                seen.insert(key.to_owned(), (Instant::now(), 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_per_key() {
        let l = LogLimiter {
            every: Duration::from_millis(50),
            seen: Mutex::new(HashMap::new()),
        };
        assert_eq!(l.allow("AllBrokersDown"), Some(0));
        assert_eq!(l.allow("AllBrokersDown"), None);
        assert_eq!(l.allow("AllBrokersDown"), None);
        assert_eq!(l.allow("BrokerTransportFailure"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.allow("AllBrokersDown"), Some(2));
    }
}
