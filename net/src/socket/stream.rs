//! Stream sockets of `-netdev socket` (`listen=`, `connect=`, and `fd=` of a stream
//! socket), with QEMU's length-prefixed framing.
//!
//! # The receive descriptor
//!
//! The socket frames travel on changes: a listening backend has none until it accepts a
//! connection, and goes back to listening when the peer leaves. So [`StreamSocket::rx_fd`]
//! is an epoll descriptor of the backend's own, which is readable whenever something in it
//! is ready, and which holds:
//! - the listening socket while there is no connection: readiness means a peer is
//!   waiting, and [`StreamSocket::recv`] (or `try_send`) accepts it;
//! - the connection, for input, and also for output while a connection is being made or
//!   bytes of a frame wait for the socket to take them: `recv` then completes the
//!   connection or sends what waits, so it is sent even when the guest sends nothing more.
//!
//! The NIC therefore registers one descriptor once and only ever sees a spurious wake-up
//! (a `recv` returning `None`) when there was work of the backend's own to do.
//!
//! # Sending
//!
//! [`StreamSocket::try_send`] has one frame in flight at a time, as QEMU has: while bytes of
//! the last one wait for the socket, it refuses the next, and the NIC waits for the
//! connection to become writable, through a descriptor of its own that outlives
//! connections ([`TxReadiness`]).

use std::io::{self, IoSlice};
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};

use socket2::Socket;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::framing::{FrameReader, FrameWriter, ReadOutcome, VectoredSink};
use super::readiness::TxReadiness;
use crate::{InfoText, NetError, SendStatus, TxReady};

/// Where the listening socket shows in the epoll set.
const LISTENER: u64 = 1;
/// Where the connection shows in the epoll set.
const CONNECTION: u64 = 2;

/// A stream socket backend.
#[derive(Debug)]
pub struct StreamSocket {
    epoll: Epoll,
    /// `listen=`: where peers connect; in the epoll set while there is no connection.
    listener: Option<Socket>,
    /// The connection, if any.
    conn: Option<Socket>,
    /// The events the connection is registered for.
    interest: EventSet,
    /// A `connect=` whose connection is not made yet.
    connecting: bool,
    reader: FrameReader,
    writer: FrameWriter,
    /// What a frame [`StreamSocket::try_send`] refused waits for.
    tx: TxReadiness,
    info: InfoText,
}

/// The connection as the framing writes to it.
struct Sink<'a>(&'a Socket);

impl VectoredSink for Sink<'_> {
    fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }
}

fn epoll_error(op: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::Io { op, source }
}

impl StreamSocket {
    fn new(info: InfoText) -> io::Result<Self> {
        Ok(StreamSocket {
            epoll: Epoll::new()?,
            listener: None,
            conn: None,
            interest: EventSet::empty(),
            connecting: false,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
            tx: TxReadiness::new()?,
            info,
        })
    }

    /// `listen=`: waits for a peer on `listener` (bound, listening, non-blocking). QEMU
    /// shows no text until a peer connects.
    pub fn listening(listener: Socket) -> io::Result<Self> {
        let mut s = Self::new(InfoText::default())?;
        s.epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER),
        )?;
        s.listener = Some(listener);
        Ok(s)
    }

    /// A connection (`fd=`, or `connect=` once made) or one being made (`connect=` that
    /// got `EINPROGRESS`), on a non-blocking socket.
    pub fn connection(conn: Socket, connected: bool, info: String) -> io::Result<Self> {
        let mut s = Self::new(InfoText::new(info))?;
        // QEMU turns Nagle off; a socket that is not TCP refuses, which does not matter.
        let _ = conn.set_tcp_nodelay(true);
        s.connecting = !connected;
        s.attach(conn)?;
        Ok(s)
    }

    /// Makes `conn` the connection and watches it.
    fn attach(&mut self, conn: Socket) -> io::Result<()> {
        self.interest = self.wanted_interest();
        self.epoll.ctl(
            ControlOperation::Add,
            conn.as_raw_fd(),
            EpollEvent::new(self.interest, CONNECTION),
        )?;
        self.tx.attach(&conn)?;
        self.conn = Some(conn);
        Ok(())
    }

    fn wanted_interest(&self) -> EventSet {
        if self.connecting || self.writer.has_pending() {
            EventSet::IN | EventSet::OUT
        } else {
            EventSet::IN
        }
    }

    /// Re-registers the connection when what it waits for changed.
    fn update_interest(&mut self) -> Result<(), NetError> {
        let wanted = self.wanted_interest();
        if let Some(conn) = &self.conn {
            if wanted != self.interest {
                self.epoll
                    .ctl(
                        ControlOperation::Modify,
                        conn.as_raw_fd(),
                        EpollEvent::new(wanted, CONNECTION),
                    )
                    .map_err(epoll_error("epoll_ctl"))?;
                self.interest = wanted;
            }
        }
        Ok(())
    }

    /// Accepts a waiting peer when listening without a connection.
    fn accept(&mut self) -> Result<(), NetError> {
        let Some(listener) = &self.listener else {
            return Ok(());
        };
        let (conn, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::debug!("socket: accept: {e}");
                }
                return Ok(());
            }
        };
        if let Err(e) = conn.set_nonblocking(true) {
            log::warn!("socket: accepted connection unusable: {e}");
            return Ok(());
        }
        let _ = conn.set_tcp_nodelay(true);
        self.epoll
            .ctl(
                ControlOperation::Delete,
                listener.as_raw_fd(),
                EpollEvent::default(),
            )
            .map_err(epoll_error("epoll_ctl"))?;
        self.info.set(match peer.as_socket_ipv4() {
            Some(addr) => format!("socket: connection from {}:{}", addr.ip(), addr.port()),
            None => "socket: connection".to_owned(),
        });
        self.attach(conn).map_err(epoll_error("epoll_ctl"))
    }

    /// Finds out whether a `connect=` in progress has completed.
    fn check_connect(&mut self) -> Result<(), NetError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let failed = match conn.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.peer_addr() {
                Ok(_) => None,
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(()),
                Err(e) => Some(e),
            },
        };
        match failed {
            Some(e) => {
                log::warn!("{}: {e}", self.info.get());
                self.disconnect()
            }
            None => {
                self.connecting = false;
                Ok(())
            }
        }
    }

    /// Closes the connection; a listening backend listens again, others stay down.
    /// QEMU clears the text then.
    fn disconnect(&mut self) -> Result<(), NetError> {
        if let Some(conn) = self.conn.take() {
            self.epoll
                .ctl(
                    ControlOperation::Delete,
                    conn.as_raw_fd(),
                    EpollEvent::default(),
                )
                .map_err(epoll_error("epoll_ctl"))?;
            self.tx.detach(&conn).map_err(epoll_error("epoll_ctl"))?;
        }
        self.connecting = false;
        self.interest = EventSet::empty();
        self.reader.reset();
        self.writer.clear();
        self.info.set("");
        if let Some(listener) = &self.listener {
            self.epoll
                .ctl(
                    ControlOperation::Add,
                    listener.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, LISTENER),
                )
                .map_err(epoll_error("epoll_ctl"))?;
        }
        Ok(())
    }

    /// The backend's own work: accepting, completing a connection, sending what waits.
    fn service(&mut self) -> Result<(), NetError> {
        if self.conn.is_none() {
            self.accept()?;
        }
        if self.connecting {
            self.check_connect()?;
        }
        if !self.connecting && self.writer.has_pending() {
            let flushed = match &self.conn {
                Some(conn) => self.writer.flush(&mut Sink(conn)).map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = flushed {
                log::debug!("socket: send: {e}");
                self.disconnect()?;
            }
        }
        self.update_interest()
    }

    /// Sends one frame as QEMU's `net_socket_receive` does: while bytes of an earlier
    /// frame wait for the socket (or for the connection to be made),
    /// [`SendStatus::Busy`]; otherwise the frame goes, and what the socket does not take
    /// of it waits and goes first. Dropped without a connection, or when too long for the
    /// peer.
    pub fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        self.service()?;
        if self.conn.is_none() {
            return Ok(SendStatus::Sent);
        }
        if self.writer.has_pending() {
            return Ok(SendStatus::Busy);
        }
        self.take(frame)?;
        Ok(SendStatus::Sent)
    }

    /// Writes `frame` on the connection, or keeps it for when the socket takes data;
    /// nothing else waits.
    fn take(&mut self, frame: &[IoSlice<'_>]) -> Result<(), NetError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let taken = if self.connecting {
            Ok(self.writer.queue(frame))
        } else {
            self.writer.send(&mut Sink(conn), frame)
        };
        match taken {
            Ok(true) => {}
            Ok(false) => log::trace!("socket: frame dropped: too long for the peer"),
            Err(e) => {
                log::debug!("socket: send: {e}");
                self.disconnect()?;
            }
        }
        self.update_interest()
    }

    /// What a frame [`StreamSocket::try_send`] refused waits for: see [`TxReadiness`].
    pub fn tx_ready(&self) -> TxReady {
        TxReady::Readable(self.tx.fd())
    }

    /// Receives one frame if a whole one has arrived; its length, also when `buf` holds
    /// only its start.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        self.service()?;
        if self.connecting {
            return Ok(None);
        }
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        let outcome = match self.reader.read_from(conn) {
            Ok(outcome) => outcome,
            Err(e) => {
                log::debug!("socket: recv: {e}");
                ReadOutcome::Closed
            }
        };
        match outcome {
            ReadOutcome::Frame(len) => {
                let copied = len.min(buf.len());
                buf[..copied].copy_from_slice(&self.reader.frame()[..copied]);
                Ok(Some(len))
            }
            ReadOutcome::WouldBlock => Ok(None),
            ReadOutcome::Closed => {
                self.disconnect()?;
                Ok(None)
            }
            ReadOutcome::Oversized(_) => {
                log::error!("serious error: oversized packet received,connection terminated.");
                self.disconnect()?;
                Ok(None)
            }
        }
    }

    /// The epoll descriptor described in the module documentation.
    pub fn rx_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// QEMU's text: the connection's origin or target, empty when there is none.
    pub fn info(&self) -> &InfoText {
        &self.info
    }

    /// The listening address, for `listen=` (useful with port 0).
    pub fn listen_addr(&self) -> Option<SocketAddrV4> {
        self.listener.as_ref()?.local_addr().ok()?.as_socket_ipv4()
    }
}
