//! A stream socket's transmit readiness: one descriptor for the backend's whole life,
//! readable while a refused frame may be offered again. That is while the connection is
//! writable (or has failed, which the next send finds out), and while there is no
//! connection at all (frames are then dropped, which takes them at once). A `listen=`
//! backend's connections come and go; the NIC waits on this descriptor regardless.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use socket2::Socket;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Where the stand-in for a missing connection shows in the epoll set.
const NO_PEER: u64 = 1;
/// Where the connection shows in the epoll set.
const CONNECTION: u64 = 2;

/// An epoll set holding the connection for `EPOLLOUT`, or an eventfd that is readable
/// while there is no connection.
#[derive(Debug)]
pub struct TxReadiness {
    epoll: Epoll,
    no_peer: EventFd,
}

impl TxReadiness {
    /// Readiness without a connection: readable.
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let no_peer = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            no_peer.as_raw_fd(),
            EpollEvent::new(EventSet::IN, NO_PEER),
        )?;
        no_peer.write(1)?;
        Ok(TxReadiness { epoll, no_peer })
    }

    /// `conn` is the connection now: readable while it is writable.
    pub fn attach(&self, conn: &Socket) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            conn.as_raw_fd(),
            EpollEvent::new(EventSet::OUT, CONNECTION),
        )?;
        // Nothing to read if there was no write since the last detach.
        let _ = self.no_peer.read();
        Ok(())
    }

    /// `conn` is going away, leaving none: readable.
    pub fn detach(&self, conn: &Socket) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Delete,
            conn.as_raw_fd(),
            EpollEvent::default(),
        )?;
        self.no_peer.write(1)
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::testing::readable;

    #[test]
    fn readable_without_a_connection_or_while_it_takes_data() {
        let ready = TxReadiness::new().unwrap();
        assert!(
            readable(ready.fd()),
            "no connection: frames are dropped at once"
        );
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let conn = Socket::from(std::os::fd::OwnedFd::from(ours));
        ready.attach(&conn).unwrap();
        assert!(readable(ready.fd()), "the connection has room");
        let chunk = [0u8; 4096];
        while (&conn).write(&chunk).is_ok() {}
        assert!(!readable(ready.fd()), "the connection is full");
        ready.detach(&conn).unwrap();
        assert!(readable(ready.fd()), "gone: frames are dropped again");
        ready.attach(&conn).unwrap();
        assert!(!readable(ready.fd()), "back, still full");
    }
}
