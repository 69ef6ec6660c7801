//! virtio-balloon: the guest gives memory back to the host, and the host asks for it.
//!
//! The host sets a target (`num_pages` in the configuration space, with a configuration
//! change interrupt); the driver inflates the balloon with page frame numbers of memory it
//! no longer uses, or deflates it to take pages back, and reports how many pages the balloon
//! holds in `actual`. Inflated pages are discarded on the host (see [`pages`]), so the VMM's
//! resident memory shrinks. The device offers what QEMU 7.2's `virtio-balloon-pci` offers by
//! default: the stats queue (`VIRTIO_BALLOON_F_STATS_VQ`, see [`stats`]), page poisoning
//! (`VIRTIO_BALLOON_F_PAGE_POISON`, unless `page-poison=off`: the device only records the
//! value), and with
//! `deflate-on-oom=on` `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` (a promise that concerns the driver
//! alone). Queue work never runs on a vCPU thread: [`VirtioBalloon::activate`] spawns one
//! thread, `virtio-balloon-<id>`, which waits on the queues' notify eventfds.

pub mod config;
pub mod pages;
pub mod stats;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use log::error;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use config::BalloonConfig;
pub use pages::{PageRuns, PageSet, PAGE_SHIFT, PAGE_SIZE};
pub use stats::{GuestStats, STAT_NAMES};

use super::bit;
use super::io_thread::IoThread;
use super::{
    ActivatedQueue, GuestMemory, VirtioDevice, VirtioDeviceError, VirtioInterrupt,
    VirtioInterruptType, TYPE_BALLOON, VIRTIO_F_VERSION_1,
};
use crate::Stateful;

/// Feature bit: the driver tells the host before it reuses deflated pages (not offered).
pub const F_MUST_TELL_HOST: u32 = 0;
/// Feature bit: the stats queue.
pub const F_STATS_VQ: u32 = 1;
/// Feature bit: the driver deflates the balloon when the guest runs out of memory.
pub const F_DEFLATE_ON_OOM: u32 = 2;
/// Feature bit: the driver tells the device its page poison value.
pub const F_PAGE_POISON: u32 = 4;

/// Queue index of the inflate queue.
pub const INFLATE_QUEUE: usize = 0;
/// Queue index of the deflate queue.
pub const DEFLATE_QUEUE: usize = 1;
/// Queue index of the stats queue.
pub const STATS_QUEUE: usize = 2;
/// Size of every queue (QEMU's).
pub const QUEUE_SIZE: u16 = 128;

/// Largest statistics polling interval, in seconds (QEMU's `UINT_MAX / 1000`).
pub const MAX_POLL_INTERVAL: i64 = (u32::MAX / 1000) as i64;

/// Errors of the balloon's controls.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VirtioBalloonError {
    /// A negative statistics polling interval (QEMU's words).
    #[error("timer value must be greater than zero")]
    NegativeInterval,
    /// A polling interval beyond [`MAX_POLL_INTERVAL`] (QEMU's words).
    #[error("timer value is too big")]
    IntervalTooBig,
    /// State cannot be restored into an active device.
    #[error("the device is active")]
    Active,
}

/// How to create a [`VirtioBalloon`] (QEMU's `-device virtio-balloon-pci` properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonParams {
    /// `deflate-on-oom`: offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` (QEMU: off).
    pub deflate_on_oom: bool,
    /// `page-poison`: offer `VIRTIO_BALLOON_F_PAGE_POISON` (QEMU: on).
    pub page_poison: bool,
}

impl Default for BalloonParams {
    fn default() -> Self {
        BalloonParams {
            deflate_on_oom: false,
            page_poison: true,
        }
    }
}

/// Where the device reports what the driver did.
pub trait BalloonEvents: Send + Sync {
    /// The driver wrote a new `actual`: the balloon holds `actual` pages. Called on the vCPU
    /// thread that wrote it, as often as the value changes.
    fn actual_changed(&self, actual: u32);
}

/// A [`BalloonEvents`] that only logs.
struct LogOnly;

impl BalloonEvents for LogOnly {
    fn actual_changed(&self, actual: u32) {
        log::debug!("virtio-balloon: actual={actual} pages");
    }
}

/// What the device and its thread share.
pub(crate) struct Shared {
    /// The frames in the balloon.
    pages: Mutex<PageSet>,
    /// The last statistics.
    stats: Mutex<GuestStats>,
    /// The statistics polling interval in seconds; 0: off.
    poll_interval: AtomicU32,
    /// Signalled when `poll_interval` changes.
    poll_changed: EventFd,
}

impl Shared {
    fn pages(&self) -> std::sync::MutexGuard<'_, PageSet> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, GuestStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a migration or snapshot saves of a balloon (the queues are the transport's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioBalloonState {
    /// Features offered.
    pub avail_features: u64,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The configuration space.
    pub config: BalloonConfig,
    /// The frames in the balloon.
    pub pages: PageRuns,
    /// The last statistics.
    pub stats: GuestStats,
    /// The statistics polling interval, seconds.
    pub stats_poll_interval: u32,
}

/// A virtio-balloon device.
pub struct VirtioBalloon {
    id: String,
    avail_features: u64,
    acked_features: u64,
    config: BalloonConfig,
    events: Arc<dyn BalloonEvents>,
    shared: Arc<Shared>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    worker: Option<IoThread>,
}

impl std::fmt::Debug for VirtioBalloon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBalloon")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("acked_features", &self.acked_features)
            .field("active", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioBalloon {
    /// Creates a device called `id` (its thread is `virtio-balloon-<id>`) reporting to
    /// `events`.
    pub fn new(
        id: impl Into<String>,
        params: BalloonParams,
        events: Option<Arc<dyn BalloonEvents>>,
    ) -> std::io::Result<Self> {
        let mut avail_features =
            bit(VIRTIO_F_VERSION_1) | bit(F_STATS_VQ) | bit(VIRTIO_RING_F_EVENT_IDX);
        if params.deflate_on_oom {
            avail_features |= bit(F_DEFLATE_ON_OOM);
        }
        if params.page_poison {
            avail_features |= bit(F_PAGE_POISON);
        }
        Ok(VirtioBalloon {
            id: id.into(),
            avail_features,
            acked_features: 0,
            config: BalloonConfig::default(),
            events: events.unwrap_or_else(|| Arc::new(LogOnly)),
            shared: Arc::new(Shared {
                pages: Mutex::new(PageSet::default()),
                stats: Mutex::new(GuestStats::default()),
                poll_interval: AtomicU32::new(0),
                poll_changed: EventFd::new(EFD_NONBLOCK)?,
            }),
            interrupt: None,
            worker: None,
        })
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration space.
    pub fn config(&self) -> &BalloonConfig {
        &self.config
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the queue thread is running (the driver set `DRIVER_OK`).
    pub fn is_active(&self) -> bool {
        self.worker.is_some()
    }

    /// Sets the target, `num_pages`, and signals a configuration change if the driver is
    /// running: like QEMU, even when the value did not change.
    pub fn set_target(&mut self, num_pages: u32) {
        self.config.num_pages = num_pages;
        if let Some(interrupt) = &self.interrupt {
            if let Err(e) = interrupt.trigger(VirtioInterruptType::Config) {
                error!("virtio-balloon {}: config interrupt failed: {e}", self.id);
            }
        }
    }

    /// Pages in the balloon, as the driver reports them (`actual`).
    pub fn actual(&self) -> u32 {
        self.config.actual
    }

    /// Pages the device has discarded for the balloon and not had back: the frames of guest
    /// RAM the driver inflated and has not deflated since.
    pub fn ballooned_pages(&self) -> u64 {
        self.shared.pages().count()
    }

    /// The last statistics the guest reported.
    pub fn guest_stats(&self) -> GuestStats {
        *self.shared.stats()
    }

    /// The statistics polling interval, in seconds (0: off).
    pub fn stats_poll_interval(&self) -> u32 {
        self.shared.poll_interval.load(Ordering::Acquire)
    }

    /// Sets the statistics polling interval, in seconds, as QEMU's
    /// `guest-stats-polling-interval` property does: 0 stops polling; turning it on asks for
    /// statistics at once, then every `secs` seconds after each answer.
    pub fn set_stats_poll_interval(&self, secs: i64) -> Result<(), VirtioBalloonError> {
        if secs < 0 {
            return Err(VirtioBalloonError::NegativeInterval);
        }
        let secs = u32::try_from(secs)
            .ok()
            .filter(|s| i64::from(*s) <= MAX_POLL_INTERVAL)
            .ok_or(VirtioBalloonError::IntervalTooBig)?;
        self.shared.poll_interval.store(secs, Ordering::Release);
        if let Err(e) = self.shared.poll_changed.write(1) {
            error!(
                "virtio-balloon {}: cannot wake the queue thread: {e}",
                self.id
            );
        }
        Ok(())
    }
}

impl VirtioDevice for VirtioBalloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, value: u64) {
        self.acked_features = value & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let old = self.config.actual;
        let poison = self.acked_features & bit(F_PAGE_POISON) != 0;
        self.config.write(offset, data, poison);
        if self.config.actual != old {
            self.events.actual_changed(self.config.actual);
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<ActivatedQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioDeviceError> {
        if self.worker.is_some() {
            return Err(VirtioDeviceError::AlreadyActive);
        }
        let (id, shared, irq) = (self.id.clone(), self.shared.clone(), interrupt.clone());
        let body = move |stop| {
            let ctx = worker::Context {
                id,
                mem,
                interrupt: irq,
                shared,
                stop,
            };
            worker::run(ctx, queues)
        };
        let thread = IoThread::spawn(format!("virtio-balloon-{}", self.id), body)
            .map_err(|e| VirtioDeviceError::Backend(Box::new(e)))?;
        self.interrupt = Some(interrupt);
        self.worker = Some(thread);
        Ok(())
    }

    /// As QEMU's reset: the target and `actual` stay (the host still wants its memory); the
    /// poison value and a statistics buffer the device held are dropped, and so is the record
    /// of ballooned frames (a new driver starts with all of its memory; what was discarded
    /// comes back zero-filled on its first touch).
    fn reset(&mut self) -> Result<(), VirtioDeviceError> {
        self.worker = None;
        self.interrupt = None;
        self.acked_features = 0;
        self.config.poison_val = 0;
        self.shared.pages().clear();
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Stateful for VirtioBalloon {
    type State = VirtioBalloonState;
    type Error = VirtioBalloonError;

    fn save_state(&self) -> VirtioBalloonState {
        VirtioBalloonState {
            avail_features: self.avail_features,
            acked_features: self.acked_features,
            config: self.config,
            pages: self.shared.pages().runs(),
            stats: self.guest_stats(),
            stats_poll_interval: self.stats_poll_interval(),
        }
    }

    /// Restores into a device that is not active (before the transport re-activates it).
    fn restore_state(&mut self, state: VirtioBalloonState) -> Result<(), VirtioBalloonError> {
        if self.worker.is_some() {
            return Err(VirtioBalloonError::Active);
        }
        let interval = i64::from(state.stats_poll_interval);
        if interval > MAX_POLL_INTERVAL {
            return Err(VirtioBalloonError::IntervalTooBig);
        }
        self.acked_features = state.acked_features & self.avail_features;
        self.config = state.config;
        *self.shared.pages() = PageSet::from_runs(&state.pages);
        *self.shared.stats() = state.stats;
        self.shared
            .poll_interval
            .store(state.stats_poll_interval, Ordering::Release);
        Ok(())
    }
}
