//! `-netdev socket`: frames go over a TCP connection (`listen=`, `connect=`), UDP
//! datagrams (`udp=`, `mcast=`) or a socket passed in (`fd=`), exactly as QEMU 7.2 sends
//! them, so a petrel and a QEMU can be each other's peer. Frames carry no virtio-net
//! header.

mod addr;
mod dgram;
mod framing;
mod readiness;
mod stream;

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

use socket2::{Domain, Socket, Type};

use crate::{errno, passed_fd, InfoText, NetBackend, NetError, Offloads, SendStatus, TxReady};

use dgram::DgramSocket;
use stream::StreamSocket;

pub use addr::inet_aton;
pub use framing::NET_BUFSIZE;

/// The options of `-netdev socket` (QAPI `NetdevSocketOptions`); exactly one of `fd`,
/// `listen`, `connect`, `mcast` and `udp` must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `id=`: the netdev's name, used in some error messages.
    pub id: String,
    /// `fd=`: an open stream or datagram socket, already resolved to a number. Once the
    /// constructor has found it open, the backend owns it (closes it when dropped, or
    /// when the constructor fails later). A stream socket must be connected.
    pub fd: Option<RawFd>,
    /// `listen=[host]:port`: accept one TCP connection at a time; frames are dropped
    /// while there is none, and when the peer leaves the backend listens again.
    pub listen: Option<String>,
    /// `connect=host:port`: connect to a `listen=` peer.
    pub connect: Option<String>,
    /// `mcast=maddr:port`: join a multicast group (loopback on, so peers on this host see
    /// each other's frames, and their own).
    pub mcast: Option<String>,
    /// `localaddr=`: with `mcast=`, the IPv4 address of the interface to use; with
    /// `udp=`, the `host:port` to bind.
    pub localaddr: Option<String>,
    /// `udp=host:port`: send each frame as a datagram to this peer (needs `localaddr=`).
    pub udp: Option<String>,
}

/// Why a socket backend could not be set up; the texts are QEMU 7.2's.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Not exactly one of the kinds.
    #[error("exactly one of listen=, connect=, mcast= or udp= is required")]
    NotExactlyOne,
    /// `localaddr=` with a stream kind.
    #[error("localaddr= is only valid with mcast= or udp=")]
    LocaladdrNotAllowed,
    /// `udp=` without `localaddr=`.
    #[error("localaddr= is mandatory with udp=")]
    LocaladdrRequired,
    /// An address without a port.
    #[error("host address '{0}' doesn't contain ':' separating host from port")]
    NoPortSeparator(String),
    /// A numeric host that is not an IPv4 address.
    #[error("host address '{0}' is not a valid IPv4 address")]
    BadHost(String),
    /// A host name that does not resolve.
    #[error("can't resolve host address '{0}'")]
    Resolve(String),
    /// A port that is not a number.
    #[error("port number '{0}' is invalid")]
    BadPort(String),
    /// `localaddr=` of `mcast=` that is not an IPv4 address.
    #[error("localaddr '{0}' is not a valid IPv4 address")]
    BadLocaladdr(String),
    /// `mcast=` outside 224.0.0.0/4.
    #[error("specified mcastaddr {addr} ({:#010x}) does not contain a multicast address", u32::from(*.addr))]
    NotMulticast {
        /// The address given.
        addr: Ipv4Addr,
    },
    /// A system call failed; `what` is QEMU's wording.
    #[error("{what}: {}", errno::text(.source))]
    Sys {
        /// What could not be done.
        what: String,
        /// The system error.
        source: io::Error,
    },
    /// The `fd=` number is not an open descriptor.
    #[error("{id}: Can't use file descriptor {fd}: {}", errno::text(.source))]
    BadFd {
        /// The netdev's id.
        id: String,
        /// The descriptor number.
        fd: RawFd,
        /// Why it cannot be used.
        source: io::Error,
    },
    /// The `fd=` descriptor is not a socket.
    #[error("can't get socket option SO_TYPE")]
    NotSocket,
    /// The `fd=` socket is neither a stream nor a datagram socket.
    #[error("socket type={ty} for fd={fd} must be either SOCK_DGRAM or SOCK_STREAM")]
    BadType {
        /// Its `SO_TYPE`.
        ty: i32,
        /// The descriptor number.
        fd: RawFd,
    },
    /// The `fd=` datagram socket's address could not be read.
    #[error("Unable to query local socket address: {}", errno::text(.0))]
    LocalAddress(#[source] io::Error),
    /// The `fd=` datagram socket is of a family QEMU does not name.
    #[error("socket family {0} unsupported")]
    Family(i32),
}

impl From<SocketError> for NetError {
    fn from(err: SocketError) -> Self {
        NetError::Config(err.to_string())
    }
}

/// A system call failure worded `what: strerror`.
fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> SocketError {
    let what = what.into();
    move |source| SocketError::Sys { what, source }
}

/// A socket netdev.
#[derive(Debug)]
pub struct SocketBackend {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Stream(StreamSocket),
    Dgram(DgramSocket),
}

impl SocketBackend {
    /// Sets up the socket `opts` describes, as QEMU's `net_init_socket` does.
    pub fn open(opts: &SocketOptions) -> Result<Self, SocketError> {
        let kinds = [
            opts.fd.is_some(),
            opts.listen.is_some(),
            opts.connect.is_some(),
            opts.mcast.is_some(),
            opts.udp.is_some(),
        ];
        if kinds.iter().filter(|&&k| k).count() != 1 {
            return Err(SocketError::NotExactlyOne);
        }
        if opts.localaddr.is_some() && opts.mcast.is_none() && opts.udp.is_none() {
            return Err(SocketError::LocaladdrNotAllowed);
        }
        let inner = if let Some(fd) = opts.fd {
            open_fd(&opts.id, fd)?
        } else if let Some(listen) = &opts.listen {
            Inner::Stream(open_listen(listen)?)
        } else if let Some(connect) = &opts.connect {
            Inner::Stream(open_connect(connect)?)
        } else if let Some(mcast) = &opts.mcast {
            Inner::Dgram(open_mcast(mcast, opts.localaddr.as_deref())?)
        } else {
            let udp = opts.udp.as_deref().unwrap_or_default();
            let local = opts
                .localaddr
                .as_deref()
                .ok_or(SocketError::LocaladdrRequired)?;
            Inner::Dgram(open_udp(udp, local)?)
        };
        Ok(SocketBackend { inner })
    }

    /// For `listen=`: the address listened on (the port the kernel chose for port 0).
    pub fn listen_addr(&self) -> Option<SocketAddrV4> {
        match &self.inner {
            Inner::Stream(s) => s.listen_addr(),
            Inner::Dgram(_) => None,
        }
    }
}

fn stream_socket() -> Result<Socket, SocketError> {
    Socket::new(Domain::IPV4, Type::STREAM, None).map_err(sys("can't create stream socket"))
}

fn dgram_socket() -> Result<Socket, SocketError> {
    Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(sys("can't create datagram socket"))
}

/// An epoll or socket setup failure after the socket exists.
fn setup(source: io::Error) -> SocketError {
    SocketError::Sys {
        what: "can't set up the socket".to_owned(),
        source,
    }
}

fn open_listen(listen: &str) -> Result<StreamSocket, SocketError> {
    let addr = addr::parse_host_port(listen)?;
    let sock = stream_socket()?;
    sock.set_nonblocking(true).map_err(setup)?;
    // QEMU's socket_set_fast_reuse; a failure does not stop it.
    let _ = sock.set_reuse_address(true);
    sock.bind(&addr.into())
        .map_err(sys(format!("can't bind ip={} to socket", addr.ip())))?;
    sock.listen(0).map_err(sys("can't listen on socket"))?;
    StreamSocket::listening(sock).map_err(setup)
}

fn open_connect(connect: &str) -> Result<StreamSocket, SocketError> {
    let addr = addr::parse_host_port(connect)?;
    let sock = stream_socket()?;
    sock.set_nonblocking(true).map_err(setup)?;
    let connected = loop {
        match sock.connect(&addr.into()) {
            Ok(()) => break true,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                Some(libc::EINPROGRESS) | Some(libc::EALREADY) => break false,
                _ => return Err(sys("can't connect socket")(e)),
            },
        }
    };
    let info = format!("socket: connect to {}:{}", addr.ip(), addr.port());
    StreamSocket::connection(sock, connected, info).map_err(setup)
}

fn open_mcast(mcast: &str, localaddr: Option<&str>) -> Result<DgramSocket, SocketError> {
    let group = addr::parse_host_port(mcast)?;
    let local = match localaddr {
        Some(s) => Some(inet_aton(s).ok_or_else(|| SocketError::BadLocaladdr(s.to_owned()))?),
        None => None,
    };
    if !group.ip().is_multicast() {
        return Err(SocketError::NotMulticast { addr: *group.ip() });
    }
    let sock = dgram_socket()?;
    sock.set_reuse_address(true)
        .map_err(sys("can't set socket option SO_REUSEADDR"))?;
    sock.bind(&group.into())
        .map_err(sys(format!("can't bind ip={} to socket", group.ip())))?;
    sock.join_multicast_v4(group.ip(), &local.unwrap_or(Ipv4Addr::UNSPECIFIED))
        .map_err(sys(format!(
            "can't add socket to multicast group {}",
            group.ip()
        )))?;
    sock.set_multicast_loop_v4(true)
        .map_err(sys("can't force multicast message to loopback"))?;
    if let Some(local) = local {
        sock.set_multicast_if_v4(&local)
            .map_err(sys("can't set the default network send interface"))?;
    }
    sock.set_nonblocking(true).map_err(setup)?;
    let info = format!("socket: mcast={}:{}", group.ip(), group.port());
    Ok(DgramSocket::new(sock, Some(group.into()), info))
}

fn open_udp(udp: &str, localaddr: &str) -> Result<DgramSocket, SocketError> {
    let local = addr::parse_host_port(localaddr)?;
    let remote = addr::parse_host_port(udp)?;
    let sock = dgram_socket()?;
    sock.set_reuse_address(true)
        .map_err(sys("can't set socket option SO_REUSEADDR"))?;
    sock.bind(&local.into())
        .map_err(sys(format!("can't bind ip={} to socket", local.ip())))?;
    sock.set_nonblocking(true).map_err(setup)?;
    let info = format!("socket: udp={}:{}", remote.ip(), remote.port());
    Ok(DgramSocket::new(sock, Some(remote.into()), info))
}

fn open_fd(id: &str, fd: RawFd) -> Result<Inner, SocketError> {
    let owned = passed_fd::adopt(fd).map_err(|source| SocketError::BadFd {
        id: id.to_owned(),
        fd,
        source,
    })?;
    let sock = Socket::from(owned);
    let ty = sock.r#type().map_err(|_| SocketError::NotSocket)?;
    if ty == Type::STREAM {
        let info = format!("socket: fd={fd}");
        return Ok(Inner::Stream(
            StreamSocket::connection(sock, true, info).map_err(setup)?,
        ));
    }
    if ty != Type::DGRAM {
        return Err(SocketError::BadType { ty: ty.into(), fd });
    }
    let local = sock.local_addr().map_err(SocketError::LocalAddress)?;
    let family = match i32::from(local.family()) {
        libc::AF_INET | libc::AF_INET6 => "inet",
        libc::AF_UNIX => "unix",
        libc::AF_VSOCK => "vsock",
        other => return Err(SocketError::Family(other)),
    };
    let info = format!("socket: fd={fd} {family}");
    Ok(Inner::Dgram(DgramSocket::new(sock, None, info)))
}

impl NetBackend for SocketBackend {
    fn kind(&self) -> &'static str {
        "socket"
    }

    fn vnet_hdr(&self) -> bool {
        false
    }

    fn set_offloads(&mut self, _offloads: Offloads) -> Result<(), NetError> {
        Ok(())
    }

    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        match &mut self.inner {
            Inner::Stream(s) => s.try_send(frame),
            Inner::Dgram(d) => d.try_send(frame),
        }
    }

    fn tx_ready(&self) -> Option<TxReady> {
        match &self.inner {
            Inner::Stream(s) => Some(s.tx_ready()),
            Inner::Dgram(d) => Some(d.tx_ready()),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        match &mut self.inner {
            Inner::Stream(s) => s.recv(buf),
            Inner::Dgram(d) => d.recv(buf),
        }
    }

    fn rx_fd(&self) -> RawFd {
        match &self.inner {
            Inner::Stream(s) => s.rx_fd(),
            Inner::Dgram(d) => d.rx_fd(),
        }
    }

    fn info(&self) -> InfoText {
        match &self.inner {
            Inner::Stream(s) => s.info().clone(),
            Inner::Dgram(d) => d.info().clone(),
        }
    }
}
