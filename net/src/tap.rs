//! `-netdev tap`: frames go through a Linux tap interface (`/dev/net/tun`).
//!
//! The interface is created or attached by name (`ifname=`, or a `tapN` the kernel picks),
//! or taken over as an already-open descriptor (`fd=`). With `vnet_hdr` (the default when
//! the kernel has it, as in QEMU), every frame carries a [`VNET_HDR_LEN`]-byte virtio-net
//! header both ways, which is what lets the guest use checksum and segmentation offloads.

mod ioctl;
mod script;

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_int;
use std::os::unix::fs::OpenOptionsExt;

use crate::{
    errno, passed_fd, InfoText, NetBackend, NetError, Offloads, SendStatus, TxReady, VNET_HDR_LEN,
};

pub use script::{ScriptError, DEFAULT_DOWNSCRIPT, DEFAULT_SCRIPT};

/// The tun driver's control device.
const PATH_NET_TUN: &str = "/dev/net/tun";

/// Room after the caller's buffer for the rest of a frame: QEMU's `NET_BUFSIZE`, more than
/// a tap's largest frame (64 KiB of IP packet, the GSO limit, and its headers).
const TAIL_LEN: usize = crate::socket::NET_BUFSIZE;

/// The options of `-netdev tap` (QAPI `NetdevTapOptions`) that petrel implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// `id=`: the netdev's name, used in some error messages.
    pub id: String,
    /// `ifname=`: the interface to create or attach; unset lets the kernel pick `tapN`.
    /// Longer names are cut to 15 bytes, as QEMU cuts them.
    pub ifname: Option<String>,
    /// `fd=`: an open tap descriptor (e.g. one passed with QMP `getfd`), already resolved
    /// to a number. Once the constructor has found it open, the backend owns it: it is
    /// closed when the backend is dropped or when the constructor fails later.
    pub fd: Option<RawFd>,
    /// `script=`: run with the interface name once it exists; `"no"` or empty runs
    /// nothing; unset is QEMU's default, [`DEFAULT_SCRIPT`].
    pub script: Option<String>,
    /// `downscript=`: run with the interface name when the backend is dropped; `"no"` or
    /// empty runs nothing; unset is QEMU's default, [`DEFAULT_DOWNSCRIPT`].
    pub downscript: Option<String>,
    /// `vnet_hdr=`: `Some(true)` requires the virtio-net header, `Some(false)` refuses
    /// it, unset uses it when the kernel supports it.
    pub vnet_hdr: Option<bool>,
    /// `sndbuf=`: bytes the interface may queue towards us; unset or 0 is unlimited.
    pub sndbuf: Option<u64>,
}

/// Why a tap backend could not be set up; the texts are QEMU 7.2's.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `fd=` together with options that create an interface.
    #[error(
        "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd="
    )]
    FdWithOtherOptions,
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
    /// The `fd=` descriptor is not an attached tun/tap descriptor.
    #[error("Unable to query TUNGETIFF on FD {fd}: {}", errno::text(.source))]
    NotTunTap {
        /// The descriptor number.
        fd: RawFd,
        /// What TUNGETIFF said.
        source: io::Error,
    },
    /// The `fd=` descriptor is a tun (layer 3) device, or a tap that frames carry packet
    /// information headers on; neither carries bare Ethernet frames. QEMU has no check.
    #[error("fd={fd} is not a tap without packet information ({ifname} has flags {flags:#06x}): IFF_TAP and IFF_NO_PI are required")]
    NotPlainTap {
        /// The descriptor number.
        fd: RawFd,
        /// The interface it is attached to.
        ifname: String,
        /// Its `IFF_*` flags.
        flags: u16,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("could not open /dev/net/tun: {}", errno::text(.0))]
    Open(#[source] io::Error),
    /// `vnet_hdr=on` on a kernel without `IFF_VNET_HDR`.
    #[error("vnet_hdr=1 requested, but no kernel support for IFF_VNET_HDR available")]
    NoVnetHdr,
    /// `TUNSETIFF` failed for a named interface.
    #[error("could not configure /dev/net/tun ({ifname}): {}", errno::text(.source))]
    ConfigureNamed {
        /// The interface name asked for.
        ifname: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// `TUNSETIFF` failed for an interface the kernel was to name.
    #[error("could not configure /dev/net/tun: {}", errno::text(.0))]
    Configure(#[source] io::Error),
    /// `sndbuf=` was given and `TUNSETSNDBUF` failed.
    #[error("TUNSETSNDBUF ioctl failed: {}", errno::text(.0))]
    Sndbuf(#[source] io::Error),
    /// Setting up the interface after creating it failed.
    #[error("{op} failed: {}", errno::text(.source))]
    Setup {
        /// The ioctl.
        op: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// `script=` did not succeed.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

impl From<TapError> for NetError {
    fn from(err: TapError) -> Self {
        NetError::Config(err.to_string())
    }
}

/// A tap netdev.
#[derive(Debug)]
pub struct TapBackend {
    file: File,
    /// Where a frame longer than the buffer [`NetBackend::recv`] is given goes on, so
    /// that its whole length shows: the tun driver answers only the bytes it copied.
    tail: Vec<u8>,
    ifname: String,
    vnet_hdr: bool,
    info: InfoText,
    /// The `downscript=` to run when dropped.
    downscript: Option<String>,
}

impl TapBackend {
    /// Opens the tap `opts` describes, as QEMU's `net_init_tap` does for one queue.
    pub fn open(opts: &TapOptions) -> Result<Self, TapError> {
        let mut tap = match opts.fd {
            Some(fd) => Self::from_fd(opts, fd)?,
            None => Self::create(opts)?,
        };
        tap.set_sndbuf(opts.sndbuf)?;
        Ok(tap)
    }

    /// `fd=`: takes over an open tap descriptor; the header follows its `IFF_VNET_HDR`.
    fn from_fd(opts: &TapOptions, fd: RawFd) -> Result<Self, TapError> {
        if opts.ifname.is_some()
            || opts.script.is_some()
            || opts.downscript.is_some()
            || opts.vnet_hdr.is_some()
        {
            return Err(TapError::FdWithOtherOptions);
        }
        let file = File::from(passed_fd::adopt(fd).map_err(|source| TapError::BadFd {
            id: opts.id.clone(),
            fd,
            source,
        })?);
        let (ifname, flags) =
            ioctl::get_iff(&file).map_err(|source| TapError::NotTunTap { fd, source })?;
        if flags & ioctl::IFF_TAP == 0 || flags & ioctl::IFF_NO_PI == 0 {
            return Err(TapError::NotPlainTap { fd, ifname, flags });
        }
        let vnet_hdr = flags & ioctl::IFF_VNET_HDR != 0;
        let tap = TapBackend {
            file,
            tail: vec![0; TAIL_LEN],
            ifname,
            vnet_hdr,
            info: InfoText::new(format!("fd={fd}")),
            downscript: None,
        };
        tap.prepare()?;
        Ok(tap)
    }

    /// `ifname=`/`script=`/`downscript=`/`vnet_hdr=`: opens `/dev/net/tun` and creates or
    /// attaches the interface, then runs the script.
    fn create(opts: &TapOptions) -> Result<Self, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(PATH_NET_TUN)
            .map_err(TapError::Open)?;
        let features = ioctl::features(&file).unwrap_or_else(|e| {
            log::warn!("TUNGETFEATURES failed: {}", errno::text(&e));
            0
        });
        let mut flags = ioctl::IFF_TAP | ioctl::IFF_NO_PI;
        let kernel_has_vnet_hdr = features & u32::from(ioctl::IFF_VNET_HDR) != 0;
        let vnet_hdr = opts.vnet_hdr.unwrap_or(true) && kernel_has_vnet_hdr;
        if opts.vnet_hdr == Some(true) && !vnet_hdr {
            return Err(TapError::NoVnetHdr);
        }
        if vnet_hdr {
            flags |= ioctl::IFF_VNET_HDR;
        }
        let requested = opts.ifname.as_deref().unwrap_or("");
        let ifname = if requested.is_empty() {
            ioctl::set_iff(&file, "tap%d", flags).map_err(TapError::Configure)?
        } else {
            ioctl::set_iff(&file, requested, flags).map_err(|source| TapError::ConfigureNamed {
                ifname: requested.chars().take(ioctl::IFNAMSIZ - 1).collect(),
                source,
            })?
        };
        let script = opts.script.as_deref().unwrap_or(DEFAULT_SCRIPT);
        let downscript = opts.downscript.as_deref().unwrap_or(DEFAULT_DOWNSCRIPT);
        let mut tap = TapBackend {
            file,
            tail: vec![0; TAIL_LEN],
            info: InfoText::new(format!(
                "ifname={ifname},script={script},downscript={downscript}"
            )),
            ifname,
            vnet_hdr,
            downscript: None,
        };
        if script::wanted(script) {
            script::launch(script, &tap.ifname)?;
        }
        tap.prepare()?;
        tap.downscript = to_run(downscript);
        Ok(tap)
    }

    /// Puts the interface in the state QEMU starts from: the header length, if any, is
    /// ours (another user may have changed it) and no offloads are on.
    fn prepare(&self) -> Result<(), TapError> {
        if self.vnet_hdr {
            ioctl::set_vnet_hdr_size(&self.file, VNET_HDR_LEN as c_int).map_err(|source| {
                TapError::Setup {
                    op: "TUNSETVNETHDRSZ",
                    source,
                }
            })?;
        }
        set_offload(&self.file, Offloads::default()).map_err(|source| TapError::Setup {
            op: "TUNSETOFFLOAD",
            source,
        })
    }

    /// `sndbuf=`; without it the queue is unlimited and a failure is ignored, as in QEMU.
    fn set_sndbuf(&mut self, sndbuf: Option<u64>) -> Result<(), TapError> {
        let bytes = match sndbuf {
            Some(n) if n > 0 => c_int::try_from(n).unwrap_or(c_int::MAX),
            _ => c_int::MAX,
        };
        match ioctl::set_sndbuf(&self.file, bytes) {
            Err(e) if sndbuf.is_some() => Err(TapError::Sndbuf(e)),
            _ => Ok(()),
        }
    }

    /// The interface's name (the one the kernel picked when `ifname=` was not given).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Writes one frame: [`SendStatus::Busy`] when the tap's queue is full (`EAGAIN`, which
    /// a `sndbuf=` limit brings about), as QEMU's `tap_write_packet` sees it.
    fn write_frame(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        loop {
            match self.file.write_vectored(frame) {
                Ok(_) => return Ok(SendStatus::Sent),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(SendStatus::Busy),
                Err(e) if is_fatal(&e) => {
                    return Err(NetError::Io {
                        op: "tap write",
                        source: e,
                    })
                }
                Err(e) => {
                    // A down interface (EIO) or a malformed frame (EINVAL): the frame is
                    // lost, as QEMU loses it.
                    log::trace!("tap {}: frame dropped: {e}", self.ifname);
                    return Ok(SendStatus::Sent);
                }
            }
        }
    }
}

/// The script to run for a `script=`/`downscript=` value: none for `"no"` or empty.
fn to_run(script: &str) -> Option<String> {
    script::wanted(script).then(|| script.to_owned())
}

/// Sets the tap's offloads as QEMU's `tap_fd_set_offload` does: everything hangs on
/// checksum offload, and UFO (which newer kernels refuse) is dropped if it fails.
fn set_offload(file: &File, offloads: Offloads) -> io::Result<()> {
    let mut bits = 0;
    if offloads.csum {
        bits |= ioctl::TUN_F_CSUM;
        if offloads.tso4 {
            bits |= ioctl::TUN_F_TSO4;
        }
        if offloads.tso6 {
            bits |= ioctl::TUN_F_TSO6;
        }
        if (offloads.tso4 || offloads.tso6) && offloads.tso_ecn {
            bits |= ioctl::TUN_F_TSO_ECN;
        }
        if offloads.ufo {
            bits |= ioctl::TUN_F_UFO;
        }
    }
    if ioctl::set_offload(file, bits).is_ok() {
        return Ok(());
    }
    ioctl::set_offload(file, bits & !ioctl::TUN_F_UFO)
}

/// Whether a write or read error means the tap is gone rather than that one frame failed.
fn is_fatal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF) | Some(libc::EBADFD) | Some(libc::ENODEV)
    )
}

impl NetBackend for TapBackend {
    fn kind(&self) -> &'static str {
        "tap"
    }

    fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn set_offloads(&mut self, offloads: Offloads) -> Result<(), NetError> {
        if !self.vnet_hdr {
            return Ok(());
        }
        set_offload(&self.file, offloads).map_err(|source| NetError::Io {
            op: "TUNSETOFFLOAD",
            source,
        })
    }

    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        self.write_frame(frame)
    }

    /// The tap itself, once writable: QEMU's `tap_write_poll`.
    fn tx_ready(&self) -> Option<TxReady> {
        Some(TxReady::Writable(self.file.as_raw_fd()))
    }

    /// A frame longer than `buf` goes on into the tail, so its whole length is known.
    /// This also gives the driver, which refuses a read shorter than the virtio-net
    /// header, room for one when `buf` is shorter.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        loop {
            let mut parts = [IoSliceMut::new(buf), IoSliceMut::new(&mut self.tail)];
            match (&self.file).read_vectored(&mut parts) {
                Ok(len) => return Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if is_fatal(&e) => {
                    return Err(NetError::Io {
                        op: "tap read",
                        source: e,
                    })
                }
                Err(e) => {
                    log::trace!("tap {}: read failed: {e}", self.ifname);
                    return Ok(None);
                }
            }
        }
    }

    fn rx_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn info(&self) -> InfoText {
        self.info.clone()
    }
}

impl Drop for TapBackend {
    fn drop(&mut self) {
        // QEMU runs the down script while the interface still exists, then closes it.
        if let Some(downscript) = &self.downscript {
            if let Err(e) = script::launch(downscript, &self.ifname) {
                log::error!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_or_empty_downscript_runs_nothing() {
        assert_eq!(to_run(""), None);
        assert_eq!(to_run("no"), None);
        assert_eq!(
            to_run(DEFAULT_DOWNSCRIPT).as_deref(),
            Some(DEFAULT_DOWNSCRIPT)
        );
        assert_eq!(to_run("./down").as_deref(), Some("./down"));
    }
}
