//! Guest memory statistics from the stats queue (`VIRTIO_BALLOON_F_STATS_VQ`).
//!
//! The protocol is QEMU's: the driver puts one buffer of tagged statistics (`u16` tag,
//! `u64` value, packed: 10 bytes each) on the stats queue once it is ready. The device keeps
//! the buffer; when it wants fresh numbers (every polling interval, if one is set) it gives
//! the buffer back, and the driver answers with a new one.

use serde::{Deserialize, Serialize};

/// Length of one tagged statistic.
pub const STAT_LEN: usize = 10;
/// Number of statistics QEMU 7.2 knows (`VIRTIO_BALLOON_S_NR`).
pub const STAT_COUNT: usize = 10;
/// QEMU's names for the statistics, by tag (as `guest-stats` reports them).
pub const STAT_NAMES: [&str; STAT_COUNT] = [
    "stat-swap-in",
    "stat-swap-out",
    "stat-major-faults",
    "stat-minor-faults",
    "stat-free-memory",
    "stat-total-memory",
    "stat-available-memory",
    "stat-disk-caches",
    "stat-htlb-pgalloc",
    "stat-htlb-pgfail",
];
/// The value of a statistic the guest has not reported.
pub const STAT_UNSET: u64 = u64::MAX;

/// The last statistics the guest reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// Values by tag; [`STAT_UNSET`] for those the guest did not report.
    pub values: [u64; STAT_COUNT],
    /// When the guest last reported, in seconds since the Unix epoch; 0 if it never did.
    pub last_update: i64,
}

impl Default for GuestStats {
    fn default() -> Self {
        GuestStats {
            values: [STAT_UNSET; STAT_COUNT],
            last_update: 0,
        }
    }
}

impl GuestStats {
    /// Replaces every value with what the buffer `bytes` holds, as QEMU does (values the
    /// guest no longer reports become unset; unknown tags and a trailing partial entry are
    /// ignored), stamped `now`.
    pub fn update(&mut self, bytes: &[u8], now: i64) {
        self.values = [STAT_UNSET; STAT_COUNT];
        for entry in bytes.chunks_exact(STAT_LEN) {
            let tag = usize::from(u16::from_le_bytes([entry[0], entry[1]]));
            let mut value = [0u8; 8];
            value.copy_from_slice(&entry[2..STAT_LEN]);
            if let Some(slot) = self.values.get_mut(tag) {
                *slot = u64::from_le_bytes(value);
            }
        }
        self.last_update = now;
    }

    /// `(name, value)` of every statistic, in tag order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        STAT_NAMES.iter().copied().zip(self.values.iter().copied())
    }
}
