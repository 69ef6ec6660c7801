//! Per-backend I/O statistics, updated lock-free from I/O threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Kinds of request a backend accounts, as QEMU's `BlockAcctType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// A read.
    Read,
    /// A write (write-zeroes included, as QEMU's virtio-blk accounts them).
    Write,
    /// A flush.
    Flush,
    /// A discard (unmap).
    Unmap,
}

/// Counters for one kind of request.
#[derive(Debug, Default)]
struct KindCounters {
    bytes: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
    total_ns: AtomicU64,
}

/// Monotonic nanoseconds since the first use of this module.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let nanos = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// Statistics of one backend (`query-blockstats`' `BlockDeviceStats`).
#[derive(Debug, Default)]
pub struct BlockStats {
    rd: KindCounters,
    wr: KindCounters,
    flush: KindCounters,
    unmap: KindCounters,
    wr_highest_offset: AtomicU64,
    /// `now_ns() + 1` of the last completed request; 0 if none yet.
    last_access: AtomicU64,
}

/// A started request; finish it with [`BlockStats::done`] or [`BlockStats::failed`].
#[derive(Debug)]
#[must_use = "an accounted request must be finished"]
pub struct Acct {
    kind: IoKind,
    bytes: u64,
    start: Instant,
}

/// A copy of the counters, serialised with QEMU's `BlockDeviceStats` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlockStatsSnapshot {
    /// Bytes read.
    pub rd_bytes: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Bytes discarded.
    pub unmap_bytes: u64,
    /// Read requests.
    pub rd_operations: u64,
    /// Write requests.
    pub wr_operations: u64,
    /// Flush requests.
    pub flush_operations: u64,
    /// Discard requests.
    pub unmap_operations: u64,
    /// Time spent reading, ns.
    pub rd_total_time_ns: u64,
    /// Time spent writing, ns.
    pub wr_total_time_ns: u64,
    /// Time spent flushing, ns.
    pub flush_total_time_ns: u64,
    /// Time spent discarding, ns.
    pub unmap_total_time_ns: u64,
    /// End of the highest write.
    pub wr_highest_offset: u64,
    /// Merged reads (petrel does not merge).
    pub rd_merged: u64,
    /// Merged writes.
    pub wr_merged: u64,
    /// Merged discards.
    pub unmap_merged: u64,
    /// Nanoseconds since the last request completed; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_time_ns: Option<u64>,
    /// Failed reads.
    pub failed_rd_operations: u64,
    /// Failed writes.
    pub failed_wr_operations: u64,
    /// Failed flushes.
    pub failed_flush_operations: u64,
    /// Failed discards.
    pub failed_unmap_operations: u64,
    /// Refused reads (out of range).
    pub invalid_rd_operations: u64,
    /// Refused writes (out of range or read-only).
    pub invalid_wr_operations: u64,
    /// Refused flushes.
    pub invalid_flush_operations: u64,
    /// Refused discards.
    pub invalid_unmap_operations: u64,
    /// Whether invalid requests are counted.
    pub account_invalid: bool,
    /// Whether failed requests are counted.
    pub account_failed: bool,
    /// Interval statistics (none are configured).
    pub timed_stats: Vec<NoTimedStats>,
}

/// Element type of `timed_stats`, which is always empty: petrel configures no intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NoTimedStats {}

impl BlockStats {
    /// Fresh, zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn counters(&self, kind: IoKind) -> &KindCounters {
        match kind {
            IoKind::Read => &self.rd,
            IoKind::Write => &self.wr,
            IoKind::Flush => &self.flush,
            IoKind::Unmap => &self.unmap,
        }
    }

    /// Starts accounting a request of `bytes` bytes.
    pub fn start(&self, kind: IoKind, bytes: u64) -> Acct {
        Acct {
            kind,
            bytes,
            start: Instant::now(),
        }
    }

    fn finish(&self, acct: &Acct) -> &KindCounters {
        let c = self.counters(acct.kind);
        let ns = u64::try_from(acct.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.last_access.store(now_ns() + 1, Ordering::Relaxed);
        c
    }

    /// Completes `acct` successfully.
    pub fn done(&self, acct: Acct) {
        let c = self.finish(&acct);
        c.ops.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(acct.bytes, Ordering::Relaxed);
    }

    /// Completes `acct` with an I/O error.
    pub fn failed(&self, acct: Acct) {
        self.finish(&acct).failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused before it started.
    pub fn invalid(&self, kind: IoKind) {
        self.counters(kind).invalid.fetch_add(1, Ordering::Relaxed);
        self.last_access.store(now_ns() + 1, Ordering::Relaxed);
    }

    /// Records a write reaching up to `end`.
    pub fn wrote_up_to(&self, end: u64) {
        self.wr_highest_offset.fetch_max(end, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters (each counter is read atomically).
    pub fn snapshot(&self) -> BlockStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&self.last_access);
        BlockStatsSnapshot {
            rd_bytes: get(&self.rd.bytes),
            wr_bytes: get(&self.wr.bytes),
            unmap_bytes: get(&self.unmap.bytes),
            rd_operations: get(&self.rd.ops),
            wr_operations: get(&self.wr.ops),
            flush_operations: get(&self.flush.ops),
            unmap_operations: get(&self.unmap.ops),
            rd_total_time_ns: get(&self.rd.total_ns),
            wr_total_time_ns: get(&self.wr.total_ns),
            flush_total_time_ns: get(&self.flush.total_ns),
            unmap_total_time_ns: get(&self.unmap.total_ns),
            wr_highest_offset: get(&self.wr_highest_offset),
            rd_merged: 0,
            wr_merged: 0,
            unmap_merged: 0,
            idle_time_ns: (last != 0).then(|| now_ns().saturating_sub(last - 1)),
            failed_rd_operations: get(&self.rd.failed),
            failed_wr_operations: get(&self.wr.failed),
            failed_flush_operations: get(&self.flush.failed),
            failed_unmap_operations: get(&self.unmap.failed),
            invalid_rd_operations: get(&self.rd.invalid),
            invalid_wr_operations: get(&self.wr.invalid),
            invalid_flush_operations: get(&self.flush.invalid),
            invalid_unmap_operations: get(&self.unmap.invalid),
            account_invalid: true,
            account_failed: true,
            timed_stats: Vec::new(),
        }
    }

    /// Time since the last completed request, if there was one.
    pub fn idle_time(&self) -> Option<Duration> {
        self.snapshot().idle_time_ns.map(Duration::from_nanos)
    }
}
