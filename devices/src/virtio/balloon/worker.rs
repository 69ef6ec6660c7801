//! The queue thread: inflate and deflate buffers, and the statistics buffer.
//!
//! An inflate or deflate buffer is a stream of little-endian `u32` page frame numbers in the
//! device-readable descriptors of a chain (a number may straddle two descriptors; trailing
//! bytes are ignored); the device uses it with length 0. The statistics buffer is held until
//! the device wants new numbers (see [`super::stats`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, warn};
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::pages::{self, Outcome};
use super::stats::STAT_LEN;
use super::{Shared, DEFLATE_QUEUE, INFLATE_QUEUE, STATS_QUEUE};
use crate::virtio::io_thread::{epoll_for_input, signal_used};
use crate::virtio::{ActivatedQueue, GuestMemory, VirtioInterrupt};

/// Frame numbers handled per batch (one 4 KiB read of the buffer).
const BATCH: usize = 1024;
/// Most bytes of a statistics buffer read (far more than the ten statistics known).
const MAX_STATS_BYTES: usize = 64 * STAT_LEN;
/// Buffers with frames outside RAM reported at warning level; later ones at debug level, so
/// a guest cannot flood the log.
const OUTSIDE_WARNINGS: u32 = 16;

/// What the thread works with besides the queues.
pub(super) struct Context {
    pub(super) id: String,
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) shared: Arc<Shared>,
    /// Signalled to end the thread.
    pub(super) stop: EventFd,
}

/// The statistics side of the thread: the buffer held, and when to give it back.
#[derive(Default)]
struct StatsPoll {
    /// Head of the statistics buffer the device holds.
    held: Option<u16>,
    /// The polling interval the thread last saw, seconds.
    interval: u32,
    /// When to give the buffer back (or, without one, look again).
    next: Option<Instant>,
}

/// The thread's body: returns when `ctx.stop` is signalled.
pub(super) fn run(ctx: Context, mut queues: Vec<ActivatedQueue>) {
    let epoll = match setup_epoll(&ctx, &queues) {
        Ok(epoll) => epoll,
        Err(e) => {
            error!("virtio-balloon {}: cannot set up epoll: {e}", ctx.id);
            return;
        }
    };
    let stop_token = queues.len() as u64;
    let poll_token = stop_token + 1;
    let mut poll = StatsPoll {
        interval: ctx.shared.poll_interval.load(Ordering::Acquire),
        ..StatsPoll::default()
    };
    if poll.interval > 0 {
        poll.next = Some(Instant::now());
    }
    let mut warnings = 0u32;
    // Serve whatever the driver queued before the thread started (e.g. after a restore).
    for q in &mut queues {
        ctx.process_queue(q, &mut poll, &mut warnings);
    }
    let mut events = vec![EpollEvent::default(); queues.len() + 2];
    loop {
        let timeout = poll.next.map_or(-1, |t| {
            // Rounded up, so the wait never ends before the deadline and spins.
            let us = t.saturating_duration_since(Instant::now()).as_micros();
            i32::try_from(us.div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("virtio-balloon {}: epoll_wait failed: {e}", ctx.id);
                return;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == stop_token {
                return;
            }
            if token == poll_token {
                let _ = ctx.shared.poll_changed.read();
                poll.set_interval(ctx.shared.poll_interval.load(Ordering::Acquire));
                continue;
            }
            let Some(q) = queues.get_mut(token as usize) else {
                continue;
            };
            // Clear the eventfd before looking at the ring, so a kick arriving while we
            // process is not lost.
            let _ = q.notify.read();
            ctx.process_queue(q, &mut poll, &mut warnings);
        }
        if poll.next.is_some_and(|t| t <= Instant::now()) {
            let stats_q = queues.iter_mut().find(|q| q.index == STATS_QUEUE);
            ctx.poll_stats(stats_q, &mut poll);
        }
    }
}

fn setup_epoll(ctx: &Context, queues: &[ActivatedQueue]) -> std::io::Result<Epoll> {
    let notifies = queues.iter().map(|q| q.notify.as_raw_fd());
    let fds = notifies.chain([ctx.stop.as_raw_fd(), ctx.shared.poll_changed.as_raw_fd()]);
    epoll_for_input(fds.zip(0u64..))
}

impl StatsPoll {
    /// A new interval, as QEMU's property setter applies it: 0 stops polling; a change while
    /// polling restarts the wait; turning polling on asks at once.
    fn set_interval(&mut self, secs: u32) {
        let was = self.interval;
        self.interval = secs;
        self.next = match (was, secs) {
            (_, 0) => None,
            (0, _) => Some(Instant::now()),
            (_, s) => Some(Instant::now() + Duration::from_secs(u64::from(s))),
        };
    }

    /// The guest sent statistics: the next request is one interval away.
    fn received(&mut self) {
        if self.interval > 0 {
            self.next = Some(Instant::now() + Duration::from_secs(u64::from(self.interval)));
        }
    }
}

/// Device-readable descriptors of a chain, in order.
fn readable(
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap<()>>,
) -> Vec<(GuestAddress, u32)> {
    chain
        .filter(|d| !d.is_write_only())
        .map(|d| (d.addr(), d.len()))
        .collect()
}

/// Calls `f` with the frame numbers of the stream `segs`, at most [`BATCH`] at a time. A
/// descriptor the guest placed outside its memory ends the stream there.
fn for_each_batch(
    mem: &GuestMemoryMmap<()>,
    segs: &[(GuestAddress, u32)],
    mut f: impl FnMut(&[u32]),
) -> Result<(), GuestAddress> {
    let mut buf = [0u8; BATCH * 4];
    let mut pfns: Vec<u32> = Vec::with_capacity(BATCH);
    // Bytes of a number split across two descriptors.
    let mut carry: Vec<u8> = Vec::with_capacity(4);
    for &(addr, len) in segs {
        let mut done = 0u64;
        let len = u64::from(len);
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let at = addr.checked_add(done).ok_or(addr)?;
            mem.read_slice(&mut buf[..n], at).map_err(|_| at)?;
            done += n as u64;
            for &byte in &buf[..n] {
                carry.push(byte);
                if carry.len() == 4 {
                    pfns.push(u32::from_le_bytes([carry[0], carry[1], carry[2], carry[3]]));
                    carry.clear();
                    if pfns.len() == BATCH {
                        f(&pfns);
                        pfns.clear();
                    }
                }
            }
        }
    }
    if !pfns.is_empty() {
        f(&pfns);
    }
    Ok(())
}

impl Context {
    /// Serves every available buffer of `q`, signalling the driver after each batch if it
    /// asked to be.
    fn process_queue(&self, q: &mut ActivatedQueue, poll: &mut StatsPoll, warnings: &mut u32) {
        let mem = self.mem.as_ref();
        loop {
            if let Err(e) = q.queue.disable_notification(mem) {
                error!("virtio-balloon {}: queue {}: {e}", self.id, q.index);
                return;
            }
            let mut used_any = false;
            while let Some(chain) = q.queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let segs = readable(chain);
                match q.index {
                    INFLATE_QUEUE | DEFLATE_QUEUE => {
                        self.balloon_buffer(q.index == INFLATE_QUEUE, &segs, warnings);
                    }
                    STATS_QUEUE => {
                        self.stats_buffer(&segs);
                        poll.received();
                        // A driver that sends a second buffer gets the first one back, as
                        // QEMU does.
                        if let Some(old) = poll.held.replace(head) {
                            self.add_used(q, old);
                            used_any = true;
                        }
                        continue;
                    }
                    _ => {}
                }
                self.add_used(q, head);
                used_any = true;
            }
            if used_any {
                self.signal_used(q);
            }
            match q.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    error!("virtio-balloon {}: queue {}: {e}", self.id, q.index);
                    return;
                }
            }
        }
    }

    fn add_used(&self, q: &mut ActivatedQueue, head: u16) {
        if let Err(e) = q.queue.add_used(self.mem.as_ref(), head, 0) {
            error!(
                "virtio-balloon {}: queue {}: add_used: {e}",
                self.id, q.index
            );
        }
    }

    /// Interrupts the driver for `q`'s new used entries unless it suppressed that.
    fn signal_used(&self, q: &mut ActivatedQueue) {
        let who = format_args!("virtio-balloon {}", self.id);
        signal_used(self.mem.as_ref(), self.interrupt.as_ref(), q, who);
    }

    /// Inflates or deflates the frames of one buffer.
    fn balloon_buffer(&self, inflate: bool, segs: &[(GuestAddress, u32)], warnings: &mut u32) {
        let mem = self.mem.as_ref();
        let mut total = Outcome::default();
        let walked = for_each_batch(mem, segs, |pfns| {
            let mut set = self.shared.pages();
            let out = if inflate {
                pages::inflate(mem, &mut set, pfns)
            } else {
                pages::deflate(mem, &mut set, pfns)
            };
            total.changed += out.changed;
            total.unchanged += out.unchanged;
            total.outside += out.outside;
            if total.first_outside.is_none() {
                total.first_outside = out.first_outside;
            }
        });
        let what = if inflate { "inflate" } else { "deflate" };
        if let Err(addr) = walked {
            warn!(
                "virtio-balloon {}: {what} buffer at {:#x} is outside guest memory",
                self.id, addr.0
            );
        }
        if total.outside > 0 {
            let first = total.first_outside.unwrap_or_default();
            if *warnings < OUTSIDE_WARNINGS {
                *warnings += 1;
                warn!(
                    "virtio-balloon {}: {what}: ignored {} page(s) outside guest RAM (first pfn {first:#x})",
                    self.id, total.outside
                );
            } else {
                debug!(
                    "virtio-balloon {}: {what}: ignored {} page(s) outside guest RAM (first pfn {first:#x})",
                    self.id, total.outside
                );
            }
        }
        debug!(
            "virtio-balloon {}: {what}: {} changed, {} unchanged, {} in the balloon",
            self.id,
            total.changed,
            total.unchanged,
            self.shared.pages().count()
        );
    }

    /// Records the statistics of one buffer.
    fn stats_buffer(&self, segs: &[(GuestAddress, u32)]) {
        let mem = self.mem.as_ref();
        let mut bytes = Vec::new();
        for &(addr, len) in segs {
            let n = (len as usize).min(MAX_STATS_BYTES - bytes.len());
            let start = bytes.len();
            bytes.resize(start + n, 0);
            if mem.read_slice(&mut bytes[start..], addr).is_err() {
                warn!(
                    "virtio-balloon {}: statistics buffer at {:#x} is outside guest memory",
                    self.id, addr.0
                );
                bytes.truncate(start);
                break;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.shared.stats().update(&bytes, now);
    }

    /// The polling time came: give the statistics buffer back so the driver refills it, or,
    /// without one, look again an interval later.
    fn poll_stats(&self, q: Option<&mut ActivatedQueue>, poll: &mut StatsPoll) {
        match (q, poll.held.take()) {
            (Some(q), Some(head)) => {
                self.add_used(q, head);
                self.signal_used(q);
                poll.next = None;
            }
            (_, held) => {
                poll.held = held;
                poll.next = (poll.interval > 0)
                    .then(|| Instant::now() + Duration::from_secs(u64::from(poll.interval)));
            }
        }
    }
}
