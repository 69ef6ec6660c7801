//! What every virtio device's I/O thread shares: started on activation with an eventfd that
//! asks it to stop, stopped and joined on reset or when the device is dropped, and its epoll
//! set of input descriptors.

use std::io;
use std::os::fd::RawFd;
use std::thread::JoinHandle;

use log::error;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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
