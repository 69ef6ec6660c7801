//! Helpers the virtio device tests share.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{VirtioInterrupt, VirtioInterruptType};

/// Records the interrupts a device raises, for a test driver to look at.
#[derive(Default)]
pub struct InterruptRecorder(Mutex<Vec<VirtioInterruptType>>);

impl VirtioInterrupt for InterruptRecorder {
    fn trigger(&self, int_type: VirtioInterruptType) -> std::io::Result<()> {
        self.lock().push(int_type);
        Ok(())
    }
}

impl InterruptRecorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VirtioInterruptType>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the interrupts raised so far.
    pub fn take(&self) -> Vec<VirtioInterruptType> {
        std::mem::take(&mut *self.lock())
    }

    /// Waits until at least `n` interrupts were raised (failing the test after 10 s), then
    /// `quiet` longer for any extra one, and takes them all.
    pub fn take_after(&self, n: usize, quiet: Duration) -> Vec<VirtioInterruptType> {
        wait_for("the interrupts", || self.lock().len() >= n);
        std::thread::sleep(quiet);
        self.take()
    }
}

/// Waits until `cond` holds, looking every millisecond; fails the test, naming `what`, after
/// 10 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
