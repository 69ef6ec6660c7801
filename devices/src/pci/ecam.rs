//! PCI Express enhanced configuration access (ECAM): the configuration
//! spaces of the root complex mapped in MMIO.
//!
//! Register this device at the MCFG base address with length
//! [`Ecam::size`]. An offset decodes as bus in bits 27:20, device in 19:15,
//! function in 14:12 and register byte in 11:0. Accesses of 1, 2 or 4
//! bytes within one dword are served; others read all-ones and are dropped.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

use super::bus::PciRoot;
use super::read_dword_bytes;
use crate::sync::lock;
use crate::{Reset, Stateful};

/// MMIO bytes per bus: 32 devices x 8 functions x 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Buses one ECAM window can cover.
pub const ECAM_MAX_BUSES: u16 = 256;

/// Errors from the ECAM window.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EcamError {
    /// The bus count is 0 or above 256.
    #[error("invalid bus count {0}")]
    BusCount(u16),
}

/// Saved state of the ECAM window. It keeps no state of its own; the struct
/// exists so every device saves and restores the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcamState {}

/// The ECAM window over the root bus.
#[derive(Debug)]
pub struct Ecam {
    root: Arc<Mutex<PciRoot>>,
    bus_count: u16,
}

/// Where an access lands: bus, devfn, dword index, byte within the dword.
struct Target {
    bus: u8,
    devfn: u8,
    reg_idx: usize,
    byte: usize,
}

impl Ecam {
    /// Creates a window of `bus_count` buses (1-256, starting at bus 0) over
    /// `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>, bus_count: u16) -> Result<Self, EcamError> {
        if bus_count == 0 || bus_count > ECAM_MAX_BUSES {
            return Err(EcamError::BusCount(bus_count));
        }
        Ok(Self { root, bus_count })
    }

    /// Bytes of MMIO the window needs.
    pub fn size(&self) -> u64 {
        u64::from(self.bus_count) * ECAM_BUS_SIZE
    }

    /// Buses covered.
    pub fn bus_count(&self) -> u16 {
        self.bus_count
    }

    fn decode(&self, offset: u64, len: usize) -> Option<Target> {
        if offset >= self.size() {
            return None;
        }
        let byte = (offset & 0x3) as usize;
        if !matches!(len, 1 | 2 | 4) || byte + len > 4 {
            return None;
        }
        // Bounded by the size check: bus < 256, devfn and register in range.
        Some(Target {
            bus: (offset >> 20) as u8,
            devfn: (offset >> 12) as u8,
            reg_idx: ((offset & 0xfff) >> 2) as usize,
            byte,
        })
    }
}

impl MutDeviceMmio for Ecam {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        match self.decode(offset, data.len()) {
            Some(t) => {
                let dword = lock(&self.root).config_read(t.bus, t.devfn, t.reg_idx);
                read_dword_bytes(dword, t.byte, data);
            }
            None => {
                log::debug!("ecam: {}-byte read at {offset:#x}", data.len());
                data.fill(0xff);
            }
        }
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        match self.decode(offset, data.len()) {
            Some(t) => {
                lock(&self.root).config_write(t.bus, t.devfn, t.reg_idx, t.byte as u64, data);
            }
            None => log::debug!("ecam: {}-byte write at {offset:#x}", data.len()),
        }
    }
}

impl Stateful for Ecam {
    type State = EcamState;
    type Error = Infallible;

    fn save_state(&self) -> EcamState {
        EcamState {}
    }

    fn restore_state(&mut self, _state: EcamState) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Reset for Ecam {
    // No state of its own; the root bus is reset by its owner.
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: MmioAddress = MmioAddress(0xb000_0000);

    fn ecam(buses: u16) -> Ecam {
        Ecam::new(Arc::new(Mutex::new(PciRoot::new())), buses).unwrap()
    }

    fn offset(bus: u64, device: u64, function: u64, reg: u64) -> u64 {
        bus << 20 | device << 15 | function << 12 | reg
    }

    fn read(e: &mut Ecam, at: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        e.mmio_read(BASE, at, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn enumerate_finds_host_bridge_only() {
        let mut e = ecam(1);
        let found: Vec<_> = (0..32)
            .filter_map(|d| {
                let id = read(&mut e, offset(0, d, 0, 0), 4);
                (id & 0xffff != 0xffff).then_some((d, id))
            })
            .collect();
        assert_eq!(found, [(0, 0x0008_1b36)]);
        assert_eq!(read(&mut e, offset(0, 5, 0, 0), 2), 0xffff);
        assert_eq!(read(&mut e, offset(0, 0, 0, 0xb), 1), 0x06);
        assert_eq!(read(&mut e, offset(0, 0, 0, 0x2), 2), 0x0008);
    }

    #[test]
    fn other_buses_and_outside_window() {
        let mut e = ecam(4);
        assert_eq!(e.size(), 4 << 20);
        assert_eq!(read(&mut e, offset(3, 0, 0, 0), 4), u32::MAX);
        assert_eq!(read(&mut e, offset(4, 0, 0, 0), 4), u32::MAX);
        // Extended space of a conventional function.
        assert_eq!(read(&mut e, offset(0, 0, 0, 0x100), 4), u32::MAX);
    }

    #[test]
    fn writes_and_misaligned_accesses() {
        let mut e = ecam(1);
        e.mmio_write(BASE, offset(0, 0, 0, 4), &[0x06, 0x00]);
        assert_eq!(read(&mut e, offset(0, 0, 0, 4), 2), 0x0006);
        // Crossing a dword, or 8 bytes wide: all-ones, dropped.
        assert_eq!(read(&mut e, offset(0, 0, 0, 3), 2), 0xffff);
        e.mmio_write(BASE, offset(0, 0, 0, 3), &[0, 0]);
        let mut wide = [0u8; 8];
        e.mmio_read(BASE, 0, &mut wide);
        assert_eq!(wide, [0xff; 8]);
        assert_eq!(read(&mut e, offset(0, 0, 0, 4), 2), 0x0006);
    }

    #[test]
    fn bus_count_is_checked() {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        assert_eq!(
            Ecam::new(root.clone(), 0).unwrap_err(),
            EcamError::BusCount(0)
        );
        assert_eq!(
            Ecam::new(root.clone(), 257).unwrap_err(),
            EcamError::BusCount(257)
        );
        assert_eq!(Ecam::new(root, 256).unwrap().size(), 256 << 20);
    }
}
