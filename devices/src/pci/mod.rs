//! The PCI root complex: one root bus (bus 0) of PCI functions, reached
//! through configuration mechanism #1 (ports 0xcf8/0xcfc) and PCIe ECAM.
//!
//! - [`config::PciConfiguration`] models a function's configuration space
//!   (read-only, writable and write-1-to-clear bits, BARs, capabilities);
//! - [`device::PciDevice`] is what a function implements;
//! - [`bus::PciRoot`] holds the functions of bus 0, keyed by device/function;
//! - [`config_io::ConfigIo`] and [`ecam::Ecam`] are the two access paths,
//!   both sharing one `Arc<Mutex<PciRoot>>`;
//! - [`host_bridge::HostBridge`] is the function at 00:00.0;
//! - [`msix::MsixConfig`] is the MSI-X table and PBA a function keeps in a
//!   BAR;
//! - [`bar_alloc::BarAllocator`] places BARs, the job firmware does on real
//!   machines.

pub mod bar;
pub mod bar_alloc;
pub mod bus;
pub mod config;
pub mod config_io;
pub mod device;
pub mod ecam;
pub mod host_bridge;
pub mod msix;

pub use bar::{BarKind, PciBar};
pub use bar_alloc::{AddressWindow, BarAllocError, BarAllocator};
pub use bus::{PciDeviceHandle, PciRoot};
pub use config::{ConfigSpaceSize, PciConfiguration, PciHeader};
pub use config_io::ConfigIo;
pub use device::PciDevice;
pub use ecam::Ecam;
pub use host_bridge::HostBridge;
pub use msix::{MsiInterrupt, MsixConfig};

/// Device numbers on a bus.
pub const DEVICES_PER_BUS: u8 = 32;
/// Function numbers in a device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;

/// Packs a device (0-31) and function (0-7) number into a devfn byte
/// (device in bits 7:3, function in bits 2:0); `None` when out of range.
pub fn devfn(device: u8, function: u8) -> Option<u8> {
    (device < DEVICES_PER_BUS && function < FUNCTIONS_PER_DEVICE).then_some(device << 3 | function)
}

/// Puts the bytes of `dword` selected by an access of `data.len()` bytes at
/// byte `offset` within it into `data`; all-ones if the access leaves the
/// dword.
pub(crate) fn read_dword_bytes(dword: u32, offset: usize, data: &mut [u8]) {
    if offset + data.len() > 4 {
        data.fill(0xff);
        return;
    }
    let bytes = dword.to_le_bytes();
    data.copy_from_slice(&bytes[offset..offset + data.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devfn_packing() {
        assert_eq!(devfn(0, 0), Some(0));
        assert_eq!(devfn(3, 1), Some(0x19));
        assert_eq!(devfn(31, 7), Some(0xff));
        assert_eq!(devfn(32, 0), None);
        assert_eq!(devfn(0, 8), None);
    }

    #[test]
    fn dword_bytes() {
        let mut b = [0u8; 2];
        read_dword_bytes(0x1234_5678, 2, &mut b);
        assert_eq!(b, [0x34, 0x12]);
        read_dword_bytes(0x1234_5678, 3, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }
}
