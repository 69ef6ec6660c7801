//! virtio-blk: a block device over a [`BlockBackend`].
//!
//! The device offers the virtio 1.x block features QEMU's `virtio-blk-pci`
//! offers by default (segment limit, block size, flush, discard, write
//! zeroes, multiple queues, event index, read-only when the backend is).
//! Guest I/O never runs on a vCPU thread: [`VirtioBlock::activate`] spawns
//! one I/O thread, `virtio-blk-<id>`, which waits on the queues' notify
//! eventfds and serves the requests (see [`worker`]).

pub mod control;
pub mod policy;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use log::error;
use petrel_block::BlockBackend;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_blk;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

pub use control::{DiskControl, DiskEvents, IoErrorReport, IoStatus};
pub use policy::{ErrorAction, ErrorOutcome, ErrorPolicy};

use super::bit;
use super::io_thread::IoThread;
use super::{
    read_config_space, ActivatedQueue, GuestMemory, VirtioDevice, VirtioDeviceError,
    VirtioInterrupt, VirtioInterruptType, TYPE_BLOCK, VIRTIO_F_VERSION_1,
};

/// Sector size of the virtio-blk protocol, whatever the logical block size.
pub const SECTOR_SIZE: u64 = 512;
/// `log2(SECTOR_SIZE)`.
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the serial GET_ID returns.
pub const ID_BYTES: usize = virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Default queue size (QEMU's `queue-size`).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Largest number of sectors one discard or write-zeroes segment may cover
/// (QEMU's default, `BDRV_REQUEST_MAX_SECTORS`).
pub const MAX_DISCARD_SECTORS: u32 = (i32::MAX as u32) >> SECTOR_SHIFT;
/// Largest number of segments in one discard request.
pub const MAX_DISCARD_SEG: u32 = 1;
/// Largest number of segments in one write-zeroes request.
pub const MAX_WRITE_ZEROES_SEG: u32 = 1;
/// Length of the configuration space this device exposes (up to
/// `unused1`, virtio 1.1 layout).
pub const CONFIG_LEN: usize = 60;

/// Why a block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VirtioBlockError {
    /// `num-queues` must be at least 1.
    #[error("num-queues must be at least 1")]
    NoQueues,
    /// `queue-size` must be a power of two between 4 and 32768 (seg_max is
    /// `queue-size - 2`).
    #[error("queue-size must be a power of two between 4 and 32768, got {0}")]
    QueueSize(u16),
    /// The device's eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// How to create a [`VirtioBlock`] (QEMU's `-device virtio-blk-pci`
/// properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockParams {
    /// `serial`: returned by GET_ID, truncated to [`ID_BYTES`].
    pub serial: Option<String>,
    /// `num-queues`.
    pub num_queues: u16,
    /// `queue-size`.
    pub queue_size: u16,
    /// How writes, flushes and discards reach the image.
    pub cache: CacheMode,
}

impl Default for BlockParams {
    fn default() -> Self {
        BlockParams {
            serial: None,
            num_queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
            cache: CacheMode::default(),
        }
    }
}

/// How a disk's writes, flushes and discards reach its image (QEMU's `cache=` and
/// `discard=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheMode {
    /// Writes may stay in the host's cache until a flush; off flushes after every write
    /// (`cache=writethrough`, `directsync`).
    pub writeback: bool,
    /// Flush requests succeed without flushing (`cache=unsafe`).
    pub ignore_flush: bool,
    /// Discards reach the image (`discard=unmap`); otherwise they succeed doing nothing.
    pub discard: bool,
}

impl Default for CacheMode {
    fn default() -> Self {
        CacheMode {
            writeback: true,
            ignore_flush: false,
            discard: true,
        }
    }
}

/// The device configuration space (`struct virtio_blk_config`), native
/// values; [`Self::to_bytes`] gives the little-endian layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VirtioBlockConfig {
    /// Disk size in 512-byte sectors.
    pub capacity: u64,
    /// Largest segment size (unused: SIZE_MAX not offered).
    pub size_max: u32,
    /// Largest number of data segments in a request.
    pub seg_max: u32,
    /// Logical block size.
    pub blk_size: u32,
    /// Number of request queues.
    pub num_queues: u16,
    /// Largest discard segment, in sectors.
    pub max_discard_sectors: u32,
    /// Largest number of discard segments.
    pub max_discard_seg: u32,
    /// Discard alignment, in sectors.
    pub discard_sector_alignment: u32,
    /// Largest write-zeroes segment, in sectors.
    pub max_write_zeroes_sectors: u32,
    /// Largest number of write-zeroes segments.
    pub max_write_zeroes_seg: u32,
    /// Whether write zeroes with the unmap flag may deallocate.
    pub write_zeroes_may_unmap: u8,
}

impl VirtioBlockConfig {
    /// The configuration space bytes.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            b[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &self.capacity.to_le_bytes());
        put(8, &self.size_max.to_le_bytes());
        put(12, &self.seg_max.to_le_bytes());
        // 16..20: geometry (not offered).
        put(20, &self.blk_size.to_le_bytes());
        // 24..32: topology (not offered); 32: writeback; 33: unused0.
        put(34, &self.num_queues.to_le_bytes());
        put(36, &self.max_discard_sectors.to_le_bytes());
        put(40, &self.max_discard_seg.to_le_bytes());
        put(44, &self.discard_sector_alignment.to_le_bytes());
        put(48, &self.max_write_zeroes_sectors.to_le_bytes());
        put(52, &self.max_write_zeroes_seg.to_le_bytes());
        put(56, &[self.write_zeroes_may_unmap]);
        b
    }
}

/// What a migration or snapshot saves of a block device (the queues are
/// the transport's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioBlockState {
    /// Features offered.
    pub avail_features: u64,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The configuration space.
    pub config: VirtioBlockConfig,
}

/// A virtio-blk device.
pub struct VirtioBlock {
    id: String,
    backend: Arc<BlockBackend>,
    cache: CacheMode,
    control: Arc<DiskControl>,
    serial: [u8; ID_BYTES],
    queue_sizes: Vec<u16>,
    avail_features: u64,
    acked_features: u64,
    config: VirtioBlockConfig,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    worker: Option<IoThread>,
}

impl std::fmt::Debug for VirtioBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlock")
            .field("id", &self.id)
            .field("backend", &self.backend.name())
            .field("config", &self.config)
            .field("acked_features", &self.acked_features)
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl VirtioBlock {
    /// Creates a device called `id` (its I/O thread is `virtio-blk-<id>`)
    /// over `backend`.
    pub fn new(
        id: impl Into<String>,
        backend: Arc<BlockBackend>,
        params: &BlockParams,
    ) -> Result<Self, VirtioBlockError> {
        if params.num_queues == 0 {
            return Err(VirtioBlockError::NoQueues);
        }
        let qs = params.queue_size;
        if !(4..=32768).contains(&qs) || !qs.is_power_of_two() {
            return Err(VirtioBlockError::QueueSize(qs));
        }
        let mut serial = [0u8; ID_BYTES];
        if let Some(s) = &params.serial {
            let n = s.len().min(ID_BYTES);
            serial[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        let mut avail_features = bit(VIRTIO_F_VERSION_1)
            | bit(virtio_blk::VIRTIO_BLK_F_SEG_MAX)
            | bit(virtio_blk::VIRTIO_BLK_F_BLK_SIZE)
            | bit(virtio_blk::VIRTIO_BLK_F_FLUSH)
            | bit(virtio_blk::VIRTIO_BLK_F_DISCARD)
            | bit(virtio_blk::VIRTIO_BLK_F_WRITE_ZEROES)
            | bit(VIRTIO_RING_F_EVENT_IDX);
        if backend.is_read_only() {
            avail_features |= bit(virtio_blk::VIRTIO_BLK_F_RO);
        }
        if params.num_queues > 1 {
            avail_features |= bit(virtio_blk::VIRTIO_BLK_F_MQ);
        }
        let config = VirtioBlockConfig {
            capacity: backend.size() >> SECTOR_SHIFT,
            size_max: 0,
            seg_max: u32::from(qs) - 2,
            blk_size: SECTOR_SIZE as u32,
            num_queues: params.num_queues,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_discard_seg: MAX_DISCARD_SEG,
            discard_sector_alignment: 1,
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_seg: MAX_WRITE_ZEROES_SEG,
            write_zeroes_may_unmap: 1,
        };
        let control = DiskControl::logging().map_err(VirtioBlockError::EventFd)?;
        Ok(VirtioBlock {
            id: id.into(),
            backend,
            cache: params.cache,
            control: Arc::new(control),
            serial,
            queue_sizes: vec![qs; usize::from(params.num_queues)],
            avail_features,
            acked_features: 0,
            config,
            interrupt: None,
            worker: None,
        })
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<BlockBackend> {
        &self.backend
    }

    /// The run-time controls (error policy, I/O status, resume after an error stop).
    pub fn control(&self) -> &Arc<DiskControl> {
        &self.control
    }

    /// Replaces the run-time controls; takes effect at the next activation.
    pub fn set_control(&mut self, control: Arc<DiskControl>) {
        self.control = control;
    }

    /// The configuration space.
    pub fn config(&self) -> &VirtioBlockConfig {
        &self.config
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the I/O thread is running.
    pub fn is_active(&self) -> bool {
        self.worker.is_some()
    }

    /// Re-reads the backend's size (after `block_resize`) into `capacity`
    /// and, if it changed and the device is active, raises a configuration
    /// change interrupt. Returns the new capacity in sectors.
    pub fn resize_notify(&mut self) -> u64 {
        let capacity = self.backend.size() >> SECTOR_SHIFT;
        if capacity != self.config.capacity {
            self.config.capacity = capacity;
            if let Some(interrupt) = &self.interrupt {
                if let Err(e) = interrupt.trigger(VirtioInterruptType::Config) {
                    error!("virtio-blk {}: config interrupt failed: {e}", self.id);
                }
            }
        }
        capacity
    }

    /// The state to save.
    pub fn state(&self) -> VirtioBlockState {
        VirtioBlockState {
            avail_features: self.avail_features,
            acked_features: self.acked_features,
            config: self.config,
        }
    }

    /// Restores saved state (before the transport re-activates the device).
    ///
    /// The capacity is kept from the backend, which is what the
    /// destination really has; the rest of the configuration follows the
    /// source so the guest sees the same device.
    pub fn set_state(&mut self, state: &VirtioBlockState) {
        self.acked_features = state.acked_features & self.avail_features;
        let capacity = self.config.capacity;
        self.config = state.config;
        self.config.capacity = capacity;
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, value: u64) {
        self.acked_features = value & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config.to_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `writeback` is writable in the spec, and only with
        // CONFIG_WCE, which is not offered.
        log::debug!(
            "virtio-blk {}: ignored config write of {} bytes at {offset:#x}",
            self.id,
            data.len()
        );
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
        if queues.is_empty() {
            return Err(VirtioDeviceError::QueueNotEnabled(0));
        }
        let (backend, serial, cache) = (self.backend.clone(), self.serial, self.cache);
        let (control, irq) = (self.control.clone(), interrupt.clone());
        let body = move |stop| {
            let ctx = worker::Context {
                mem,
                read_only: backend.is_read_only(),
                backend,
                serial,
                interrupt: irq,
                cache,
                control,
                stop,
            };
            worker::run(ctx, queues)
        };
        let thread = IoThread::spawn(format!("virtio-blk-{}", self.id), body)
            .map_err(|e| VirtioDeviceError::Backend(Box::new(e)))?;
        self.interrupt = Some(interrupt);
        self.worker = Some(thread);
        Ok(())
    }

    fn reset(&mut self) -> Result<(), VirtioDeviceError> {
        self.worker = None;
        self.interrupt = None;
        self.acked_features = 0;
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
