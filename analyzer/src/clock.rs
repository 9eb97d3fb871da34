//! Where the analysis reads the wall clock: the system's, or one a test
//! sets and advances, so that alert windows and forgetting can be driven
//! without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock in Unix nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stands at `start_ns` until [`Clock::advance`]d (its
    /// clones advance with it).
    pub fn manual(start_ns: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ns))),
        }
    }

    /// Now, in Unix nanoseconds.
    pub fn now_ns(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => system_ns(),
        }
    }

    /// Moves a manual clock forward; the system clock moves by itself.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(i64::try_from(by.as_nanos()).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }
}

/// The system clock now, in Unix nanoseconds (0 before 1970).
pub fn system_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_with_it() {
        let c = Clock::manual(1_000);
        let twin = c.clone();
        assert_eq!(c.now_ns(), 1_000);
        c.advance(Duration::from_micros(2));
        assert_eq!((c.now_ns(), twin.now_ns()), (3_000, 3_000));
        let system = Clock::system();
        let before = system_ns();
        system.advance(Duration::from_secs(3600));
        assert!((before..before + 60_000_000_000).contains(&system.now_ns()));
    }
}
