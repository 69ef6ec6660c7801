//! The receive side of the I/O thread: when to read the backend, and
//! moving frames to the guest.

use std::time::Instant;

use log::{error, warn};
use virtio_queue::{QueueOwnedT, QueueT};

use super::{Worker, RX_BUDGET, RX_RETRY};
use crate::sync::lock;
use crate::virtio::io_thread::trigger_queue;
use crate::virtio::net::rx::Delivery;
use crate::virtio::net::used;

impl Worker {
    /// Watches the backend's descriptor exactly when a frame read from it
    /// can go somewhere.
    pub(super) fn update_rx_watch(&mut self) {
        let want = match &self.backend {
            Some(b) if !self.rx_blocked && self.rx_retry.is_none() => Some(b.rx_fd()),
            _ => None,
        };
        if want == self.watch.rx() {
            return;
        }
        if let Err(e) = self.watch.set_rx(&self.epoll, want) {
            error!(
                "virtio-net {}: cannot watch the backend: {e}",
                self.shared.name
            );
        }
    }

    /// Stops reading the backend until the guest posts receive buffers,
    /// and asks it to say when it does.
    pub(super) fn block_rx(&mut self) {
        self.rx_blocked = true;
        self.update_rx_watch();
        if let Err(e) = used::enable_notification(&mut self.rx.q.queue, self.mem.as_ref()) {
            error!("virtio-net {}: receive queue: {e}", self.shared.name);
        }
    }

    /// Reads the backend again.
    pub(super) fn unblock_rx(&mut self) {
        self.rx_blocked = false;
        if let Err(e) = self.rx.q.queue.disable_notification(self.mem.as_ref()) {
            error!("virtio-net {}: receive queue: {e}", self.shared.name);
        }
        self.update_rx_watch();
    }

    /// Gives the chains at the head of the receive queue that have no
    /// device-writable byte back to the driver unused; true if there were
    /// any. Delivery would otherwise take them as part of every frame (with
    /// mergeable buffers, the first one then holding no header) or drop every
    /// frame on the first of them (without), and as they never fill, a ring
    /// full of them stalls receiving for good. QEMU reports "virtio-net receive
    /// queue contains no in buffers" and marks the device broken; petrel's
    /// transport cannot set DEVICE_NEEDS_RESET while the device runs, so the
    /// driver gets them back, with a rate-limited warning.
    fn give_back_unwritable_rx(&mut self) -> bool {
        let mem = self.mem.clone();
        let queue = &mut self.rx.q.queue;
        let mut heads = Vec::new();
        while let Some(chain) = queue.pop_descriptor_chain(mem.as_ref()) {
            let head = chain.head_index();
            if chain.writable().any(|d| d.len() > 0) {
                queue.go_to_previous_position();
                break;
            }
            heads.push((head, 0));
        }
        if heads.is_empty() {
            return false;
        }
        if let Err(e) = used::publish(queue, mem.as_ref(), &heads) {
            error!("virtio-net {}: receive queue: {e}", self.shared.name);
        }
        let n = heads.len() as u64;
        if let Some(count) = self.unwritable_rx.count(n, Instant::now()) {
            warn!(
                "virtio-net {}: receive queue contains no in buffers: {count} \
                 buffer(s) without device-writable space given back unused",
                self.shared.name
            );
        }
        true
    }

    /// Moves frames from the backend to the guest until the backend has
    /// none, the guest has no room, or the budget is spent.
    pub(super) fn receive(&mut self) {
        let mem = self.mem.clone();
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let mut used_any = false;
        let mut rechecked = false;
        for _ in 0..RX_BUDGET {
            if !self.rx.has_pending() {
                let Some(backend) = self.backend.as_mut() else {
                    break;
                };
                match self.rx.fetch(backend.as_mut()) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        warn!("virtio-net {}: receive failed: {e}", self.shared.name);
                        self.rx_retry = Some(Instant::now() + RX_RETRY);
                        self.update_rx_watch();
                        break;
                    }
                }
                if !self.rx.has_pending() {
                    stats.rx_drop();
                    continue;
                }
                if !lock(&self.shared.filter).accepts(self.rx.frame()) {
                    self.rx.drop_pending();
                    stats.rx_drop();
                    continue;
                }
            }
            if !self.shared.link_up() {
                // With the link down frames go nowhere, the one in hand too.
                self.rx.drop_pending();
                stats.rx_drop();
                if self.rx_blocked {
                    self.unblock_rx();
                }
                continue;
            }
            let len = self.rx.frame().len();
            used_any |= self.give_back_unwritable_rx();
            match self.rx.deliver(mem.as_ref()) {
                Delivery::Delivered => {
                    stats.rx(len);
                    used_any = true;
                }
                Delivery::Dropped => stats.rx_drop(),
                Delivery::NoBuffers => {
                    if rechecked {
                        break;
                    }
                    // Look once more once the driver is sure to kick.
                    self.block_rx();
                    rechecked = true;
                    continue;
                }
            }
            if self.rx_blocked {
                self.unblock_rx();
            }
        }
        if used_any && self.rx.needs_interrupt(mem.as_ref()) {
            let who = format_args!("virtio-net {}", self.shared.name);
            trigger_queue(self.interrupt.as_ref(), self.rx.q.index, who);
        }
    }
}
