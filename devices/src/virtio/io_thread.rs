//! What every virtio device's I/O thread shares: started on activation with an eventfd that
//! asks it to stop, stopped and joined on reset or when the device is dropped, its epoll set
//! of input descriptors, interrupting the driver for used buffers, and rate-limited warnings
//! about what a guest may repeat.

use std::fmt::Display;
use std::io;
use std::os::fd::RawFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::error;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivatedQueue, VirtioInterrupt, VirtioInterruptType};

/// A running I/O thread. Dropping it signals the thread to stop and waits for it.
#[derive(Debug)]
pub struct IoThread {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl IoThread {
    /// Starts thread `name` running `body`, which gets the eventfd signalled when the thread
    /// is to end and must then return.
    pub fn spawn(name: String, body: impl FnOnce(EventFd) + Send + 'static) -> io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let theirs = stop.try_clone()?;
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || body(theirs))?;
        Ok(IoThread {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let name = handle.thread().name().unwrap_or("virtio").to_string();
        if let Err(e) = self.stop.write(1) {
            error!("{name}: cannot signal the I/O thread to stop: {e}");
        }
        if handle.join().is_err() {
            error!("{name}: the I/O thread panicked");
        }
    }
}

/// An epoll set waiting for input on each descriptor, reported with its token.
pub fn epoll_for_input(fds: impl IntoIterator<Item = (RawFd, u64)>) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    for (fd, token) in fds {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )?;
    }
    Ok(epoll)
}

/// Counts occurrences of something a guest can repeat at will, and says when to warn about
/// it: the first time, then at most once per interval, with how many came since the last
/// warning. The log stays readable whatever the guest does.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    last: Option<Instant>,
    unsaid: u64,
}

impl RateLimited {
    /// At most one warning per `interval`.
    pub const fn new(interval: Duration) -> Self {
        RateLimited {
            interval,
            last: None,
            unsaid: 0,
        }
    }

    /// Counts `n` more at `now`; when a warning is due, how many it is about (these
    /// included).
    pub fn count(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unsaid += n;
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// Interrupts the driver for the used entries `q` gained since the last call, unless it
/// suppressed that through its `used_event` (with `VIRTIO_RING_F_EVENT_IDX`; without it the
/// driver is always interrupted: `Queue::needs_notification` does not read
/// `VRING_AVAIL_F_NO_INTERRUPT`, which is only a hint). If the ring cannot be read, it is
/// interrupted. `who` names the device in the log.
pub fn signal_used(
    mem: &GuestMemoryMmap<()>,
    interrupt: &dyn VirtioInterrupt,
    q: &mut ActivatedQueue,
    who: impl Display,
) {
    if q.queue.needs_notification(mem).unwrap_or(true) {
        trigger_queue(interrupt, q.index, who);
    }
}

/// Interrupts the driver for queue `index`, whatever it asked for. `who` names the device in
/// the log.
pub fn trigger_queue(interrupt: &dyn VirtioInterrupt, index: usize, who: impl Display) {
    if let Err(e) = interrupt.trigger(VirtioInterruptType::Queue(index as u16)) {
        error!("{who}: queue {index}: interrupt failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress};

    use crate::virtio::test_util::InterruptRecorder;

    #[test]
    fn rate_limited_warns_first_then_once_per_interval() {
        let mut limit = RateLimited::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.count(2, t0), Some(2));
        assert_eq!(limit.count(1, t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.count(3, t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.count(1, t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(limit.count(1, t0 + Duration::from_millis(1500)), None);
        assert_eq!(limit.count(1, t0 + Duration::from_secs(5)), Some(2));
    }

    #[test]
    fn signal_used_follows_used_event() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut queue = Queue::new(16).unwrap();
        queue
            .try_set_desc_table_address(GuestAddress(0x1000))
            .unwrap();
        queue
            .try_set_avail_ring_address(GuestAddress(0x2000))
            .unwrap();
        queue
            .try_set_used_ring_address(GuestAddress(0x3000))
            .unwrap();
        queue.set_ready(true);
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut q = ActivatedQueue {
            index: 3,
            queue,
            notify,
        };
        let irq = InterruptRecorder::default();
        q.queue.add_used(&mem, 0, 0).unwrap();
        signal_used(&mem, &irq, &mut q, "test");
        assert_eq!(irq.take(), [VirtioInterruptType::Queue(3)]);
        // With EVENT_IDX, only once the used index passes `used_event` (after the
        // available ring: flags, idx, 16 entries).
        q.queue.set_event_idx(true);
        let used_event = GuestAddress(0x2000 + 4 + 2 * 16);
        mem.write_obj(5u16, used_event).unwrap();
        q.queue.add_used(&mem, 1, 0).unwrap();
        signal_used(&mem, &irq, &mut q, "test");
        assert!(irq.take().is_empty());
        for head in 2..6 {
            q.queue.add_used(&mem, head, 0).unwrap();
        }
        signal_used(&mem, &irq, &mut q, "test");
        assert_eq!(irq.take(), [VirtioInterruptType::Queue(3)]);
        // A ring the device cannot read: interrupted anyway.
        q.queue
            .try_set_avail_ring_address(GuestAddress(0x2_0000))
            .unwrap();
        signal_used(&mem, &irq, &mut q, "test");
        assert_eq!(irq.take(), [VirtioInterruptType::Queue(3)]);
    }

    #[test]
    fn dropping_stops_and_joins_the_thread() {
        let ended = Arc::new(AtomicBool::new(false));
        let seen = ended.clone();
        let thread = IoThread::spawn("io-test".into(), move |stop| {
            let epoll = epoll_for_input([(std::os::fd::AsRawFd::as_raw_fd(&stop), 7)]).unwrap();
            let mut events = [EpollEvent::default(); 1];
            let n = epoll.wait(-1, &mut events).unwrap();
            assert_eq!((n, events[0].data()), (1, 7));
            seen.store(true, Ordering::Release);
        })
        .unwrap();
        assert!(!ended.load(Ordering::Acquire));
        drop(thread);
        assert!(
            ended.load(Ordering::Acquire),
            "drop returned before the thread ended"
        );
    }
}
