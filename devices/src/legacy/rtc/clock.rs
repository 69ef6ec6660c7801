//! The wall clock the RTC follows.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time for the RTC.
///
/// The host clock is the default; another source makes the RTC follow a
/// different base (or a test's fake time).
pub trait WallClock: Send {
    /// Nanoseconds since 1970-01-01T00:00:00Z, negative before it.
    fn now_ns(&self) -> i128;
}

/// The host's real-time clock, read as UTC (QEMU's `-rtc base=utc`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock;

impl WallClock for HostClock {
    fn now_ns(&self) -> i128 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        }
    }
}
