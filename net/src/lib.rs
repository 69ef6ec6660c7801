//! Network backends (QEMU's netdevs): where the frames of a guest NIC go.
//!
//! A NIC model (virtio-net in `petrel-devices`) owns one [`NetBackend`] and
//! moves whole Ethernet frames through it from its I/O thread. Each backend
//! exposes a file descriptor that becomes readable when a frame may be
//! waiting, so the NIC can wait on it together with its queue kicks.
//!
//! Sending has backpressure, as QEMU's `qemu_sendv_packet_async` has: a
//! backend that cannot take a frame now answers [`SendStatus::Busy`] from
//! [`NetBackend::try_send`] and names, through [`NetBackend::tx_ready`], the
//! descriptor event ([`TxReady`]) after which it can; the NIC leaves the
//! frame with the guest meanwhile, so nothing is lost between them.
//!
//! The backends, each opened from options that mirror QEMU's `-netdev`
//! keys: [`TapBackend::open`] ([`TapOptions`]), [`SocketBackend::open`]
//! ([`SocketOptions`]) and [`UserBackend::open`] ([`UserOptions`]). Their
//! errors ([`TapError`], [`SocketError`], [`UserError`]) read as QEMU 7.2's
//! messages and convert into [`NetError::Config`].

use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

mod errno;
mod passed_fd;
pub mod socket;
pub mod tap;
#[cfg(test)]
mod testing;
pub mod user;

pub use socket::{SocketBackend, SocketError, SocketOptions};
pub use tap::{TapBackend, TapError, TapOptions};
pub use user::{UserBackend, UserControl, UserError, UserOptions};

/// Length of the header virtio-net puts before every frame
/// (`struct virtio_net_hdr_v1`, also what tap's `IFF_VNET_HDR` uses with
/// `TUNSETVNETHDRSZ` set to this size).
pub const VNET_HDR_LEN: usize = 12;

/// Offloads the guest driver accepted for frames it receives, in the
/// terms of tap's `TUNSETOFFLOAD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Partial checksums (`TUN_F_CSUM`).
    pub csum: bool,
    /// TCP segmentation over IPv4 (`TUN_F_TSO4`).
    pub tso4: bool,
    /// TCP segmentation over IPv6 (`TUN_F_TSO6`).
    pub tso6: bool,
    /// ECN with TSO (`TUN_F_TSO_ECN`).
    pub tso_ecn: bool,
    /// UDP fragmentation offload (`TUN_F_UFO`).
    pub ufo: bool,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system call on the backend's descriptor failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The backend's options are wrong; the text is QEMU's message.
    #[error("{0}")]
    Config(String),
    /// The peer went away (a closed stream socket); frames are dropped
    /// until it comes back.
    #[error("peer disconnected")]
    Disconnected,
}

/// What [`NetBackend::try_send`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// The backend took the frame: it left, waits inside the backend, or
    /// was dropped for good (a frame no retry would get through).
    Sent,
    /// The backend cannot take the frame now and did not keep it: the
    /// caller offers it again, before any later frame, once
    /// [`NetBackend::tx_ready`]'s event happens.
    Busy,
}

/// The event on a descriptor after which a backend that answered
/// [`SendStatus::Busy`] can take frames again. Both are level-triggered:
/// the event lasts while the backend has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxReady {
    /// The descriptor becomes readable (`EPOLLIN`), e.g. an eventfd the
    /// backend signals once its queue has drained.
    Readable(RawFd),
    /// The descriptor becomes writable (`EPOLLOUT`), e.g. a tap or socket
    /// whose kernel queue has room again. The descriptor may be the one
    /// [`NetBackend::rx_fd`] returns.
    Writable(RawFd),
}

impl TxReady {
    /// The descriptor to watch.
    pub fn fd(self) -> RawFd {
        match self {
            TxReady::Readable(fd) | TxReady::Writable(fd) => fd,
        }
    }
}

/// A backend's description for HMP `info network`, as QEMU 7.2 words it (e.g.
/// `ifname=tap0,script=no,downscript=no`, `socket: connection from 127.0.0.1:40000`,
/// `net=10.0.2.0,restrict=off`): a handle shared by the backend, which changes the text
/// as its state changes, and whoever shows it. Clones share the text.
#[derive(Debug, Clone, Default)]
pub struct InfoText(Arc<Mutex<String>>);

impl InfoText {
    /// A handle on `text`.
    pub fn new(text: impl Into<String>) -> Self {
        InfoText(Arc::new(Mutex::new(text.into())))
    }

    /// The text now.
    pub fn get(&self) -> String {
        self.lock().clone()
    }

    /// Replaces the text.
    pub fn set(&self, text: impl Into<String>) {
        *self.lock() = text.into();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        // A panic while holding the lock leaves a whole string.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One netdev: sends and receives whole Ethernet frames.
///
/// Frames carry a [`VNET_HDR_LEN`]-byte virtio-net header in front in both
/// directions exactly when [`NetBackend::vnet_hdr`] is true; otherwise they
/// are bare Ethernet frames and the NIC must not offer checksum or
/// segmentation offloads to the guest.
pub trait NetBackend: Send {
    /// The netdev's type as `query-netdev`/`info network` name it
    /// (`tap`, `socket`, `user`).
    fn kind(&self) -> &'static str;

    /// Whether frames carry the virtio-net header.
    fn vnet_hdr(&self) -> bool;

    /// Tells the backend which offloads the guest accepts. Backends
    /// without the virtio-net header ignore it.
    fn set_offloads(&mut self, offloads: Offloads) -> Result<(), NetError>;

    /// Sends one frame, given as the slices it is made of, unless the
    /// backend cannot take it now, in which case it answers
    /// [`SendStatus::Busy`] and keeps nothing of it. A frame the backend can
    /// never take (too long, no peer) is dropped and counts as
    /// [`SendStatus::Sent`]; only errors that make the backend unusable are
    /// returned.
    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError>;

    /// After [`NetBackend::try_send`] answered [`SendStatus::Busy`]: the
    /// event that says it can take frames again. A backend that may
    /// answer `Busy` returns `Some` then; the default, for backends that
    /// never do, is `None`.
    ///
    /// The NIC asks again after each `Busy`, so the answer may change
    /// between them; the descriptor must stay open while it is the answer.
    fn tx_ready(&self) -> Option<TxReady> {
        None
    }

    /// Receives one frame into `buf` without blocking: `Ok(Some(len))` with
    /// the frame's length, or `Ok(None)` when nothing is waiting. A frame
    /// longer than `buf` fills it and loses the rest, and `len` is still its
    /// whole length (as `MSG_TRUNC` reports it): `len > buf.len()` says the
    /// frame was cut.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError>;

    /// A descriptor that is readable whenever [`NetBackend::recv`] may
    /// return a frame (level-triggered).
    fn rx_fd(&self) -> RawFd;

    /// A handle on the backend's description for HMP `info network`, which
    /// can change over the backend's life (a `listen=` socket has none until
    /// a peer connects, and none again once it leaves): the handle shows the
    /// text of the moment, also once the backend has moved to a NIC's thread.
    fn info(&self) -> InfoText;
}
