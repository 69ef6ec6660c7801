//! The virtio-net header, and completing the partial checksum it may ask
//! for (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) where nobody further down will.

use petrel_net::VNET_HDR_LEN;
use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub(super) const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;

/// The fields of `struct virtio_net_hdr_v1` the device looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NetHdr {
    /// `flags`.
    pub(super) flags: u8,
    /// `gso_type`.
    pub(super) gso_type: u8,
    /// `csum_start`: where checksumming starts, from the frame's start.
    pub(super) csum_start: u16,
    /// `csum_offset`: where the checksum goes, from `csum_start`.
    pub(super) csum_offset: u16,
}

impl NetHdr {
    /// Parses the header's bytes.
    pub(super) fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    /// Whether the frame is a segmentation-offload frame.
    pub(super) fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// Whether the frame's checksum is left for someone else to finish.
    pub(super) fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// Finishes the checksum of `frame` (without the header) as the header
    /// asks: the Internet checksum of the bytes from `csum_start` on, whose
    /// field at `csum_offset` holds the pseudo-header's sum, goes into that
    /// field (0 written as 0xffff, as Linux does). False if the offsets lie
    /// outside the frame.
    pub(super) fn complete_csum(&self, frame: &mut [u8]) -> bool {
        let start = usize::from(self.csum_start);
        let at = start + usize::from(self.csum_offset);
        if at + 2 > frame.len() {
            return false;
        }
        let mut sum: u64 = 0;
        let mut chunks = frame[start..].chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let csum = match !(sum as u16) {
            0 => 0xffff,
            c => c,
        };
        frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        true
    }
}
