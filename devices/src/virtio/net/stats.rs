//! Frame and byte counters, updated by the I/O thread and read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The counters of one NIC.
#[derive(Debug, Default)]
pub struct NetStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
}

/// The counters at one moment. Bytes count Ethernet frames without the
/// virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStatsSnapshot {
    /// Frames handed to the guest.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames from the backend the guest did not get: refused by the
    /// receive filter, too large for the buffers, or arrived with the link
    /// down.
    pub rx_dropped: u64,
    /// Frames handed to the backend.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames from the guest the backend did not get: no backend, link
    /// down, malformed, or the backend failed.
    pub tx_dropped: u64,
}

impl NetStats {
    /// Counts a frame of `bytes` handed to the guest.
    pub(super) fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a received frame dropped.
    pub(super) fn rx_drop(&self) {
        self.rx_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame of `bytes` handed to the backend.
    pub(super) fn tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a transmitted frame dropped.
    pub(super) fn tx_drop(&self) {
        self.tx_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStatsSnapshot {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            rx_dropped: get(&self.rx_dropped),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            tx_dropped: get(&self.tx_dropped),
        }
    }
}
