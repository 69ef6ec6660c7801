//! The feature bits virtio-net offers, and what the driver's choice of
//! them means for the backend.

use petrel_net::Offloads;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use crate::virtio::VIRTIO_F_VERSION_1;

pub use crate::virtio::bit;

/// Whether `features` has bit `b`.
pub const fn has(features: u64, b: u32) -> bool {
    features & bit(b) != 0
}

/// Offloads the guest may take on frames it receives; the driver's choice
/// of them is what the backend is told (QEMU's `curr_guest_offloads`).
pub const GUEST_OFFLOADS: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_GUEST_UFO);

/// Checksum and segmentation offloads, both ways: only with a backend that
/// carries the virtio-net header.
const OFFLOADS: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_HOST_UFO)
    | GUEST_OFFLOADS;

/// The features a device offers, as QEMU's `virtio-net-pci` does by
/// default (no multiqueue, RSS or hash reports): `vnet_hdr` is whether
/// the backend carries the virtio-net header (QEMU's `has_vnet_hdr`; tap
/// with `vnet_hdr`), `mtu` whether `host_mtu` was given.
pub fn offered(vnet_hdr: bool, mtu: bool) -> u64 {
    let mut f = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_CTRL_VQ)
        | bit(VIRTIO_NET_F_CTRL_RX)
        | bit(VIRTIO_NET_F_CTRL_VLAN)
        | bit(VIRTIO_NET_F_CTRL_RX_EXTRA)
        | bit(VIRTIO_NET_F_CTRL_MAC_ADDR)
        | bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)
        | bit(VIRTIO_NET_F_GUEST_ANNOUNCE);
    if vnet_hdr {
        f |= OFFLOADS;
    }
    if mtu {
        f |= bit(VIRTIO_NET_F_MTU);
    }
    f
}

/// The backend's offloads for the guest offload bits `guest` (a subset of
/// [`GUEST_OFFLOADS`]).
pub fn offloads(guest: u64) -> Offloads {
    Offloads {
        csum: has(guest, VIRTIO_NET_F_GUEST_CSUM),
        tso4: has(guest, VIRTIO_NET_F_GUEST_TSO4),
        tso6: has(guest, VIRTIO_NET_F_GUEST_TSO6),
        tso_ecn: has(guest, VIRTIO_NET_F_GUEST_ECN),
        ufo: has(guest, VIRTIO_NET_F_GUEST_UFO),
    }
}
