//! The transmit queue: frames from the guest to the backend, and waiting
//! for a backend that cannot take them now.
//!
//! A refused frame's chain goes back to the available ring
//! (`go_to_previous_position`, QEMU's `virtqueue_unpop`), so the guest's
//! ring is the only place it waits in and nothing is copied; the queue's
//! notifications stay off until the backend is ready, as in QEMU's
//! `virtio_net_flush_tx`, and a kick that comes anyway finds the queue
//! blocked and does nothing.

use std::time::Instant;

use log::{debug, error, warn};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{Worker, TX_BUDGET, TX_RETRY};
use crate::virtio::io_thread::signal_used;
use crate::virtio::net::tx::Transmitted;

/// What became of the chain at the head of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Sent or dropped: the chain is used.
    Done,
    /// The backend cannot take it now: the chain goes back.
    Refused,
}

impl Worker {
    /// Sends (or, without a backend or link, drops) what the driver
    /// queued for transmission; true if the budget ran out first. Does
    /// nothing while the backend refuses frames.
    pub(super) fn process_tx(&mut self) -> bool {
        if self.tx_blocked {
            return false;
        }
        let mem = self.mem.clone();
        let mem = mem.as_ref();
        let mut count = 0;
        loop {
            if let Err(e) = self.tx_q.queue.disable_notification(mem) {
                error!("virtio-net {}: transmit queue: {e}", self.shared.name);
                return false;
            }
            let mut used_any = false;
            while let Some(chain) = self.tx_q.queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                if self.transmit(mem, chain) == Step::Refused {
                    self.tx_q.queue.go_to_previous_position();
                    if used_any {
                        self.signal_tx_used(mem);
                    }
                    self.block_tx();
                    return false;
                }
                if let Err(e) = self.tx_q.queue.add_used(mem, head, 0) {
                    error!(
                        "virtio-net {}: transmit queue: add_used: {e}",
                        self.shared.name
                    );
                }
                used_any = true;
                count += 1;
                if count >= TX_BUDGET {
                    self.signal_tx_used(mem);
                    return true;
                }
            }
            if used_any {
                self.signal_tx_used(mem);
            }
            match self.tx_q.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return false,
                Err(e) => {
                    error!("virtio-net {}: transmit queue: {e}", self.shared.name);
                    return false;
                }
            }
        }
    }

    fn transmit(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) -> Step {
        let stats = &self.shared.stats;
        let backend = match self.backend.as_mut() {
            Some(b) if self.shared.link_up() => b,
            _ => {
                stats.tx_drop();
                return Step::Done;
            }
        };
        match self.tx.transmit(mem, chain, backend.as_mut()) {
            Ok(Transmitted::Sent(len)) => stats.tx(len),
            Ok(Transmitted::Busy) => return Step::Refused,
            Err(e) => {
                stats.tx_drop();
                if self.tx_warned {
                    debug!("virtio-net {}: frame dropped: {e}", self.shared.name);
                } else {
                    warn!("virtio-net {}: frame dropped: {e}", self.shared.name);
                    self.tx_warned = true;
                }
            }
        }
        Step::Done
    }

    /// Interrupts the driver for the transmit queue's new used entries
    /// unless it suppressed that.
    fn signal_tx_used(&mut self, mem: &GuestMemoryMmap<()>) {
        let who = format_args!("virtio-net {}", self.shared.name);
        signal_used(mem, self.interrupt.as_ref(), &mut self.tx_q, who);
    }

    /// Leaves the queue until the backend can take frames: its transmit
    /// readiness is watched, or without one a moment passes.
    fn block_tx(&mut self) {
        self.tx_blocked = true;
        let ready = self.backend.as_ref().and_then(|b| b.tx_ready());
        let watched = match ready {
            Some(ready) => match self.watch.set_tx(&self.epoll, Some(ready)) {
                Ok(()) => true,
                Err(e) => {
                    error!(
                        "virtio-net {}: cannot wait for the backend: {e}",
                        self.shared.name
                    );
                    false
                }
            },
            None => false,
        };
        if !watched {
            self.tx_retry = Some(Instant::now() + TX_RETRY);
        }
    }

    /// Stops waiting for the backend (it is ready, or going).
    pub(super) fn unblock_tx(&mut self) {
        self.tx_blocked = false;
        self.tx_retry = None;
        if let Err(e) = self.watch.set_tx(&self.epoll, None) {
            error!(
                "virtio-net {}: cannot stop waiting for the backend: {e}",
                self.shared.name
            );
        }
    }

    /// Offers the refused frame again, and the rest of the queue after it.
    pub(super) fn retry_tx(&mut self) {
        self.unblock_tx();
        self.tx_more = self.process_tx();
    }
}
