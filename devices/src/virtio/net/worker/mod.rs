//! The I/O thread: waits on the queues' notify eventfds, the backend's
//! receive descriptor, the control handle's wake-up and the stop eventfd,
//! and moves frames.
//!
//! The backend's descriptor is watched only while a frame can go
//! somewhere: when the guest has posted no room for the frame in hand, the
//! thread stops watching it, keeps that one frame, and asks the driver to
//! notify the receive queue; the kick brings the watch back. Frames are
//! not read ahead of the guest's buffers beyond that one.
//!
//! Transmission pushes back the same way, as QEMU's virtio-net does: when
//! the backend cannot take a frame, its chain goes back to the available
//! ring, the thread leaves the transmit queue alone (kicks included) and
//! watches the backend's transmit readiness instead; when that comes, the
//! frame is offered again and the queue resumes where it stopped.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::error;
use petrel_net::NetBackend;
use virtio_queue::QueueT;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::control::Shared;
use super::rx::Rx;
use super::tx::Tx;
use crate::sync::lock;
use crate::virtio::io_thread::{epoll_for_input, RateLimited};
use crate::virtio::{ActivatedQueue, GuestMemory, VirtioInterrupt};

mod queues;
mod receive;
mod transmit;
mod watch;

use watch::{BackendWatch, T_BACKEND_FD};

const T_RX: u64 = 0;
const T_TX: u64 = 1;
const T_CTRL: u64 = 2;
const T_WAKE: u64 = 3;
const T_STOP: u64 = 4;

/// Frames received in one go before the other sources get a turn.
const RX_BUDGET: usize = 256;
/// Frames sent in one go before the other sources get a turn (QEMU's
/// `x-txburst`).
const TX_BUDGET: usize = 256;
/// How long the backend is left alone after it failed to receive.
const RX_RETRY: Duration = Duration::from_millis(100);
/// How soon a frame the backend refused is offered again when there is no
/// descriptor to wait on.
const TX_RETRY: Duration = Duration::from_millis(1);
/// At most one warning about unwritable receive buffers in this long.
const UNWRITABLE_RX_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// What the I/O thread works with besides the queues.
pub(super) struct Context {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) shared: Arc<Shared>,
    /// Signalled to end the thread.
    pub(super) stop: EventFd,
    /// The driver accepted `VIRTIO_NET_F_MRG_RXBUF`.
    pub(super) mrg_rxbuf: bool,
}

/// The queues the driver enabled.
pub(super) struct Queues {
    pub(super) rx: ActivatedQueue,
    pub(super) tx: ActivatedQueue,
    /// Present when the driver accepted `VIRTIO_NET_F_CTRL_VQ` and enabled it.
    pub(super) ctrl: Option<ActivatedQueue>,
}

/// The I/O thread's body: returns when `ctx.stop` is signalled, handing
/// the backend back to the device.
pub(super) fn run(ctx: Context, queues: Queues) {
    let epoll = match setup_epoll(&ctx, &queues) {
        Ok(epoll) => epoll,
        Err(e) => {
            error!("virtio-net {}: cannot set up epoll: {e}", ctx.shared.name);
            return;
        }
    };
    let backend = {
        let mut slot = lock(&ctx.shared.backend);
        slot.running = true;
        slot.idle.take()
    };
    let mut worker = Worker {
        rx: Rx::new(queues.rx, ctx.mrg_rxbuf),
        tx_q: queues.tx,
        tx: Tx::new(),
        ctrl: queues.ctrl,
        mem: ctx.mem,
        interrupt: ctx.interrupt,
        shared: ctx.shared,
        epoll,
        backend,
        watch: BackendWatch::default(),
        rx_blocked: false,
        rx_retry: None,
        tx_more: false,
        tx_blocked: false,
        tx_retry: None,
        tx_warned: false,
        unwritable_rx: RateLimited::new(UNWRITABLE_RX_WARNING_INTERVAL),
    };
    worker.serve();
    worker.finish();
}

fn setup_epoll(ctx: &Context, queues: &Queues) -> std::io::Result<Epoll> {
    let ctrl = queues.ctrl.as_ref().map(|q| (q.notify.as_raw_fd(), T_CTRL));
    epoll_for_input(
        [
            (queues.rx.notify.as_raw_fd(), T_RX),
            (queues.tx.notify.as_raw_fd(), T_TX),
            (ctx.shared.wake.as_raw_fd(), T_WAKE),
            (ctx.stop.as_raw_fd(), T_STOP),
        ]
        .into_iter()
        .chain(ctrl),
    )
}

struct Worker {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    shared: Arc<Shared>,
    epoll: Epoll,
    rx: Rx,
    tx_q: ActivatedQueue,
    tx: Tx,
    ctrl: Option<ActivatedQueue>,
    backend: Option<Box<dyn NetBackend>>,
    /// The backend's descriptors being watched.
    watch: BackendWatch,
    /// Waiting for the guest to post room for the pending frame.
    rx_blocked: bool,
    /// After a receive error: when to watch the backend again.
    rx_retry: Option<Instant>,
    /// Transmit work left over from the last round.
    tx_more: bool,
    /// The backend refused the frame at the head of the transmit queue:
    /// the queue waits for the backend's transmit readiness.
    tx_blocked: bool,
    /// While blocked with no readiness to watch: when to offer the frame
    /// again.
    tx_retry: Option<Instant>,
    /// A transmit failure was logged at warning level already.
    tx_warned: bool,
    /// Receive buffers given back because the device could write nothing to
    /// them.
    unwritable_rx: RateLimited,
}

impl Worker {
    fn serve(&mut self) {
        let mem = self.mem.clone();
        if let Err(e) = self.rx.q.queue.disable_notification(mem.as_ref()) {
            error!("virtio-net {}: receive queue: {e}", self.shared.name);
        }
        self.update_rx_watch();
        // Serve whatever the driver queued before the thread started.
        self.process_ctrl();
        self.tx_more = self.process_tx();
        self.receive();
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let timeout = self.timeout();
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("virtio-net {}: epoll_wait failed: {e}", self.shared.name);
                    return;
                }
            };
            for event in &events[..n] {
                match event.data() {
                    T_STOP => return,
                    T_WAKE => self.control_request(),
                    T_RX => {
                        let _ = self.rx.q.notify.read();
                        if self.rx_blocked {
                            self.receive();
                        }
                    }
                    T_TX => {
                        let _ = self.tx_q.notify.read();
                        self.tx_more = self.process_tx();
                    }
                    T_CTRL => {
                        if let Some(q) = &self.ctrl {
                            let _ = q.notify.read();
                        }
                        self.process_ctrl();
                    }
                    data if data & T_BACKEND_FD != 0 => {
                        let (rx, tx) = self.watch.classify(data, event.event_set());
                        if rx {
                            self.receive();
                        }
                        if tx {
                            self.retry_tx();
                        }
                    }
                    _ => {}
                }
            }
            if self.tx_more {
                self.tx_more = self.process_tx();
            }
            let now = Instant::now();
            if self.rx_retry.is_some_and(|at| now >= at) {
                self.rx_retry = None;
                self.update_rx_watch();
            }
            if self.tx_retry.is_some_and(|at| now >= at) {
                self.retry_tx();
            }
        }
    }

    /// How long epoll may wait, in milliseconds (-1: until an event).
    fn timeout(&self) -> i32 {
        if self.tx_more {
            return 0;
        }
        let Some(next) = [self.rx_retry, self.tx_retry].into_iter().flatten().min() else {
            return -1;
        };
        let left = next.saturating_duration_since(Instant::now());
        i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
    }
    /// The control handle changed the link or the backend.
    fn control_request(&mut self) {
        let _ = self.shared.wake.read();
        let replacement = lock(&self.shared.backend).replacement.take();
        if let Some(backend) = replacement {
            self.swap_backend(backend);
        }
        // With the link down, what the guest queued and the frames in hand
        // (the one for the guest, and the one the backend refused) are
        // dropped; with it up again, frames flow.
        self.retry_tx();
        self.receive();
    }

    fn swap_backend(&mut self, backend: Option<Box<dyn NetBackend>>) {
        self.rx_retry = None;
        // Stop watching the old descriptors before they close; a frame the
        // old backend refused goes to the new one, or is dropped.
        self.unblock_tx();
        let old = self.backend.take();
        self.update_rx_watch();
        drop(old);
        self.backend = backend;
        if let Some(b) = self.backend.as_mut() {
            self.shared.apply_offloads(b.as_mut());
        }
        self.update_rx_watch();
    }

    /// Hands the backend back to the device (or the replacement that came
    /// too late for this thread).
    fn finish(mut self) {
        let _ = self.watch.clear(&self.epoll);
        let mut slot = lock(&self.shared.backend);
        slot.running = false;
        let mut backend = match slot.replacement.take() {
            Some(replacement) => replacement,
            None => self.backend.take(),
        };
        if let Some(b) = backend.as_mut() {
            self.shared.apply_offloads(b.as_mut());
        }
        slot.idle = backend;
    }
}
