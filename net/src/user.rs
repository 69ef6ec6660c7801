//! `-netdev user`: QEMU's user-mode network (libslirp). The guest sees a router at
//! 10.0.2.2 with DHCP and a DNS forwarder at 10.0.2.3; its connections become the host's
//! own sockets, and `hostfwd=` rules forward host ports into the guest.
//!
//! libslirp is single-threaded: each backend runs its instance on a thread of its own
//! (see `thread`). Frames the NIC sends go to that thread through a bounded queue; when it
//! is full, [`NetBackend::try_send`] answers [`SendStatus::Busy`] and the thread signals
//! [`NetBackend::tx_ready`]'s eventfd once it has taken the frames, as QEMU's slirp netdev
//! makes virtio-net wait (`qemu_sendv_packet_async` returning 0). Frames libslirp emits
//! come back through another queue, whose eventfd is [`UserBackend::rx_fd`]; that one
//! drops what does not fit, as a full NIC queue would. Frames carry no virtio-net header.

mod config;
mod hostfwd;
mod queue;
mod stack;
mod thread;

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{errno, InfoText, NetBackend, NetError, Offloads, SendStatus, TxReady};

use config::Settings;
use queue::FrameQueue;
use thread::{Request, Shared};

/// Frames each queue holds before refusing (from the guest) or dropping (for the guest).
const QUEUE_FRAMES: usize = 256;

/// The options of `-netdev user` (QAPI `NetdevUserOptions`) that petrel implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOptions {
    /// `id=`: the netdev's name (names the thread and messages).
    pub id: String,
    /// `ipv4=`: unset is on, unless only `ipv6=on` is given.
    pub ipv4: Option<bool>,
    /// `ipv6=`: unset is on (prefix `fec0::/64`), unless only `ipv4=on` is given.
    pub ipv6: Option<bool>,
    /// `net=addr[/mask]`: the guest network (default 10.0.2.0/24); the mask is a length
    /// or a dotted quad, and without one the address's class decides, as in QEMU.
    pub net: Option<String>,
    /// `host=`: the host's address in the guest network (default: .2 of `net`).
    pub host: Option<String>,
    /// `dns=`: the DNS forwarder's address (default: .3 of `net`).
    pub dns: Option<String>,
    /// `dhcpstart=`: the first address DHCP hands out (default: .15 of `net`).
    pub dhcpstart: Option<String>,
    /// `hostname=`: the host name DHCP gives the guest.
    pub hostname: Option<String>,
    /// `restrict=on`: isolate the guest; only forwarded ports reach it.
    pub restrict: bool,
    /// `hostfwd=` (repeatable): `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`.
    pub hostfwd: Vec<String>,
    /// `guestfwd=` (repeatable): not implemented; any rule is refused.
    pub guestfwd: Vec<String>,
}

/// Why a user backend could not be set up or a control request failed; the texts are
/// QEMU 7.2's where QEMU has one.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// `guestfwd=`, which petrel does not implement.
    #[error("guest forwarding rule '{0}' refused: guestfwd= is not supported")]
    Guestfwd(String),
    /// `ipv4=off` with IPv4 addresses.
    #[error("IPv4 disabled but netmask/host/dns provided")]
    Ipv4Disabled,
    /// Both IP versions off.
    #[error("IPv4 and IPv6 disabled")]
    BothDisabled,
    /// `net=` whose address does not parse.
    #[error("Failed to parse netmask")]
    Netmask,
    /// `net=` whose mask is neither a length nor an address.
    #[error("Failed to parse netmask (trailing chars)")]
    NetmaskTrailing,
    /// `net=` with a mask length outside 4..=32.
    #[error("Invalid netmask provided (must be in range 4-32)")]
    NetmaskRange,
    /// An address option that does not parse (`host`, `DNS`, `DHCP start address`).
    #[error("Failed to parse {0}")]
    Parse(&'static str),
    /// `host=` outside `net=`.
    #[error("Host doesn't belong to network")]
    HostOutside,
    /// `dns=` outside `net=` with `restrict=on`.
    #[error("DNS doesn't belong to network")]
    DnsOutside,
    /// `dns=` equal to the host address.
    #[error("DNS must be different from host")]
    DnsIsHost,
    /// `dhcpstart=` outside `net=`.
    #[error("DHCP doesn't belong to network")]
    DhcpOutside,
    /// `dhcpstart=` equal to the host or DNS address.
    #[error("DHCP must be different from host and DNS")]
    DhcpClash,
    /// `hostname=` longer than 255 bytes.
    #[error("'vhostname' parameter cannot exceed 255 bytes")]
    HostnameTooLong,
    /// `hostname=` with a NUL byte.
    #[error("'vhostname' parameter cannot contain a NUL byte")]
    HostnameNul,
    /// A forwarding rule that does not parse.
    #[error("Invalid host forwarding rule '{rule}' ({reason})")]
    HostfwdSyntax {
        /// The rule as given.
        rule: String,
        /// QEMU's reason.
        reason: &'static str,
    },
    /// A forwarding rule libslirp refused (the host port is taken, the address is not
    /// the host's).
    #[error("Could not set up host forwarding rule '{0}'")]
    HostfwdSetup(String),
    /// A `hostfwd_remove` argument that does not parse.
    #[error("invalid format")]
    InvalidFormat,
    /// libslirp refused to create the instance.
    #[error("could not create the user mode network stack")]
    Create,
    /// The queues' eventfds could not be made.
    #[error("could not create an eventfd: {}", errno::text(.0))]
    EventFd(#[source] io::Error),
    /// The thread could not be started.
    #[error("could not start the user mode network thread: {}", errno::text(.0))]
    Thread(#[source] io::Error),
    /// The backend is gone.
    #[error("user mode network stack not in use")]
    Stopped,
}

impl From<UserError> for NetError {
    fn from(err: UserError) -> Self {
        NetError::Config(err.to_string())
    }
}

/// Parses a `hostfwd=` rule with QEMU's error.
fn parse_rule(rule: &str) -> Result<hostfwd::HostFwd, UserError> {
    hostfwd::parse(rule).map_err(|reason| UserError::HostfwdSyntax {
        rule: rule.to_owned(),
        reason,
    })
}

/// A user netdev.
#[derive(Debug)]
pub struct UserBackend {
    /// The monitor's handle, which also holds what the thread shares with the backend.
    control: UserControl,
    thread: Option<JoinHandle<()>>,
    info: InfoText,
}

impl UserBackend {
    /// Checks `opts` as QEMU's `net_init_slirp` does and starts the stack with its
    /// forwarding rules.
    pub fn open(opts: &UserOptions) -> Result<Self, UserError> {
        if let Some(rule) = opts.guestfwd.first() {
            return Err(UserError::Guestfwd(rule.clone()));
        }
        let settings = Settings::from_options(opts)?;
        let rules = opts
            .hostfwd
            .iter()
            .map(|rule| Ok((rule.clone(), parse_rule(rule)?)))
            .collect::<Result<Vec<_>, UserError>>()?;
        let shared = Arc::new(Shared {
            tx: FrameQueue::new(QUEUE_FRAMES).map_err(UserError::EventFd)?,
            rx: Arc::new(FrameQueue::new(QUEUE_FRAMES).map_err(UserError::EventFd)?),
            wake: EventFd::new(EFD_NONBLOCK).map_err(UserError::EventFd)?,
            stop: AtomicBool::new(false),
        });
        let info = InfoText::new(settings.info());
        let (requests, receiver) = mpsc::channel();
        let thread = thread::spawn(&opts.id, settings, rules, shared.clone(), receiver)?;
        Ok(UserBackend {
            control: UserControl { requests, shared },
            thread: Some(thread),
            info,
        })
    }

    /// What the thread shares with the backend.
    fn shared(&self) -> &Shared {
        &self.control.shared
    }

    /// A handle for the monitor's requests (`hostfwd_add`, `hostfwd_remove`,
    /// `info usernet`), usable from any thread while the backend lives.
    pub fn control(&self) -> UserControl {
        self.control.clone()
    }
}

impl Drop for UserBackend {
    fn drop(&mut self) {
        self.shared().stop.store(true, Ordering::Release);
        let _ = self.shared().wake.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl NetBackend for UserBackend {
    fn kind(&self) -> &'static str {
        "user"
    }

    fn vnet_hdr(&self) -> bool {
        false
    }

    fn set_offloads(&mut self, _offloads: Offloads) -> Result<(), NetError> {
        Ok(())
    }

    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        if self.shared().tx.push_or_wait(frame) {
            Ok(SendStatus::Sent)
        } else {
            Ok(SendStatus::Busy)
        }
    }

    /// The queue's eventfd that the thread signals once it has made room.
    fn tx_ready(&self) -> Option<TxReady> {
        Some(TxReady::Readable(self.shared().tx.space_fd()))
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        Ok(self.shared().rx.pop_into(buf))
    }

    fn rx_fd(&self) -> RawFd {
        self.shared().rx.fd()
    }

    fn info(&self) -> InfoText {
        self.info.clone()
    }
}

/// Requests to a running user netdev, answered by its thread.
#[derive(Debug, Clone)]
pub struct UserControl {
    requests: Sender<Request>,
    shared: Arc<Shared>,
}

impl UserControl {
    fn ask<T>(&self, request: impl FnOnce(Sender<T>) -> Request) -> Result<T, UserError> {
        let (answer, answered) = mpsc::channel();
        self.requests
            .send(request(answer))
            .map_err(|_| UserError::Stopped)?;
        let _ = self.shared.wake.write(1);
        answered.recv().map_err(|_| UserError::Stopped)
    }

    /// HMP `hostfwd_add`: adds a rule in `hostfwd=` syntax.
    pub fn hostfwd_add(&self, rule: &str) -> Result<(), UserError> {
        let fwd = parse_rule(rule)?;
        if self.ask(|answer| Request::AddHostfwd(fwd, answer))? {
            Ok(())
        } else {
            Err(UserError::HostfwdSetup(rule.to_owned()))
        }
    }

    /// HMP `hostfwd_remove`: removes the rule `[tcp|udp]:[hostaddr]:hostport`. `Ok(true)`
    /// when one was removed, `Ok(false)` when there was none; QEMU prints "host
    /// forwarding rule for RULE removed" or "... not found".
    pub fn hostfwd_remove(&self, rule: &str) -> Result<bool, UserError> {
        let key = hostfwd::parse_key(rule).ok_or(UserError::InvalidFormat)?;
        self.ask(|answer| Request::RemoveHostfwd(key, answer))
    }

    /// libslirp's connection table, the body of HMP `info usernet` for this netdev.
    pub fn connection_info(&self) -> Result<String, UserError> {
        self.ask(Request::ConnectionInfo)
    }
}
