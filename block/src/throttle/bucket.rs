//! QEMU's leaky buckets (util/throttle.c), driven by an explicit clock.
//!
//! Each bucket has a `level` that requests fill and that leaks at the sustained
//! rate. A request may go while every bucket it fills is not over its capacity
//! (burst rate × burst length); it is accounted after it goes, so one request
//! may overfill a bucket and the next waits until enough has leaked. With a
//! burst length above one second, a second level (`burst_level`) leaking at the
//! burst rate keeps the burst itself at that rate.

use std::time::Duration;

use super::config::{BucketKind, ThrottleConfig};

const NANOS_PER_SEC: f64 = 1e9;

/// One bucket's state.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    avg: f64,
    max: f64,
    burst_length: f64,
    level: f64,
    burst_level: f64,
}

impl Bucket {
    /// A bucket with QEMU's implicit burst: without a `max`, a tenth of a second at `avg`
    /// (smooths the pattern of schedulers that batch reads and writes).
    fn new(avg: i64, max: i64, burst_length: u64) -> Self {
        let avg = avg as f64;
        let max = if max == 0 { avg / 10.0 } else { max as f64 };
        Bucket {
            avg,
            max,
            burst_length: burst_length as f64,
            level: 0.0,
            burst_level: 0.0,
        }
    }

    /// Leaks what `delta_ns` nanoseconds drain.
    fn leak(&mut self, delta_ns: f64) {
        self.level = (self.level - self.avg * delta_ns / NANOS_PER_SEC).max(0.0);
        if self.burst_length > 1.0 {
            self.burst_level = (self.burst_level - self.max * delta_ns / NANOS_PER_SEC).max(0.0);
        }
    }

    /// Nanoseconds before a request may go; 0 if it may go now.
    fn wait_ns(&self) -> f64 {
        if self.avg == 0.0 {
            return 0.0;
        }
        let extra = self.level - self.max * self.burst_length;
        if extra > 0.0 {
            return extra * NANOS_PER_SEC / self.avg;
        }
        if self.burst_length > 1.0 {
            // During a burst, hold to `max` per second with the same tenth-of-a-second slack.
            let extra = self.burst_level - self.max / 10.0;
            if extra > 0.0 {
                return extra * NANOS_PER_SEC / self.max;
            }
        }
        0.0
    }

    /// Accounts `units` (bytes or operations).
    fn fill(&mut self, units: f64) {
        self.level += units;
        if self.burst_length > 1.0 {
            self.burst_level += units;
        }
    }
}

/// The six buckets of one throttled backend.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    buckets: [Bucket; 6],
    op_size: u64,
    previous_leak_ns: u64,
}

impl Limiter {
    /// Empty buckets for `config`, as of `now_ns`.
    pub(crate) fn new(config: &ThrottleConfig, now_ns: u64) -> Self {
        let buckets = BucketKind::ALL.map(|kind| {
            let b = config.bucket(kind);
            Bucket::new(b.avg, b.max, b.burst_length)
        });
        Limiter {
            buckets,
            op_size: config.iops_size,
            previous_leak_ns: now_ns,
        }
    }

    /// At `now_ns`, lets a request of `bytes` in direction `write` go and accounts it, or
    /// says how long to wait before asking again (accounting nothing).
    pub(crate) fn admit(&mut self, now_ns: u64, write: bool, bytes: u64) -> Result<(), Duration> {
        // A clock that went backwards leaks nothing, as in QEMU.
        let delta = now_ns.saturating_sub(self.previous_leak_ns);
        self.previous_leak_ns = self.previous_leak_ns.max(now_ns);
        if delta > 0 {
            for b in &mut self.buckets {
                b.leak(delta as f64);
            }
        }
        let wait = BucketKind::ALL
            .iter()
            .zip(&self.buckets)
            .filter(|(kind, _)| kind.applies_to(write))
            .map(|(_, b)| b.wait_ns())
            .fold(0.0, f64::max);
        // QEMU truncates the wait to whole nanoseconds: below one, the request goes.
        if wait >= 1.0 {
            return Err(Duration::from_nanos(wait as u64));
        }
        let ops = if self.op_size != 0 && bytes > self.op_size {
            bytes as f64 / self.op_size as f64
        } else {
            1.0
        };
        for (kind, b) in BucketKind::ALL.iter().zip(&mut self.buckets) {
            if kind.applies_to(write) {
                b.fill(if kind.counts_ops() { ops } else { bytes as f64 });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MIB: u64 = 1 << 20;

    /// A client that always has a request of `bytes` ready in direction `write` and
    /// retries exactly when told; returns the admission times in ns over `[from, to)`.
    fn saturate(
        limiter: &mut Limiter,
        write: bool,
        bytes: u64,
        (from, to): (u64, u64),
    ) -> Vec<u64> {
        let mut now = from;
        let mut admitted = Vec::new();
        while now < to {
            match limiter.admit(now, write, bytes) {
                Ok(()) => admitted.push(now),
                Err(wait) => now += u64::try_from(wait.as_nanos()).unwrap(),
            }
        }
        admitted
    }

    /// Checks that `times` hold `per_sec` admissions a second over `[from, to)`, within
    /// `tolerance` (a fraction).
    fn check(times: &[u64], (from, to): (u64, u64), per_sec: f64, tolerance: f64) {
        let n = times.iter().filter(|&&t| t >= from && t < to).count();
        let got = n as f64 * SEC as f64 / (to - from) as f64;
        let err = (got - per_sec).abs() / per_sec;
        assert!(
            err <= tolerance,
            "[{from}, {to}): {got:.1}/s, want {per_sec:.1}/s"
        );
    }

    fn limiter(cfg: ThrottleConfig) -> Limiter {
        Limiter::new(&cfg, 0)
    }

    #[test]
    fn bps_limit_holds_over_seconds() {
        let bps = MIB as i64;
        let times = saturate(
            &mut limiter(ThrottleConfig {
                bps,
                ..Default::default()
            }),
            false,
            4096,
            (0, 10 * SEC),
        );
        let want = (MIB / 4096) as f64;
        check(&times, (0, 2 * SEC), want, 0.10);
        check(&times, (SEC, 10 * SEC), want, 0.01);
        // The implicit burst is a tenth of a second's worth, plus the request that overfills.
        let first = times.iter().filter(|&&t| t == 0).count() as u64;
        assert_eq!(first, MIB / 10 / 4096 + 1);
    }

    #[test]
    fn iops_limit_and_iops_size() {
        let iops = ThrottleConfig {
            iops: 100,
            ..Default::default()
        };
        let times = saturate(&mut limiter(iops.clone()), true, MIB, (0, 10 * SEC));
        check(&times, (0, 2 * SEC), 100.0, 0.10);
        check(&times, (SEC, 10 * SEC), 100.0, 0.01);

        // With iops_size 4096, a 16 KiB request counts as four operations...
        let sized = ThrottleConfig {
            iops_size: 4096,
            ..iops
        };
        let times = saturate(&mut limiter(sized.clone()), true, 16384, (0, 10 * SEC));
        check(&times, (SEC, 10 * SEC), 25.0, 0.02);
        // ...and a smaller one still as one.
        let times = saturate(&mut limiter(sized), true, 512, (0, 10 * SEC));
        check(&times, (SEC, 10 * SEC), 100.0, 0.01);
    }

    #[test]
    fn read_and_write_limits_are_separate() {
        let (bps_rd, bps_wr) = (MIB as i64, 3 * MIB as i64);
        let mut l = limiter(ThrottleConfig {
            bps_rd,
            bps_wr,
            ..Default::default()
        });
        // Interleave a saturating reader and writer on one clock.
        let (mut next_rd, mut next_wr) = (0u64, 0u64);
        let (mut rd, mut wr) = (Vec::new(), Vec::new());
        while next_rd.min(next_wr) < 10 * SEC {
            let write = next_wr < next_rd;
            let now = next_rd.min(next_wr);
            let next = if write { &mut next_wr } else { &mut next_rd };
            let admitted = if write { &mut wr } else { &mut rd };
            match l.admit(now, write, 8192) {
                Ok(()) => admitted.push(now),
                Err(wait) => *next = now + u64::try_from(wait.as_nanos()).unwrap(),
            }
        }
        check(&rd, (SEC, 9 * SEC), (MIB / 8192) as f64, 0.02);
        check(&wr, (SEC, 9 * SEC), (3 * MIB / 8192) as f64, 0.02);
    }

    #[test]
    fn burst_runs_at_max_then_falls_back() {
        let (avg, max, length) = (MIB, 4 * MIB, 2);
        let mut l = limiter(ThrottleConfig {
            bps: avg as i64,
            bps_max: max as i64,
            bps_max_length: length,
            ..Default::default()
        });
        let times = saturate(&mut l, false, 4096, (0, 20 * SEC));
        let (avg_rate, max_rate) = ((avg / 4096) as f64, (max / 4096) as f64);
        // For bps_max_length seconds the burst rate holds.
        check(&times, (0, length * SEC), max_rate, 0.10);
        // The bucket (max * length) fills at max - avg, so the burst ends after
        // max * length / (max - avg) seconds; then the rate is avg again.
        let end = (max * length) as f64 / (max - avg) as f64;
        let end_ns = (end * SEC as f64) as u64;
        check(&times, (0, end_ns - SEC / 10), max_rate, 0.10);
        check(&times, (end_ns + SEC, end_ns + 6 * SEC), avg_rate, 0.02);
        // Idle long enough for the bucket to drain and the burst is available again.
        let again = saturate(&mut l, false, 4096, (30 * SEC, 32 * SEC));
        check(&again, (30 * SEC, 32 * SEC), max_rate, 0.10);
    }

    #[test]
    fn total_limit_covers_both_directions_and_waits_account_nothing() {
        let mut l = limiter(ThrottleConfig {
            iops: 10,
            ..Default::default()
        });
        // The bucket holds one operation (a tenth of a second): two go, then wait.
        assert!(l.admit(0, false, 512).is_ok());
        assert!(l.admit(0, true, 512).is_ok());
        let wait = l.admit(0, true, 512).unwrap_err();
        // Level 2, capacity 1: one operation must leak at 10/s.
        assert_eq!(wait, Duration::from_millis(100));
        // Refusals did not fill the bucket: the wait is still the same.
        assert_eq!(l.admit(0, false, 512).unwrap_err(), wait);
        assert!(l.admit(100_000_000, false, 512).is_ok());
    }

    #[test]
    fn unlimited_config_never_waits() {
        let mut l = limiter(ThrottleConfig::default());
        for _ in 0..10_000 {
            assert!(l.admit(0, true, 1 << 30).is_ok());
        }
    }
}
