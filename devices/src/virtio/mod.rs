//! Virtio devices and their PCI transport.
//!
//! A device model (block, net, ...) implements [`VirtioDevice`]: its
//! feature bits, its configuration space and what to do once the driver has
//! set up its queues. The transport ([`pci::VirtioPciDevice`]) runs the
//! virtio 1.x initialisation sequence on the device's behalf, builds the
//! [`virtio_queue::Queue`]s from what the driver programmed, and hands them
//! over on `DRIVER_OK` together with a [`VirtioInterrupt`] to signal the
//! driver.

pub mod balloon;
pub mod block;
pub mod interrupt;
pub mod io_thread;
pub mod net;
pub mod pci;
#[cfg(test)]
pub(crate) mod test_util;

use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::{VirtioInterrupt, VirtioInterruptType};
pub use pci::VirtioPciDevice;

/// Guest memory as devices see it: shared with the VMM and the device's
/// worker threads.
pub type GuestMemory = Arc<vm_memory::GuestMemoryMmap<()>>;

/// Feature bit: the device conforms to virtio 1.x (required by the modern
/// PCI transport).
pub const VIRTIO_F_VERSION_1: u32 = virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// The mask of feature bit `b`.
pub const fn bit(b: u32) -> u64 {
    1 << b
}

/// Device type: network card.
pub const TYPE_NET: u32 = 1;
/// Device type: block device.
pub const TYPE_BLOCK: u32 = 2;
/// Device type: console.
pub const TYPE_CONSOLE: u32 = 3;
/// Device type: entropy source.
pub const TYPE_RNG: u32 = 4;
/// Device type: memory balloon.
pub const TYPE_BALLOON: u32 = 5;
/// Device type: SCSI host.
pub const TYPE_SCSI: u32 = 8;
/// Device type: 9P transport.
pub const TYPE_9P: u32 = 9;
/// Device type: vsock.
pub const TYPE_VSOCK: u32 = 19;
/// Device type: file system (virtio-fs).
pub const TYPE_FS: u32 = 26;

/// One queue handed to a device on activation.
#[derive(Debug)]
pub struct ActivatedQueue {
    /// Queue index.
    pub index: usize,
    /// The queue, with the size and addresses the driver programmed and
    /// ready set.
    pub queue: Queue,
    /// Signalled when the driver notifies the queue (written by the
    /// transport, or by KVM once the VMM registers it as an ioeventfd).
    pub notify: EventFd,
}

/// Why a device refused to activate or reset.
#[derive(Debug, thiserror::Error)]
pub enum VirtioDeviceError {
    /// The device needs a queue the driver did not enable.
    #[error("queue {0} not enabled")]
    QueueNotEnabled(usize),
    /// The driver's setup of a queue is unusable (size, alignment or
    /// addresses outside guest memory).
    #[error("queue {0} is not usable")]
    InvalidQueue(usize),
    /// The device was already active.
    #[error("already activated")]
    AlreadyActive,
    /// A device-specific failure (opening a backend, spawning a worker).
    #[error("{0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type ([`TYPE_NET`], [`TYPE_BLOCK`], ...).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers. The transport adds
    /// [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;

    /// Features the driver accepted (a subset of [`Self::features`] plus
    /// the transport's), called once when the driver sets `FEATURES_OK`.
    fn ack_features(&mut self, value: u64);

    /// Reads `data.len()` bytes at `offset` of the device configuration
    /// space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes `data` at `offset` of the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device with the queues the driver enabled (the others
    /// are left out). `interrupt` signals used buffers and configuration
    /// changes.
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<ActivatedQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioDeviceError>;

    /// Stops the device and drops the queues and interrupt it was given,
    /// back to its state before activation (the driver reset it). Called
    /// whether or not it was active.
    fn reset(&mut self) -> Result<(), VirtioDeviceError>;

    /// The device model, for the VMM's device-specific controls (resizing a disk).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// PCI class, subclass and programming interface of a virtio device type,
/// as QEMU reports them.
pub fn pci_class(device_type: u32) -> (u8, u8, u8) {
    match device_type {
        TYPE_NET => (0x02, 0x00, 0x00),
        TYPE_BLOCK | TYPE_SCSI => (0x01, 0x00, 0x00),
        TYPE_CONSOLE => (0x07, 0x80, 0x00),
        // QEMU's PCI_CLASS_OTHERS as a 16-bit class: class 0, subclass 0xff.
        TYPE_BALLOON => (0x00, 0xff, 0x00),
        // Other (unclassified) device.
        _ => (0xff, 0x00, 0x00),
    }
}

/// Reads `data` at `offset` of a configuration space laid out in `space`; bytes beyond it
/// read as zero, as the spec leaves them and QEMU answers.
pub fn read_config_space(space: &[u8], offset: u64, data: &mut [u8]) {
    let from = usize::try_from(offset)
        .ok()
        .and_then(|o| space.get(o..))
        .unwrap_or(&[]);
    let n = from.len().min(data.len());
    data[..n].copy_from_slice(&from[..n]);
    data[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let space = [1u8, 2, 3, 4];
        let mut data = [0xff; 4];
        read_config_space(&space, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_space(&space, 9, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_space(&space, u64::MAX, &mut data[..1]);
        assert_eq!(data[0], 0);
        let mut one = [0u8; 1];
        read_config_space(&space, 1, &mut one);
        assert_eq!(one, [2]);
    }
}
