//! What the device, its I/O thread and the VMM share: link status, the
//! receive filter, the backend, the counters, and [`NetControl`], the
//! VMM's handle on them.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::{error, warn};
use petrel_net::NetBackend;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::features::{self, has};
use super::filter::RxFilter;
use super::info::RxFilterInfo;
use super::stats::{NetStats, NetStatsSnapshot};
use crate::sync::lock;
use crate::virtio::{VirtioInterrupt, VirtioInterruptType};

/// `VIRTIO_NET_S_LINK_UP` as the 16-bit status field holds it.
pub(super) const S_LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;
/// `VIRTIO_NET_S_ANNOUNCE` as the 16-bit status field holds it.
pub(super) const S_ANNOUNCE: u16 = VIRTIO_NET_S_ANNOUNCE as u16;

/// Called on the device's I/O thread each time the driver changes the
/// receive filter (mode, MAC address or table, VLANs): the hook for
/// `NIC_RX_FILTER_CHANGED`. It is called for every change; sending the
/// event once until the next `query-rx-filter`, as QEMU does, is the
/// VMM's business. It must not block.
pub type FilterListener = Arc<dyn Fn() + Send + Sync>;

/// Who holds the backend.
#[derive(Default)]
pub(super) struct BackendSlot {
    /// The backend while no I/O thread runs.
    pub(super) idle: Option<Box<dyn NetBackend>>,
    /// An I/O thread owns the backend.
    pub(super) running: bool,
    /// A replacement the running I/O thread is to take.
    pub(super) replacement: Option<Option<Box<dyn NetBackend>>>,
}

/// State shared by the device, its I/O thread and [`NetControl`].
pub(super) struct Shared {
    /// The net client name, for `query-rx-filter`.
    pub(super) name: String,
    /// Whether the device offered the offloads (its backend carried the
    /// virtio-net header when it was created; QEMU's `has_vnet_hdr`).
    pub(super) vnet_hdr: bool,
    /// The configuration space's `status`.
    pub(super) status: AtomicU16,
    /// Features the driver accepted (0 before `FEATURES_OK` and after a
    /// reset).
    pub(super) acked: AtomicU64,
    /// The guest offloads in force (QEMU's `curr_guest_offloads`).
    pub(super) guest_offloads: AtomicU64,
    /// The receive filter.
    pub(super) filter: Mutex<RxFilter>,
    /// The transport's interrupt while the device is active.
    pub(super) interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
    /// Told about filter changes.
    pub(super) listener: Mutex<Option<FilterListener>>,
    /// The backend.
    pub(super) backend: Mutex<BackendSlot>,
    /// Tells the I/O thread to look at the link and the backend slot.
    pub(super) wake: EventFd,
    /// Counters.
    pub(super) stats: NetStats,
}

impl Shared {
    /// State for a device named `name` with address `mac` over `backend`.
    pub(super) fn new(
        name: String,
        mac: [u8; 6],
        backend: Option<Box<dyn NetBackend>>,
    ) -> std::io::Result<Self> {
        Ok(Shared {
            name,
            vnet_hdr: backend.as_ref().is_some_and(|b| b.vnet_hdr()),
            status: AtomicU16::new(S_LINK_UP),
            acked: AtomicU64::new(0),
            guest_offloads: AtomicU64::new(0),
            filter: Mutex::new(RxFilter::new(mac)),
            interrupt: Mutex::new(None),
            listener: Mutex::new(None),
            backend: Mutex::new(BackendSlot {
                idle: backend,
                ..BackendSlot::default()
            }),
            wake: EventFd::new(EFD_NONBLOCK)?,
            stats: NetStats::default(),
        })
    }

    /// Whether the link is up.
    pub(super) fn link_up(&self) -> bool {
        self.status.load(Ordering::Acquire) & S_LINK_UP != 0
    }

    /// Features the driver accepted.
    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Signals a configuration change to an active device's driver.
    pub(super) fn notify_config(&self) {
        if let Some(interrupt) = lock(&self.interrupt).as_ref() {
            if let Err(e) = interrupt.trigger(VirtioInterruptType::Config) {
                error!("virtio-net {}: config interrupt failed: {e}", self.name);
            }
        }
    }

    /// Tells the listener the driver changed the filter.
    pub(super) fn filter_changed(&self) {
        let listener = lock(&self.listener).clone();
        if let Some(listener) = listener {
            listener();
        }
    }

    /// Tells `backend` the guest offloads in force.
    pub(super) fn apply_offloads(&self, backend: &mut dyn NetBackend) {
        let guest = self.guest_offloads.load(Ordering::Acquire);
        if let Err(e) = backend.set_offloads(features::offloads(guest)) {
            warn!("virtio-net {}: cannot set offloads: {e}", self.name);
        }
    }

    /// Wakes the I/O thread, if one runs, to look at the link and the
    /// backend slot.
    pub(super) fn wake(&self) {
        if let Err(e) = self.wake.write(1) {
            error!("virtio-net {}: cannot wake the I/O thread: {e}", self.name);
        }
    }
}

/// The VMM's handle on a [`super::VirtioNet`]: link status, the backend,
/// the receive filter and the counters. Cheap to clone, usable from any
/// thread, valid for the device's whole life (across resets).
#[derive(Clone)]
pub struct NetControl(pub(super) Arc<Shared>);

impl std::fmt::Debug for NetControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetControl")
            .field("name", &self.0.name)
            .field("link_up", &self.link_up())
            .finish_non_exhaustive()
    }
}

impl NetControl {
    /// Raises or drops the link (`set_link`). A change shows in the
    /// configuration space's status, with a configuration interrupt if the
    /// driver accepted `VIRTIO_NET_F_STATUS`. While the link is down,
    /// frames the guest sends are dropped (and completed) and frames from
    /// the backend are dropped, as QEMU does.
    pub fn set_link(&self, up: bool) {
        let shared = &self.0;
        let old = if up {
            shared.status.fetch_or(S_LINK_UP, Ordering::AcqRel)
        } else {
            shared.status.fetch_and(!S_LINK_UP, Ordering::AcqRel)
        };
        if (old & S_LINK_UP != 0) == up {
            return;
        }
        if has(shared.acked(), VIRTIO_NET_F_STATUS) {
            shared.notify_config();
        }
        shared.wake();
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.0.link_up()
    }

    /// Connects the NIC to `backend`, or with `None` leaves it without a
    /// peer (`netdev_del` of its netdev): frames it sends are then dropped.
    /// The previous backend is dropped. The I/O thread, if one runs, makes
    /// the switch between two frames; the new backend is told the guest
    /// offloads in force.
    ///
    /// The feature bits stay what the first backend made them: a backend
    /// without the virtio-net header after one with it gets frames whose
    /// partial checksums the device completes, and segmentation-offload
    /// frames are dropped.
    pub fn set_backend(&self, mut backend: Option<Box<dyn NetBackend>>) {
        let shared = &self.0;
        let mut slot = lock(&shared.backend);
        if slot.running {
            slot.replacement = Some(backend);
            drop(slot);
            shared.wake();
        } else {
            if let Some(b) = backend.as_mut() {
                shared.apply_offloads(b.as_mut());
            }
            slot.idle = backend;
        }
    }

    /// The receive filter as QAPI `RxFilterInfo` (`query-rx-filter`).
    /// Querying does not re-arm anything: see [`FilterListener`].
    pub fn query_rx_filter(&self) -> RxFilterInfo {
        let ctrl_vlan = has(self.0.acked(), VIRTIO_NET_F_CTRL_VLAN);
        lock(&self.0.filter).info(&self.0.name, ctrl_vlan)
    }

    /// Sets (or with `None` removes) the listener told about filter
    /// changes.
    pub fn set_filter_listener(&self, listener: Option<FilterListener>) {
        *lock(&self.0.listener) = listener;
    }

    /// The NIC's MAC address now (the driver may have changed it).
    pub fn mac(&self) -> [u8; 6] {
        lock(&self.0.filter).mac
    }

    /// The counters.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.0.stats.snapshot()
    }

    /// Asks the guest to announce itself (gratuitous ARP after a move), as
    /// QEMU's `announce-self` does for virtio-net: sets
    /// `VIRTIO_NET_S_ANNOUNCE` and raises a configuration interrupt if the
    /// driver accepted `VIRTIO_NET_F_GUEST_ANNOUNCE` and the control queue;
    /// the driver acknowledges with `VIRTIO_NET_CTRL_ANNOUNCE_ACK`. Returns
    /// whether it did.
    pub fn announce(&self) -> bool {
        let shared = &self.0;
        let acked = shared.acked();
        if !has(acked, VIRTIO_NET_F_GUEST_ANNOUNCE) || !has(acked, VIRTIO_NET_F_CTRL_VQ) {
            return false;
        }
        shared.status.fetch_or(S_ANNOUNCE, Ordering::AcqRel);
        shared.notify_config();
        true
    }
}
