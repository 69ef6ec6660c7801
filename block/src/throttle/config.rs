//! Throttling limits as QMP `block_set_io_throttle` and `-drive throttling.*` give them,
//! and their validation with QEMU's messages.

/// Largest rate or burst QEMU accepts (`THROTTLE_VALUE_MAX`).
pub const THROTTLE_VALUE_MAX: i64 = 1_000_000_000_000_000;

/// Longest burst length, in seconds: QEMU keeps it in an `unsigned int`.
pub const MAX_BURST_LENGTH: u64 = u32::MAX as u64;

/// Why a throttling configuration is refused; the messages are QEMU's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    /// A total limit is combined with a read or write limit of the same kind.
    #[error("bps/iops/max total values and read/write values cannot be used at the same time")]
    Conflicting,
    /// `iops_size` without any iops limit.
    #[error("iops size requires an iops value to be set")]
    OpSizeWithoutIops,
    /// A rate or burst rate is negative or too large.
    #[error("bps/iops/max values must be within [0, {THROTTLE_VALUE_MAX}]")]
    OutOfRange,
    /// A `_max_length` does not fit QEMU's unsigned int.
    #[error("{0} value must be in the range [0, {MAX_BURST_LENGTH}]")]
    BurstLengthRange(&'static str),
    /// A `_max_length` of 0.
    #[error("the burst length cannot be 0")]
    ZeroBurstLength,
    /// A `_max_length` above 1 without the matching `_max`.
    #[error("burst length set without burst rate")]
    BurstLengthWithoutRate,
    /// A `_max` without the matching rate.
    #[error("bps_max/iops_max require corresponding bps/iops values")]
    MaxWithoutRate,
    /// A `_max` below the matching rate.
    #[error("bps_max/iops_max cannot be lower than bps/iops")]
    MaxBelowRate,
}

/// The I/O limits of a block backend, with QMP `BlockIOThrottle`'s names.
///
/// Rates are per second; 0 means no limit. Rates are signed because QMP's are:
/// validation refuses negative ones with QEMU's message. A `_max` is the burst
/// rate allowed for `_max_length` seconds (0: QEMU's implicit burst of a tenth of
/// a second at the plain rate). The default, all zeroes with burst lengths of 1,
/// disables throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Total bytes per second.
    pub bps: i64,
    /// Read bytes per second.
    pub bps_rd: i64,
    /// Write bytes per second.
    pub bps_wr: i64,
    /// Total operations per second.
    pub iops: i64,
    /// Read operations per second.
    pub iops_rd: i64,
    /// Write operations per second.
    pub iops_wr: i64,
    /// Total bytes per second during a burst.
    pub bps_max: i64,
    /// Read bytes per second during a burst.
    pub bps_rd_max: i64,
    /// Write bytes per second during a burst.
    pub bps_wr_max: i64,
    /// Total operations per second during a burst.
    pub iops_max: i64,
    /// Read operations per second during a burst.
    pub iops_rd_max: i64,
    /// Write operations per second during a burst.
    pub iops_wr_max: i64,
    /// Seconds `bps_max` may last.
    pub bps_max_length: u64,
    /// Seconds `bps_rd_max` may last.
    pub bps_rd_max_length: u64,
    /// Seconds `bps_wr_max` may last.
    pub bps_wr_max_length: u64,
    /// Seconds `iops_max` may last.
    pub iops_max_length: u64,
    /// Seconds `iops_rd_max` may last.
    pub iops_rd_max_length: u64,
    /// Seconds `iops_wr_max` may last.
    pub iops_wr_max_length: u64,
    /// A request larger than this counts as `size / iops_size` operations (0: always one).
    pub iops_size: u64,
    /// Throttle group name; a backend reports its own name when none is given.
    pub group: Option<String>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            bps: 0,
            bps_rd: 0,
            bps_wr: 0,
            iops: 0,
            iops_rd: 0,
            iops_wr: 0,
            bps_max: 0,
            bps_rd_max: 0,
            bps_wr_max: 0,
            iops_max: 0,
            iops_rd_max: 0,
            iops_wr_max: 0,
            bps_max_length: 1,
            bps_rd_max_length: 1,
            bps_wr_max_length: 1,
            iops_max_length: 1,
            iops_rd_max_length: 1,
            iops_wr_max_length: 1,
            iops_size: 0,
            group: None,
        }
    }
}

/// QEMU's six buckets, in QEMU's order (which is also the order errors are found in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketKind {
    BpsTotal,
    BpsRead,
    BpsWrite,
    OpsTotal,
    OpsRead,
    OpsWrite,
}

impl BucketKind {
    /// All buckets, in QEMU's order.
    pub(crate) const ALL: [BucketKind; 6] = [
        BucketKind::BpsTotal,
        BucketKind::BpsRead,
        BucketKind::BpsWrite,
        BucketKind::OpsTotal,
        BucketKind::OpsRead,
        BucketKind::OpsWrite,
    ];

    /// Whether the bucket counts operations rather than bytes.
    pub(crate) fn counts_ops(self) -> bool {
        matches!(
            self,
            BucketKind::OpsTotal | BucketKind::OpsRead | BucketKind::OpsWrite
        )
    }

    /// Whether a request in the direction `write` fills this bucket.
    pub(crate) fn applies_to(self, write: bool) -> bool {
        match self {
            BucketKind::BpsTotal | BucketKind::OpsTotal => true,
            BucketKind::BpsRead | BucketKind::OpsRead => !write,
            BucketKind::BpsWrite | BucketKind::OpsWrite => write,
        }
    }
}

/// One bucket's limits as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketLimits {
    /// Sustained rate.
    pub avg: i64,
    /// Burst rate (0: none).
    pub max: i64,
    /// Burst length in seconds.
    pub burst_length: u64,
}

impl ThrottleConfig {
    /// The limits of bucket `kind`.
    pub(crate) fn bucket(&self, kind: BucketKind) -> BucketLimits {
        let (avg, max, burst_length) = match kind {
            BucketKind::BpsTotal => (self.bps, self.bps_max, self.bps_max_length),
            BucketKind::BpsRead => (self.bps_rd, self.bps_rd_max, self.bps_rd_max_length),
            BucketKind::BpsWrite => (self.bps_wr, self.bps_wr_max, self.bps_wr_max_length),
            BucketKind::OpsTotal => (self.iops, self.iops_max, self.iops_max_length),
            BucketKind::OpsRead => (self.iops_rd, self.iops_rd_max, self.iops_rd_max_length),
            BucketKind::OpsWrite => (self.iops_wr, self.iops_wr_max, self.iops_wr_max_length),
        };
        BucketLimits {
            avg,
            max,
            burst_length,
        }
    }

    /// Whether any limit is set (QEMU's `throttle_enabled`).
    pub fn is_enabled(&self) -> bool {
        BucketKind::ALL.iter().any(|&k| self.bucket(k).avg > 0)
    }

    /// Checks the limits as QEMU's `throttle_is_valid` does, in the same order.
    pub fn validate(&self) -> Result<(), ThrottleError> {
        let lengths = [
            ("bps_max_length", self.bps_max_length),
            ("bps_rd_max_length", self.bps_rd_max_length),
            ("bps_wr_max_length", self.bps_wr_max_length),
            ("iops_max_length", self.iops_max_length),
            ("iops_rd_max_length", self.iops_rd_max_length),
            ("iops_wr_max_length", self.iops_wr_max_length),
        ];
        // QEMU stores these in an unsigned int and would silently truncate; refuse instead.
        if let Some((name, _)) = lengths.iter().find(|(_, v)| *v > MAX_BURST_LENGTH) {
            return Err(ThrottleError::BurstLengthRange(name));
        }
        let conflict = |total: i64, rd: i64, wr: i64| total != 0 && (rd != 0 || wr != 0);
        if conflict(self.bps, self.bps_rd, self.bps_wr)
            || conflict(self.iops, self.iops_rd, self.iops_wr)
            || conflict(self.bps_max, self.bps_rd_max, self.bps_wr_max)
            || conflict(self.iops_max, self.iops_rd_max, self.iops_wr_max)
        {
            return Err(ThrottleError::Conflicting);
        }
        if self.iops_size != 0 && self.iops == 0 && self.iops_rd == 0 && self.iops_wr == 0 {
            return Err(ThrottleError::OpSizeWithoutIops);
        }
        let in_range = |v: i64| (0..=THROTTLE_VALUE_MAX).contains(&v);
        for kind in BucketKind::ALL {
            let b = self.bucket(kind);
            if !in_range(b.avg) || !in_range(b.max) {
                return Err(ThrottleError::OutOfRange);
            }
            if b.burst_length == 0 {
                return Err(ThrottleError::ZeroBurstLength);
            }
            if b.burst_length > 1 && b.max == 0 {
                return Err(ThrottleError::BurstLengthWithoutRate);
            }
            if b.max != 0 && b.avg == 0 {
                return Err(ThrottleError::MaxWithoutRate);
            }
            if b.max != 0 && b.max < b.avg {
                return Err(ThrottleError::MaxBelowRate);
            }
        }
        Ok(())
    }
}
