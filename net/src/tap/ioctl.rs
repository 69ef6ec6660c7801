//! The tun/tap driver's ioctls (`linux/if_tun.h`) on a `/dev/net/tun` descriptor.

use std::io;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_short, c_uint, c_ulong};

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

/// The ioctl type of the tun driver.
const TUNTAP: c_uint = b'T' as c_uint;

ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, c_int);
ioctl_ior_nr!(TUNGETFEATURES, TUNTAP, 207, c_uint);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, c_uint);
ioctl_ior_nr!(TUNGETIFF, TUNTAP, 210, c_uint);
ioctl_iow_nr!(TUNSETSNDBUF, TUNTAP, 212, c_int);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, c_int);

/// A layer-2 tap device.
pub const IFF_TAP: u16 = 0x0002;
/// No packet information header before frames.
pub const IFF_NO_PI: u16 = 0x1000;
/// Frames carry a virtio-net header.
pub const IFF_VNET_HDR: u16 = 0x4000;

/// Partial checksums.
pub const TUN_F_CSUM: c_uint = 0x01;
/// TSO over IPv4.
pub const TUN_F_TSO4: c_uint = 0x02;
/// TSO over IPv6.
pub const TUN_F_TSO6: c_uint = 0x04;
/// TSO with ECN bits.
pub const TUN_F_TSO_ECN: c_uint = 0x08;
/// UDP fragmentation offload.
pub const TUN_F_UFO: c_uint = 0x10;

/// Longest interface name, with its terminating NUL (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;

/// `struct ifreq` as the tun ioctls use it: a name and the flags member of the union.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: c_short,
    /// The rest of the 24-byte union.
    _pad: [u8; 22],
}

impl IfReq {
    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// Turns an ioctl's return value into a result.
fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The `IFF_*` flags the driver supports (`TUNGETFEATURES`).
pub fn features(fd: &impl AsRawFd) -> io::Result<c_uint> {
    let mut features: c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int, which `features` is; the descriptor
    // is borrowed for the call.
    let ret = unsafe { ioctl_with_mut_ref(fd, TUNGETFEATURES(), &mut features) };
    check(ret)?;
    Ok(features)
}

/// Creates or attaches the interface `name` (a pattern such as `tap%d` lets the kernel
/// pick) with `flags` (`TUNSETIFF`), and returns the name it got. `name` is cut to
/// `IFNAMSIZ - 1` bytes, as QEMU's `pstrcpy` cuts it.
pub fn set_iff(fd: &impl AsRawFd, name: &str, flags: u16) -> io::Result<String> {
    let mut req = IfReq::default();
    let len = name.len().min(IFNAMSIZ - 1);
    req.name[..len].copy_from_slice(&name.as_bytes()[..len]);
    req.flags = flags as c_short;
    // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`, whose layout `IfReq`
    // has (name, then the 24-byte union starting with the flags).
    let ret = unsafe { ioctl_with_mut_ref(fd, TUNSETIFF(), &mut req) };
    check(ret)?;
    Ok(req.name())
}

/// The name and flags of the interface the descriptor is attached to (`TUNGETIFF`).
pub fn get_iff(fd: &impl AsRawFd) -> io::Result<(String, u16)> {
    let mut req = IfReq::default();
    // SAFETY: TUNGETIFF writes a `struct ifreq`, whose layout `IfReq` has.
    let ret = unsafe { ioctl_with_mut_ref(fd, TUNGETIFF(), &mut req) };
    check(ret)?;
    Ok((req.name(), req.flags as u16))
}

/// Sets the length of the virtio-net header before each frame (`TUNSETVNETHDRSZ`).
pub fn set_vnet_hdr_size(fd: &impl AsRawFd, len: c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int, which `len` is.
    let ret = unsafe { ioctl_with_ref(fd, TUNSETVNETHDRSZ(), &len) };
    check(ret)
}

/// Sets the offloads (`TUN_F_*`) the reader of the descriptor accepts (`TUNSETOFFLOAD`).
pub fn set_offload(fd: &impl AsRawFd, offload: c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of ours.
    let ret = unsafe { ioctl_with_val(fd, TUNSETOFFLOAD(), c_ulong::from(offload)) };
    check(ret)
}

/// Sets how many bytes of frames the interface may queue towards us (`TUNSETSNDBUF`).
pub fn set_sndbuf(fd: &impl AsRawFd, bytes: c_int) -> io::Result<()> {
    // SAFETY: TUNSETSNDBUF reads one int, which `bytes` is.
    let ret = unsafe { ioctl_with_ref(fd, TUNSETSNDBUF(), &bytes) };
    check(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(TUNSETIFF(), 0x4004_54ca);
        assert_eq!(TUNGETFEATURES(), 0x8004_54cf);
        assert_eq!(TUNSETOFFLOAD(), 0x4004_54d0);
        assert_eq!(TUNGETIFF(), 0x8004_54d2);
        assert_eq!(TUNSETSNDBUF(), 0x4004_54d4);
        assert_eq!(TUNSETVNETHDRSZ(), 0x4004_54d8);
        assert_eq!(size_of::<IfReq>(), 40);
    }
}
