//! Datagram sockets of `-netdev socket` (`udp=`, `mcast=`, and `fd=` of a datagram
//! socket): one frame per datagram, no framing, and the socket itself as `rx_fd` and,
//! writable, as what a sender refused for a full send buffer waits for.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

use crate::{InfoText, NetError, SendStatus, TxReady};

/// A datagram socket backend.
#[derive(Debug)]
pub struct DgramSocket {
    sock: Socket,
    /// Where frames go: the `udp=` peer or the `mcast=` group; `None` sends on a
    /// connected `fd=` socket.
    dest: Option<SockAddr>,
    info: InfoText,
}

/// `recv(MSG_TRUNC)`: one datagram into `buf`, and its whole length even when longer than
/// `buf` (IPv4, IPv6 and unix datagram sockets report it).
fn recv_trunc(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call, which writes at
    // most that many, and `sock` is an open socket.
    let ret = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as usize)
}

/// Errors that say the socket itself is unusable, not that one datagram failed.
fn is_fatal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT)
    )
}

impl DgramSocket {
    /// Wraps a bound, non-blocking datagram socket.
    pub fn new(sock: Socket, dest: Option<SockAddr>, info: String) -> Self {
        DgramSocket {
            sock,
            dest,
            info: InfoText::new(info),
        }
    }

    /// Sends one frame as one datagram, or answers [`SendStatus::Busy`] when the socket's
    /// send buffer is full (`EAGAIN`), as QEMU's `net_socket_receive_dgram` does; other
    /// refusals lose the datagram.
    pub fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        let sent = loop {
            let sent = match &self.dest {
                Some(dest) => {
                    self.sock
                        .send_to_vectored_with_flags(frame, dest, libc::MSG_NOSIGNAL)
                }
                None => self
                    .sock
                    .send_vectored_with_flags(frame, libc::MSG_NOSIGNAL),
            };
            match sent {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match sent {
            Ok(_) => Ok(SendStatus::Sent),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(SendStatus::Busy),
            Err(e) if is_fatal(&e) => Err(NetError::Io {
                op: "socket send",
                source: e,
            }),
            Err(e) => {
                log::trace!("socket: datagram dropped: {e}");
                Ok(SendStatus::Sent)
            }
        }
    }

    /// The socket, once writable.
    pub fn tx_ready(&self) -> TxReady {
        TxReady::Writable(self.sock.as_raw_fd())
    }

    /// Receives one datagram; its whole length, also when `buf` holds only its start
    /// (`MSG_TRUNC`). Empty ones carry no frame and are skipped, and errors an earlier
    /// datagram left behind (ICMP port unreachable) are passed over.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        loop {
            match recv_trunc(&self.sock, buf) {
                Ok(0) => continue,
                Ok(len) => return Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if is_fatal(&e) => {
                    return Err(NetError::Io {
                        op: "socket recv",
                        source: e,
                    })
                }
                Err(e) => log::trace!("socket: recv: {e}"),
            }
        }
    }

    /// The socket.
    pub fn rx_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// QEMU's text for the socket.
    pub fn info(&self) -> &InfoText {
        &self.info
    }
}
