//! The core's own notion of time.
//!
//! The core never reads a clock: the runtime passes the current [`Instant`] into every
//! `handle_*` call and converts at its edge (tokio's clock on the host, the virtual clock
//! in the simulator, the chip's timer in the firmware). Millisecond resolution is enough
//! for every timer the mesh has.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in milliseconds since an arbitrary epoch chosen by the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    millis: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant { millis: 0 };

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant { millis }
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.millis.saturating_sub(earlier.millis))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.millis / 1000, self.millis % 1000)
    }
}

/// A span of time, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            millis: secs * 1000,
        }
    }

    /// The duration in milliseconds.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// The duration scaled by `num / den` (used for backoff and jitter), saturating.
    pub const fn mul_div(self, num: u64, den: u64) -> Self {
        if den == 0 {
            return self;
        }
        Duration {
            millis: self.millis.saturating_mul(num) / den,
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.millis)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            millis: self.millis.saturating_add(rhs.millis),
        }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration {
            millis: self.millis.saturating_add(rhs.millis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t - Instant::from_millis(10), Duration::ZERO);
        assert_eq!(
            Instant::from_millis(u64::MAX) + Duration::from_secs(1),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(
            Duration::from_secs(2).mul_div(3, 2),
            Duration::from_millis(3000)
        );
    }
}
