//! I/O throttling as QEMU does it (`block_set_io_throttle`, `-drive throttling.*`).
//!
//! A [`Throttle`] does not block: [`Throttle::admit`] either accounts a request
//! and lets it go or says how long to wait, so a device's I/O thread can wait on
//! its own event loop and still react to being stopped. When no limit is set,
//! admission is one relaxed atomic load.

mod bucket;
mod config;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use config::{ThrottleConfig, ThrottleError, MAX_BURST_LENGTH, THROTTLE_VALUE_MAX};

use bucket::Limiter;

/// Limits and bucket state.
#[derive(Debug)]
struct State {
    config: ThrottleConfig,
    limiter: Limiter,
}

/// The throttle of one backend.
#[derive(Debug)]
pub struct Throttle {
    /// Whether any limit is set; read without the lock so unthrottled I/O never contends.
    enabled: AtomicBool,
    state: Mutex<State>,
    /// Origin of the bucket clock.
    epoch: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// An unthrottled throttle.
    pub fn new() -> Self {
        let config = ThrottleConfig::default();
        Throttle {
            enabled: AtomicBool::new(false),
            state: Mutex::new(State {
                limiter: Limiter::new(&config, 0),
                config,
            }),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds on the bucket clock.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and applies `config`; the buckets start empty, as in QEMU.
    pub fn set_config(&self, config: ThrottleConfig) -> Result<(), ThrottleError> {
        config.validate()?;
        let mut state = self.state();
        let enabled = config.is_enabled();
        state.limiter = Limiter::new(&config, self.now_ns());
        state.config = config;
        self.enabled.store(enabled, Ordering::Release);
        Ok(())
    }

    /// The limits in force.
    pub fn config(&self) -> ThrottleConfig {
        self.state().config.clone()
    }

    /// Whether any limit is set.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Lets a request of `bytes` go now and accounts it (`Ok`), or refuses it without
    /// accounting and says after how long to ask again (`Err`).
    pub fn admit(&self, write: bool, bytes: u64) -> Result<(), Duration> {
        // Relaxed suffices: a request racing with a configuration change may see either.
        if !self.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = self.now_ns();
        self.state().limiter.admit(now, write, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn unthrottled_admission_takes_no_lock() {
        let throttle = Throttle::new();
        std::thread::scope(|s| {
            let held = throttle.state();
            let (tx, rx) = mpsc::channel();
            let shared = &throttle;
            s.spawn(move || tx.send(shared.admit(true, 4096)).unwrap());
            // Admission finishes while the lock is held elsewhere.
            let got = rx.recv_timeout(Duration::from_secs(5));
            drop(held);
            assert_eq!(got, Ok(Ok(())));
        });
    }

    #[test]
    fn enabled_admission_uses_the_buckets() {
        let throttle = Throttle::new();
        throttle
            .set_config(ThrottleConfig {
                iops: 1,
                ..Default::default()
            })
            .unwrap();
        assert!(throttle.is_enabled());
        // Capacity is a tenth of an operation: the first goes, the next waits about a second.
        assert_eq!(throttle.admit(false, 1), Ok(()));
        let wait = throttle.admit(false, 1).unwrap_err();
        assert!(wait > Duration::from_millis(800) && wait <= Duration::from_millis(900));
    }
}
