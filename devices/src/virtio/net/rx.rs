//! The receive path: a frame from the backend into the guest's buffers.
//!
//! The frame is read into one reusable buffer laid out as the guest gets
//! it: the 12-byte virtio-net header (the backend's own, or a zero one the
//! device writes when the backend has none), then the Ethernet frame. It
//! stays there, pending, until the guest has posted buffers for it.

use std::io::Write;
use std::time::{Duration, Instant};

use log::warn;
use petrel_net::{NetBackend, NetError, VNET_HDR_LEN};
use virtio_queue::{QueueOwnedT, QueueT, Writer};
use vm_memory::GuestMemoryMmap;

use super::csum::{NetHdr, F_NEEDS_CSUM};
use super::used::{self, Notifier};
use crate::virtio::io_thread::RateLimited;
use crate::virtio::ActivatedQueue;

/// Largest Ethernet frame a backend may hand over: a 64 KiB segmentation
/// offload frame with its link header (QEMU's `NET_BUFSIZE` less the
/// header).
pub const MAX_FRAME_LEN: usize = 65550;
/// The receive buffer: header and largest frame.
pub const RX_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Where `num_buffers` sits in the header.
const NUM_BUFFERS: std::ops::Range<usize> = 10..12;
/// At most one warning about frames too long for the buffer in this long.
const TOO_LONG_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// What became of the pending frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The guest has it.
    Delivered,
    /// The guest has not posted enough buffers; the frame stays pending.
    NoBuffers,
    /// The frame was dropped: it does not fit a buffer (without mergeable
    /// buffers), or the driver's buffers are unusable.
    Dropped,
}

/// The receive queue and the frame on its way to it.
pub(super) struct Rx {
    /// The receive queue.
    pub(super) q: ActivatedQueue,
    notifier: Notifier,
    buf: Vec<u8>,
    /// Length of the pending frame in `buf`, header included.
    pending: Option<usize>,
    /// The driver accepted `VIRTIO_NET_F_MRG_RXBUF`.
    mrg: bool,
    /// Frames from the backend too long for `buf`, to warn about.
    too_long: RateLimited,
}

impl Rx {
    /// The receive side of queue `q`; `mrg` is whether the driver
    /// accepted mergeable receive buffers.
    pub(super) fn new(q: ActivatedQueue, mrg: bool) -> Self {
        Rx {
            notifier: Notifier::new(&q.queue),
            q,
            buf: vec![0; RX_BUF_LEN],
            pending: None,
            mrg,
            too_long: RateLimited::new(TOO_LONG_WARNING_INTERVAL),
        }
    }

    /// Whether a frame waits for buffers.
    pub(super) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops the pending frame; true if there was one.
    pub(super) fn drop_pending(&mut self) -> bool {
        self.pending.take().is_some()
    }

    /// The pending frame without its header (empty if none).
    pub(super) fn frame(&self) -> &[u8] {
        self.pending
            .map_or(&[][..], |len| &self.buf[VNET_HDR_LEN..len])
    }

    /// Reads one frame from `backend` and makes it the pending one;
    /// `Ok(false)` when none is waiting. A frame too short for the header
    /// it should carry, or too long for the buffer (which the backend cut),
    /// is dropped (`Ok(true)`, nothing pending).
    pub(super) fn fetch(&mut self, backend: &mut dyn NetBackend) -> Result<bool, NetError> {
        let vnet_hdr = backend.vnet_hdr();
        let start = if vnet_hdr { 0 } else { VNET_HDR_LEN };
        let Some(n) = backend.recv(&mut self.buf[start..])? else {
            return Ok(false);
        };
        if n > RX_BUF_LEN - start {
            if let Some(count) = self.too_long.count(1, Instant::now()) {
                warn!(
                    "virtio-net: {count} backend frame(s) longer than {} bytes dropped \
                     (the last one {n} bytes)",
                    RX_BUF_LEN - start
                );
            }
            return Ok(true);
        }
        let len = start + n;
        if len < VNET_HDR_LEN {
            warn!("virtio-net: backend frame shorter than its header, dropped");
            return Ok(true);
        }
        if vnet_hdr {
            self.fix_dhcp_checksum(len);
        } else {
            // flags 0, GSO_NONE: a complete frame with a valid checksum.
            self.buf[..VNET_HDR_LEN].fill(0);
        }
        self.pending = Some(len);
        Ok(true)
    }

    /// Completes the UDP checksum of a DHCP reply the host left partial, as
    /// QEMU does for dhclient, which reads raw frames and would reject it.
    fn fix_dhcp_checksum(&mut self, len: usize) {
        let (hdr, frame) = self.buf[..len].split_at_mut(VNET_HDR_LEN);
        let mut h = [0u8; VNET_HDR_LEN];
        h.copy_from_slice(hdr);
        let h = NetHdr::parse(&h);
        // IPv4, UDP, from port 67 (bootps), assuming a 20-byte IP header.
        let dhcp_reply = frame.len() > 27
            && frame.len() < 1500
            && frame[12..14] == [0x08, 0x00]
            && frame[23] == 17
            && frame.get(34..36) == Some(&[0, 67][..]);
        if h.needs_csum() && dhcp_reply && h.complete_csum(frame) {
            hdr[0] &= !F_NEEDS_CSUM;
        }
    }

    /// Hands the pending frame to the guest.
    pub(super) fn deliver(&mut self, mem: &GuestMemoryMmap<()>) -> Delivery {
        let Some(len) = self.pending else {
            return Delivery::Delivered;
        };
        let result = if self.mrg {
            self.deliver_merged(mem, len)
        } else {
            self.deliver_whole(mem, len)
        };
        if result != Delivery::NoBuffers {
            self.pending = None;
        }
        result
    }

    /// Without mergeable buffers: the whole frame in the next chain. A
    /// chain too small is left for the next frame and this one dropped, as
    /// QEMU does.
    fn deliver_whole(&mut self, mem: &GuestMemoryMmap<()>, len: usize) -> Delivery {
        let Some(chain) = self.q.queue.pop_descriptor_chain(mem) else {
            return Delivery::NoBuffers;
        };
        let head = chain.head_index();
        let mut writer: Writer = match chain.writer(mem) {
            Ok(w) => w,
            Err(e) => {
                warn!("virtio-net: unusable receive buffer: {e}");
                self.complete(mem, &[(head, 0)]);
                return Delivery::Dropped;
            }
        };
        if writer.available_bytes() < len {
            self.q.queue.go_to_previous_position();
            return Delivery::Dropped;
        }
        self.buf[NUM_BUFFERS].copy_from_slice(&1u16.to_le_bytes());
        let written = match writer.write_all(&self.buf[..len]) {
            Ok(()) => len as u32,
            Err(e) => {
                warn!("virtio-net: cannot write a receive buffer: {e}");
                0
            }
        };
        self.complete(mem, &[(head, written)]);
        if written == 0 {
            Delivery::Dropped
        } else {
            Delivery::Delivered
        }
    }

    /// With mergeable buffers: as many chains as the frame needs, the
    /// first one's header saying how many. If the ring does not hold
    /// enough, the chains go back for later.
    fn deliver_merged(&mut self, mem: &GuestMemoryMmap<()>, len: usize) -> Delivery {
        let mut chains: Vec<(u16, Writer)> = Vec::new();
        let mut room = 0;
        while room < len {
            let Some(chain) = self.q.queue.pop_descriptor_chain(mem) else {
                for _ in 0..chains.len() {
                    self.q.queue.go_to_previous_position();
                }
                return Delivery::NoBuffers;
            };
            let head = chain.head_index();
            match chain.writer(mem) {
                Ok(w) => {
                    room += w.available_bytes();
                    chains.push((head, w));
                }
                Err(e) => {
                    warn!("virtio-net: unusable receive buffer: {e}");
                    let mut entries: Vec<_> = chains.iter().map(|&(h, _)| (h, 0)).collect();
                    entries.push((head, 0));
                    self.complete(mem, &entries);
                    return Delivery::Dropped;
                }
            }
        }
        // At most the queue size, which fits.
        let count = chains.len() as u16;
        self.buf[NUM_BUFFERS].copy_from_slice(&count.to_le_bytes());
        let mut entries = Vec::with_capacity(chains.len());
        let mut offset = 0;
        for (head, mut writer) in chains {
            let n = writer.available_bytes().min(len - offset);
            if let Err(e) = writer.write_all(&self.buf[offset..offset + n]) {
                warn!("virtio-net: cannot write a receive buffer: {e}");
            }
            entries.push((head, n as u32));
            offset += n;
        }
        self.complete(mem, &entries);
        Delivery::Delivered
    }

    fn complete(&mut self, mem: &GuestMemoryMmap<()>, entries: &[(u16, u32)]) {
        if let Err(e) = used::publish(&mut self.q.queue, mem, entries) {
            warn!("virtio-net: receive queue: {e}");
        }
    }

    /// Whether the driver wants an interrupt for the frames delivered since
    /// the last call.
    pub(super) fn needs_interrupt(&mut self, mem: &GuestMemoryMmap<()>) -> bool {
        self.notifier.needs_interrupt(&self.q.queue, mem)
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::RawFd;

    use petrel_net::{InfoText, Offloads, SendStatus};
    use virtio_queue::Queue;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    /// A backend with one frame of `len` bytes waiting, reporting its length as backends
    /// do: whole, also when cut to the buffer.
    struct OneFrame {
        len: usize,
        vnet_hdr: bool,
        taken: bool,
    }

    impl NetBackend for OneFrame {
        fn kind(&self) -> &'static str {
            "one-frame"
        }
        fn vnet_hdr(&self) -> bool {
            self.vnet_hdr
        }
        fn set_offloads(&mut self, _: Offloads) -> Result<(), NetError> {
            Ok(())
        }
        fn try_send(&mut self, _: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
            Ok(SendStatus::Sent)
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
            if std::mem::replace(&mut self.taken, true) {
                return Ok(None);
            }
            let copied = self.len.min(buf.len());
            for (i, b) in buf[..copied].iter_mut().enumerate() {
                *b = i as u8;
            }
            Ok(Some(self.len))
        }
        fn rx_fd(&self) -> RawFd {
            -1
        }
        fn info(&self) -> InfoText {
            InfoText::default()
        }
    }

    fn rx() -> Rx {
        let q = ActivatedQueue {
            index: 0,
            queue: Queue::new(256).unwrap(),
            notify: EventFd::new(EFD_NONBLOCK).unwrap(),
        };
        Rx::new(q, true)
    }

    fn fetch(rx: &mut Rx, len: usize, vnet_hdr: bool) -> bool {
        let mut backend = OneFrame {
            len,
            vnet_hdr,
            taken: false,
        };
        rx.fetch(&mut backend).unwrap()
    }

    #[test]
    fn frames_up_to_the_buffer_are_kept_whole() {
        let mut rx = rx();
        assert!(fetch(&mut rx, MAX_FRAME_LEN, false));
        assert_eq!(rx.frame().len(), MAX_FRAME_LEN);
        assert_eq!(rx.frame()[..4], [0, 1, 2, 3]);
        assert!(rx.drop_pending());
        assert!(fetch(&mut rx, RX_BUF_LEN, true));
        assert_eq!(
            rx.frame().len(),
            MAX_FRAME_LEN,
            "the header is the backend's"
        );
    }

    #[test]
    fn frames_the_backend_cut_are_dropped_not_delivered() {
        let mut rx = rx();
        assert!(fetch(&mut rx, MAX_FRAME_LEN + 1, false), "a frame was read");
        assert!(!rx.has_pending(), "and dropped");
        assert!(fetch(&mut rx, RX_BUF_LEN + 1, true));
        assert!(!rx.has_pending());
        // NET_BUFSIZE, the most a socket peer may send.
        assert!(fetch(&mut rx, petrel_net::socket::NET_BUFSIZE, false));
        assert!(!rx.has_pending());
        assert!(fetch(&mut rx, 60, false), "the next frame is whole");
        assert_eq!(rx.frame().len(), 60);
        // Three drops, one warning (the first); the next one, a second later, says two.
        let later = Instant::now() + TOO_LONG_WARNING_INTERVAL;
        assert_eq!(rx.too_long.count(0, later), Some(2));
    }
}
