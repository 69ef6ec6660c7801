//! The device configuration space (`struct virtio_net_config`).

use serde::{Deserialize, Serialize};

/// Length of the space up to `status`, what a device without `host_mtu`
/// exposes (QEMU sizes the space by the features it offers).
pub const CONFIG_LEN: usize = 8;
/// Length of the space up to `mtu`, when `VIRTIO_NET_F_MTU` is offered.
pub const CONFIG_LEN_MTU: usize = 12;

/// The configuration space, native values; [`Self::to_bytes`] gives the
/// little-endian layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VirtioNetConfig {
    /// The MAC address (the one the driver set with `CTRL_MAC_ADDR_SET`,
    /// else the configured one).
    pub mac: [u8; 6],
    /// `VIRTIO_NET_S_LINK_UP` and `VIRTIO_NET_S_ANNOUNCE`.
    pub status: u16,
    /// Queue pairs (1: multiqueue is not offered).
    pub max_virtqueue_pairs: u16,
    /// The MTU (`host_mtu`); 0 when not offered.
    pub mtu: u16,
}

impl VirtioNetConfig {
    /// The configuration space bytes; the device exposes the first
    /// [`CONFIG_LEN`] or [`CONFIG_LEN_MTU`] of them.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN_MTU] {
        let mut b = [0u8; CONFIG_LEN_MTU];
        b[0..6].copy_from_slice(&self.mac);
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..10].copy_from_slice(&self.max_virtqueue_pairs.to_le_bytes());
        b[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        b
    }
}
