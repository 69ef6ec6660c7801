//! The backend's descriptors in the I/O thread's epoll set.
//!
//! Two things may be watched: the receive descriptor, readable, while a
//! frame read from it can go somewhere, and the transmit readiness
//! ([`TxReady`]) while a frame waits for the backend to take it. They can
//! be one descriptor (a tap is readable for receiving and writable for
//! sending), which epoll lets the thread register only once, so each
//! descriptor is registered with the union of what it is watched for, and
//! the token carries the descriptor to tell the two apart.

use std::io;
use std::os::fd::RawFd;

use petrel_net::TxReady;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Tokens of backend descriptors: this bit and the descriptor number.
pub(super) const T_BACKEND_FD: u64 = 1 << 32;

/// What the backend's descriptors are watched for.
#[derive(Debug, Default)]
pub(super) struct BackendWatch {
    rx: Option<RawFd>,
    tx: Option<TxReady>,
    /// The registrations in the epoll set.
    registered: Vec<(RawFd, EventSet)>,
}

/// The events of [`TxReady`].
fn tx_events(ready: TxReady) -> EventSet {
    match ready {
        TxReady::Readable(_) => EventSet::IN,
        TxReady::Writable(_) => EventSet::OUT,
    }
}

/// Events that concern whoever watches a descriptor, whatever for.
fn trouble() -> EventSet {
    EventSet::ERROR | EventSet::HANG_UP
}

impl BackendWatch {
    /// The receive descriptor watched.
    pub(super) fn rx(&self) -> Option<RawFd> {
        self.rx
    }

    /// Watches `fd` for received frames, or nothing.
    pub(super) fn set_rx(&mut self, epoll: &Epoll, fd: Option<RawFd>) -> io::Result<()> {
        if self.rx == fd {
            return Ok(());
        }
        self.rx = fd;
        self.sync(epoll)
    }

    /// Watches for the backend's transmit readiness, or not.
    pub(super) fn set_tx(&mut self, epoll: &Epoll, ready: Option<TxReady>) -> io::Result<()> {
        if self.tx == ready {
            return Ok(());
        }
        self.tx = ready;
        self.sync(epoll)
    }

    /// Watches nothing any more (before the backend's descriptors close).
    pub(super) fn clear(&mut self, epoll: &Epoll) -> io::Result<()> {
        self.rx = None;
        self.tx = None;
        self.sync(epoll)
    }

    /// What an event with token `data` and events `events` says:
    /// (frames may be waiting, the backend may take frames).
    pub(super) fn classify(&self, data: u64, events: EventSet) -> (bool, bool) {
        let fd = (data & !T_BACKEND_FD) as RawFd;
        let rx = self.rx == Some(fd) && events.intersects(EventSet::IN | trouble());
        let tx = self
            .tx
            .is_some_and(|r| r.fd() == fd && events.intersects(tx_events(r) | trouble()));
        (rx, tx)
    }

    /// Each descriptor with everything it is watched for.
    fn wanted(&self) -> Vec<(RawFd, EventSet)> {
        let mut wanted: Vec<(RawFd, EventSet)> = Vec::with_capacity(2);
        let roles = self
            .rx
            .map(|fd| (fd, EventSet::IN))
            .into_iter()
            .chain(self.tx.map(|r| (r.fd(), tx_events(r))));
        for (fd, events) in roles {
            match wanted.iter_mut().find(|(f, _)| *f == fd) {
                Some((_, e)) => *e |= events,
                None => wanted.push((fd, events)),
            }
        }
        wanted
    }

    /// Brings the epoll set in line with what is wanted. A descriptor that
    /// closed since it was registered left the set by itself, and its
    /// number may be registered again for another file.
    fn sync(&mut self, epoll: &Epoll) -> io::Result<()> {
        let wanted = self.wanted();
        let mut result = Ok(());
        let mut kept = Vec::with_capacity(wanted.len());
        for &(fd, events) in &self.registered {
            if wanted.iter().any(|&(f, _)| f == fd) {
                kept.push((fd, events));
                continue;
            }
            match epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default()) {
                Ok(()) => {}
                // Closed already, and with it gone from the set.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) => {}
                Err(e) => result = Err(e),
            }
        }
        self.registered = kept;
        for (fd, events) in wanted {
            let current = self.registered.iter().position(|&(f, _)| f == fd);
            if current.is_some_and(|i| self.registered[i].1 == events) {
                continue;
            }
            match register(epoll, fd, events, current.is_some()) {
                Ok(()) => match current {
                    Some(i) => self.registered[i].1 = events,
                    None => self.registered.push((fd, events)),
                },
                Err(e) => {
                    if let Some(i) = current {
                        self.registered.swap_remove(i);
                    }
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// Registers `fd` for `events`, as a change of its registration when
/// `known`; either way round, the other operation is tried when the set
/// says it is needed (a registration gone with its descriptor, or one
/// left over).
fn register(epoll: &Epoll, fd: RawFd, events: EventSet, known: bool) -> io::Result<()> {
    let event = EpollEvent::new(events, T_BACKEND_FD | fd as u64);
    let (first, fallback, missing) = if known {
        (
            ControlOperation::Modify,
            ControlOperation::Add,
            libc::ENOENT,
        )
    } else {
        (
            ControlOperation::Add,
            ControlOperation::Modify,
            libc::EEXIST,
        )
    };
    match epoll.ctl(first, fd, event) {
        Err(e) if e.raw_os_error() == Some(missing) => epoll.ctl(fallback, fd, event),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    /// The (token, events) epoll reports right now.
    fn ready(epoll: &Epoll) -> Vec<(u64, EventSet)> {
        let mut events = vec![EpollEvent::default(); 4];
        let n = epoll.wait(0, &mut events).unwrap();
        events[..n]
            .iter()
            .map(|e| (e.data(), e.event_set()))
            .collect()
    }

    #[test]
    fn one_descriptor_for_both_directions_is_registered_once() {
        let epoll = Epoll::new().unwrap();
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fd = a.as_raw_fd();
        let token = T_BACKEND_FD | fd as u64;
        let mut w = BackendWatch::default();
        w.set_rx(&epoll, Some(fd)).unwrap();
        assert!(ready(&epoll).is_empty(), "nothing to read");
        w.set_tx(&epoll, Some(TxReady::Writable(fd))).unwrap();
        assert_eq!(ready(&epoll), [(token, EventSet::OUT)]);
        assert_eq!(w.classify(token, EventSet::OUT), (false, true));
        b.send(b"x").unwrap();
        let events = ready(&epoll)[0].1;
        assert_eq!(events, EventSet::IN | EventSet::OUT);
        assert_eq!(w.classify(token, events), (true, true));
        w.set_tx(&epoll, None).unwrap();
        assert_eq!(ready(&epoll), [(token, EventSet::IN)]);
        w.set_rx(&epoll, None).unwrap();
        assert!(ready(&epoll).is_empty());
        assert_eq!(w.classify(token, EventSet::IN), (false, false));
    }

    #[test]
    fn registrations_gone_with_their_descriptor_are_made_again() {
        let epoll = Epoll::new().unwrap();
        let mut w = BackendWatch::default();
        let efd = EventFd::new(EFD_NONBLOCK).unwrap();
        let fd = efd.as_raw_fd();
        let token = T_BACKEND_FD | fd as u64;
        // What closing a descriptor does to the set, without closing it (its
        // number could go to another thread's file meanwhile).
        let vanish = || {
            epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                .unwrap()
        };
        w.set_tx(&epoll, Some(TxReady::Readable(fd))).unwrap();
        vanish();
        w.set_tx(&epoll, None).unwrap();
        w.set_tx(&epoll, Some(TxReady::Readable(fd))).unwrap();
        efd.write(1).unwrap();
        assert_eq!(ready(&epoll), [(token, EventSet::IN)]);
        vanish();
        w.set_rx(&epoll, Some(fd)).unwrap();
        w.set_tx(&epoll, Some(TxReady::Writable(fd))).unwrap();
        assert_eq!(ready(&epoll), [(token, EventSet::IN | EventSet::OUT)]);
        w.clear(&epoll).unwrap();
        assert!(ready(&epoll).is_empty());
    }
}
