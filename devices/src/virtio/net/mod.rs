//! virtio-net: a network card over a [`NetBackend`].
//!
//! The device offers what QEMU's `virtio-net-pci` offers by default with
//! one queue pair: the MAC address, link status, mergeable receive
//! buffers, the control queue with receive modes, MAC and VLAN filtering,
//! guest announcements and guest offload control, event index, and when
//! the backend carries the virtio-net header (tap with `vnet_hdr`) the
//! checksum and segmentation offloads both ways. Frames never move on a
//! vCPU thread: [`VirtioNet::activate`] spawns one I/O thread,
//! `virtio-net-<id>`, which serves the queues and the backend.
//!
//! The VMM drives the device at run time through [`NetControl`] (link,
//! backend, receive filter, counters) and learns of filter changes through
//! a [`FilterListener`].

mod config;
mod control;
mod csum;
mod ctrl;
pub(crate) mod features;
mod filter;
mod info;
mod params;
mod rx;
mod state;
mod stats;
mod tx;
mod used;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use petrel_net::NetBackend;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MRG_RXBUF,
};

pub use config::{VirtioNetConfig, CONFIG_LEN, CONFIG_LEN_MTU};
pub use control::{FilterListener, NetControl};
pub use filter::{RxFilter, MAC_TABLE_ENTRIES, MAX_VLAN};
pub use info::{format_mac, RxFilterInfo, RxState};
pub use params::{
    NetParams, VirtioNetError, CTRL_QUEUE, CTRL_QUEUE_SIZE, DEFAULT_MAC, DEFAULT_QUEUE_SIZE,
    MAX_QUEUE_SIZE, RX_QUEUE, TX_QUEUE,
};
pub use rx::MAX_FRAME_LEN;
pub use state::VirtioNetState;
pub use stats::NetStatsSnapshot;

use control::{Shared, S_ANNOUNCE, S_LINK_UP};
use features::{has, GUEST_OFFLOADS};

use super::io_thread::IoThread;
use super::{
    read_config_space, ActivatedQueue, GuestMemory, VirtioDevice, VirtioDeviceError,
    VirtioInterrupt, TYPE_NET,
};
use crate::sync::lock;

/// A virtio-net device.
pub struct VirtioNet {
    shared: Arc<Shared>,
    /// The configured address, which a reset restores.
    mac: [u8; 6],
    mtu: u16,
    queue_sizes: [u16; 3],
    avail_features: u64,
    acked_features: u64,
    io_thread: Option<IoThread>,
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("id", &self.shared.name)
            .field("mac", &format_mac(&self.mac))
            .field("acked_features", &self.acked_features)
            .field("active", &self.io_thread.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioNet {
    /// Creates a device whose net client name is `id` (its I/O thread is
    /// `virtio-net-<id>`, and `query-rx-filter` names it so) over
    /// `backend`; without one the NIC has no peer and drops what the guest
    /// sends. Whether the backend carries the virtio-net header decides
    /// the offloads offered, for good.
    pub fn new(
        id: impl Into<String>,
        backend: Option<Box<dyn NetBackend>>,
        params: &NetParams,
    ) -> Result<Self, VirtioNetError> {
        params.check()?;
        let mtu = params.host_mtu.unwrap_or(0);
        let shared =
            Shared::new(id.into(), params.mac, backend).map_err(VirtioNetError::EventFd)?;
        let avail_features = features::offered(shared.vnet_hdr, mtu != 0);
        Ok(VirtioNet {
            shared: Arc::new(shared),
            mac: params.mac,
            mtu,
            // QEMU 7.2 checks `tx_queue_size` up to 1024 but then caps it at
            // `virtio_net_max_tx_queue_size()`, which is 256 unless the peer is
            // vhost-user or vDPA: petrel has neither, so the transmit queue stays 256.
            queue_sizes: [params.rx_queue_size, DEFAULT_QUEUE_SIZE, CTRL_QUEUE_SIZE],
            avail_features,
            acked_features: 0,
            io_thread: None,
        })
    }

    /// The net client name.
    pub fn id(&self) -> &str {
        &self.shared.name
    }

    /// The run-time controls.
    pub fn control(&self) -> NetControl {
        NetControl(self.shared.clone())
    }

    /// The configuration space as the driver reads it now.
    pub fn config(&self) -> VirtioNetConfig {
        VirtioNetConfig {
            mac: lock(&self.shared.filter).mac,
            status: self.shared.status.load(Ordering::Acquire),
            max_virtqueue_pairs: 1,
            mtu: self.mtu,
        }
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the I/O thread is running.
    pub fn is_active(&self) -> bool {
        self.io_thread.is_some()
    }

    /// The state to save.
    pub fn state(&self) -> VirtioNetState {
        let status = self.shared.status.load(Ordering::Acquire);
        VirtioNetState {
            avail_features: self.avail_features,
            acked_features: self.acked_features,
            filter: lock(&self.shared.filter).clone(),
            link_up: status & S_LINK_UP != 0,
            announce: status & S_ANNOUNCE != 0,
            guest_offloads: self.shared.guest_offloads.load(Ordering::Acquire),
        }
    }

    /// Restores saved state (before the transport re-activates the device).
    /// Features this device does not offer are dropped.
    pub fn set_state(&mut self, state: &VirtioNetState) {
        self.acked_features = state.acked_features & self.avail_features;
        self.shared
            .acked
            .store(self.acked_features, Ordering::Release);
        let mut filter = state.filter.clone();
        filter.normalise();
        *lock(&self.shared.filter) = filter;
        let mut status = 0;
        if state.link_up {
            status |= S_LINK_UP;
        }
        if state.announce {
            status |= S_ANNOUNCE;
        }
        self.shared.status.store(status, Ordering::Release);
        self.set_guest_offloads(state.guest_offloads & self.acked_features & GUEST_OFFLOADS);
    }

    /// Records the guest offloads in force and tells an idle backend.
    fn set_guest_offloads(&mut self, offloads: u64) {
        if !self.shared.vnet_hdr {
            return;
        }
        self.shared
            .guest_offloads
            .store(offloads, Ordering::Release);
        if let Some(b) = lock(&self.shared.backend).idle.as_mut() {
            self.shared.apply_offloads(b.as_mut());
        }
    }

    /// The configuration space's length: up to `mtu` when it is offered.
    fn config_len(&self) -> usize {
        if self.mtu != 0 {
            CONFIG_LEN_MTU
        } else {
            CONFIG_LEN
        }
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    /// Also what QEMU's `virtio_net_set_features` does: the VLAN filter
    /// lets every id pass unless the driver took `VIRTIO_NET_F_CTRL_VLAN`,
    /// and the backend learns the guest offloads.
    fn ack_features(&mut self, value: u64) {
        self.acked_features = value & self.avail_features;
        self.shared
            .acked
            .store(self.acked_features, Ordering::Release);
        let ctrl_vlan = has(self.acked_features, VIRTIO_NET_F_CTRL_VLAN);
        lock(&self.shared.filter).set_all_vlans(!ctrl_vlan);
        self.set_guest_offloads(self.acked_features & GUEST_OFFLOADS);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.config().to_bytes();
        read_config_space(&bytes[..self.config_len()], offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // A virtio 1.x driver changes the MAC address through the control
        // queue; QEMU ignores config writes from one.
        log::debug!(
            "virtio-net {}: ignored config write of {} bytes at {offset:#x}",
            self.shared.name,
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<ActivatedQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioDeviceError> {
        if self.io_thread.is_some() {
            return Err(VirtioDeviceError::AlreadyActive);
        }
        let (mut rx, mut tx, mut ctrl) = (None, None, None);
        for q in queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                CTRL_QUEUE if has(self.acked_features, VIRTIO_NET_F_CTRL_VQ) => ctrl = Some(q),
                _ => {}
            }
        }
        let rx = rx.ok_or(VirtioDeviceError::QueueNotEnabled(RX_QUEUE))?;
        let tx = tx.ok_or(VirtioDeviceError::QueueNotEnabled(TX_QUEUE))?;
        let (shared, irq) = (self.shared.clone(), interrupt.clone());
        let mrg_rxbuf = has(self.acked_features, VIRTIO_NET_F_MRG_RXBUF);
        let body = move |stop| {
            let ctx = worker::Context {
                mem,
                interrupt: irq,
                shared,
                stop,
                mrg_rxbuf,
            };
            worker::run(ctx, worker::Queues { rx, tx, ctrl })
        };
        *lock(&self.shared.interrupt) = Some(interrupt);
        match IoThread::spawn(format!("virtio-net-{}", self.shared.name), body) {
            Ok(thread) => {
                self.io_thread = Some(thread);
                Ok(())
            }
            Err(e) => {
                *lock(&self.shared.interrupt) = None;
                Err(VirtioDeviceError::Backend(Box::new(e)))
            }
        }
    }

    /// QEMU's `virtio_net_reset`: the filter returns to promiscuous mode
    /// with empty tables and the configured address, a pending
    /// announcement is forgotten; the link stays as the VMM set it.
    fn reset(&mut self) -> Result<(), VirtioDeviceError> {
        self.io_thread = None;
        *lock(&self.shared.interrupt) = None;
        self.acked_features = 0;
        self.shared.acked.store(0, Ordering::Release);
        *lock(&self.shared.filter) = RxFilter::new(self.mac);
        self.shared.status.fetch_and(!S_ANNOUNCE, Ordering::AcqRel);
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
