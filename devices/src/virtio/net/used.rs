//! The receive queue's used ring, filled a frame at a time, and its
//! notification controls.
//!
//! A frame spread over several buffers (`VIRTIO_NET_F_MRG_RXBUF`) must
//! reach the driver whole: Linux reads `num_buffers` from the first buffer
//! and takes the others from the used ring at once, dropping the frame if
//! they are not there yet. `Queue::add_used` publishes each entry as it
//! adds it, so the receive path writes the entries itself and publishes
//! them with one index update, and keeps its own account of what it
//! published for notification suppression.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Size of the used ring's `flags` and `idx`.
const RING_HEADER: u64 = 4;
/// Size of one used ring element (`id`, `len`).
const USED_ELEM: u64 = 8;
/// Size of one available ring entry.
const AVAIL_ELEM: u64 = 2;

/// Why an entry could not be published.
#[derive(Debug, thiserror::Error)]
pub enum UsedError {
    /// The head index is beyond the queue.
    #[error("descriptor {0} is outside the queue")]
    BadHead(u16),
    /// The ring lies outside guest memory.
    #[error("used ring: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The ring's address overflows.
    #[error("used ring address overflows")]
    Overflow,
    /// The available ring cannot be read.
    #[error(transparent)]
    Queue(#[from] virtio_queue::Error),
}

/// Adds `entries` (head index, bytes written) to `queue`'s used ring and
/// publishes them together.
pub(super) fn publish(
    queue: &mut Queue,
    mem: &GuestMemoryMmap<()>,
    entries: &[(u16, u32)],
) -> Result<(), UsedError> {
    let size = queue.size();
    let ring = GuestAddress(queue.used_ring());
    let mut next = Wrapping(queue.next_used());
    for &(head, len) in entries {
        if head >= size {
            return Err(UsedError::BadHead(head));
        }
        let offset = RING_HEADER + u64::from(next.0 % size) * USED_ELEM;
        let addr = ring.checked_add(offset).ok_or(UsedError::Overflow)?;
        mem.write_obj(u32::from(head).to_le(), addr)?;
        mem.write_obj(len.to_le(), addr.unchecked_add(4))?;
        next += 1;
    }
    let idx = ring.checked_add(2).ok_or(UsedError::Overflow)?;
    mem.store(next.0.to_le(), idx, Ordering::Release)?;
    queue.set_next_used(next.0);
    Ok(())
}

/// Asks the driver to notify the queue when it next posts a buffer, as
/// QEMU's `virtio_queue_set_notification` does: with
/// `VIRTIO_RING_F_EVENT_IDX` the used ring's `avail_event` becomes the
/// available index as it is now (not the device's position in the ring,
/// which may lag behind buffers it has seen but could not use yet), else
/// `VRING_USED_F_NO_NOTIFY` is cleared. Buffers posted before the call
/// are the caller's to look at again afterwards.
pub(super) fn enable_notification(
    queue: &mut Queue,
    mem: &GuestMemoryMmap<()>,
) -> Result<(), UsedError> {
    if queue.event_idx_enabled() {
        let avail = queue.avail_idx(mem, Ordering::Acquire)?;
        let offset = RING_HEADER + u64::from(queue.size()) * USED_ELEM;
        let addr = GuestAddress(queue.used_ring())
            .checked_add(offset)
            .ok_or(UsedError::Overflow)?;
        mem.store(avail.0.to_le(), addr, Ordering::Relaxed)?;
    } else {
        queue.enable_notification(mem)?;
    }
    // The driver must see the request before the ring is looked at again.
    fence(Ordering::SeqCst);
    Ok(())
}

/// Decides whether entries published since the last decision call for an
/// interrupt (the driver's `used_event`, or its `NO_INTERRUPT` flag
/// without `VIRTIO_RING_F_EVENT_IDX`).
#[derive(Debug)]
pub(super) struct Notifier {
    /// `next_used` at the last decision.
    last: Wrapping<u16>,
}

impl Notifier {
    /// A notifier for `queue` as it is now.
    pub(super) fn new(queue: &Queue) -> Self {
        Notifier {
            last: Wrapping(queue.next_used()),
        }
    }

    /// Whether the driver wants an interrupt for what was published since
    /// the last call. If the ring cannot be read, it does.
    pub(super) fn needs_interrupt(&mut self, queue: &Queue, mem: &GuestMemoryMmap<()>) -> bool {
        // The used entries must be visible before the driver's fields are read.
        fence(Ordering::SeqCst);
        let new = Wrapping(queue.next_used());
        let old = std::mem::replace(&mut self.last, new);
        let avail = GuestAddress(queue.avail_ring());
        if queue.event_idx_enabled() {
            let offset = RING_HEADER + u64::from(queue.size()) * AVAIL_ELEM;
            let Some(addr) = avail.checked_add(offset) else {
                return true;
            };
            match mem.load::<u16>(addr, Ordering::Relaxed) {
                Ok(event) => new - Wrapping(u16::from_le(event)) - Wrapping(1) < new - old,
                Err(_) => true,
            }
        } else {
            match mem.load::<u16>(avail, Ordering::Relaxed) {
                Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0,
                Err(_) => true,
            }
        }
    }
}
