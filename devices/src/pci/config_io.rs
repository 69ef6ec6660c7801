//! PCI configuration mechanism #1: the address register at port 0xcf8 and
//! the data window at 0xcfc-0xcff.
//!
//! Register this device at [`CONFIG_IO_PORT_BASE`] with length
//! [`CONFIG_IO_PORT_LEN`] (0xcf8-0xcff). The address register spans
//! 0xcf8-0xcfb, so it contains the chipset's reset control register at
//! 0xcf9 and the two cannot be registered as separate devices. The chipset
//! tells them apart by access width, and so does this device:
//!
//! - a dword access at 0xcf8 is the address register;
//! - a byte access at 0xcf9 goes to the [`ResetControl`] it was given;
//! - any other access to 0xcf8-0xcfb reads all-ones and is dropped;
//! - accesses of 1, 2 or 4 bytes at 0xcfc + n reach byte n of the dword the
//!   address register selects, when its enable bit (31) is set.
//!
//! Only bus 0 has functions; configuration cycles to other buses read
//! all-ones.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use super::bus::PciRoot;
use super::read_dword_bytes;
use crate::acpi::ResetControl;
use crate::sync::lock;
use crate::{Reset, Stateful};

/// I/O port base: the configuration address register.
pub const CONFIG_IO_PORT_BASE: u16 = 0xcf8;
/// Ports decoded: address register (with reset control inside) and data.
pub const CONFIG_IO_PORT_LEN: u16 = 8;

const ADDRESS_OFFSET: u16 = 0;
const RESET_CONTROL_OFFSET: u16 = 1;
const DATA_OFFSET: u16 = 4;
const ENABLE: u32 = 1 << 31;

/// Saved state of the configuration ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigIoState {
    /// The configuration address register.
    pub address: u32,
}

/// Configuration mechanism #1 for the root bus.
#[derive(Debug)]
pub struct ConfigIo {
    root: Arc<Mutex<PciRoot>>,
    reset_control: Arc<Mutex<ResetControl>>,
    address: u32,
}

impl ConfigIo {
    /// Creates the ports over `root`, forwarding 0xcf9 to `reset_control`.
    pub fn new(root: Arc<Mutex<PciRoot>>, reset_control: Arc<Mutex<ResetControl>>) -> Self {
        Self {
            root,
            reset_control,
            address: 0,
        }
    }

    /// The configuration address register.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// Bus, devfn and dword index the address register selects, if enabled.
    fn target(&self) -> Option<(u8, u8, usize)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) as u8;
        let devfn = (self.address >> 8) as u8;
        let reg_idx = (self.address >> 2 & 0x3f) as usize;
        Some((bus, devfn, reg_idx))
    }
}

impl MutDevicePio for ConfigIo {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match (offset, data.len()) {
            (ADDRESS_OFFSET, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (RESET_CONTROL_OFFSET, 1) => data[0] = lock(&self.reset_control).read(),
            (DATA_OFFSET.., _) => match self.target() {
                Some((bus, devfn, reg_idx)) => {
                    let dword = lock(&self.root).config_read(bus, devfn, reg_idx);
                    read_dword_bytes(dword, usize::from(offset - DATA_OFFSET), data);
                }
                None => data.fill(0xff),
            },
            _ => {
                log::debug!("pci config io: {}-byte read at {offset:#x}", data.len());
                data.fill(0xff);
            }
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        match (offset, data) {
            (ADDRESS_OFFSET, &[a, b, c, d]) => self.address = u32::from_le_bytes([a, b, c, d]),
            (RESET_CONTROL_OFFSET, &[value]) => lock(&self.reset_control).write(value),
            (DATA_OFFSET.., _) => {
                let byte = usize::from(offset - DATA_OFFSET);
                match self.target() {
                    Some((bus, devfn, reg_idx)) if byte + data.len() <= 4 => {
                        lock(&self.root).config_write(bus, devfn, reg_idx, byte as u64, data);
                    }
                    _ => {}
                }
            }
            _ => log::debug!("pci config io: {}-byte write at {offset:#x}", data.len()),
        }
    }
}

impl Stateful for ConfigIo {
    type State = ConfigIoState;
    type Error = Infallible;

    fn save_state(&self) -> ConfigIoState {
        ConfigIoState {
            address: self.address,
        }
    }

    fn restore_state(&mut self, state: ConfigIoState) -> Result<(), Infallible> {
        self.address = state.address;
        Ok(())
    }
}

impl Reset for ConfigIo {
    /// Clears the address register. The root bus and the reset control
    /// register are reset by their own owners.
    fn reset(&mut self) {
        self.address = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::reset::RESET_VALUE;
    use crate::EventFdTrigger;

    const BASE: PioAddress = PioAddress(CONFIG_IO_PORT_BASE);

    fn config_io() -> (ConfigIo, EventFdTrigger) {
        let reset = EventFdTrigger::new().unwrap();
        let rc = Arc::new(Mutex::new(ResetControl::new(reset.try_clone().unwrap())));
        let root = Arc::new(Mutex::new(PciRoot::new()));
        (ConfigIo::new(root, rc), reset)
    }

    fn select(io: &mut ConfigIo, bus: u8, device: u8, function: u8, reg: u8) {
        let address = ENABLE
            | u32::from(bus) << 16
            | u32::from(device) << 11
            | u32::from(function) << 8
            | u32::from(reg);
        io.pio_write(BASE, 0, &address.to_le_bytes());
    }

    fn read(io: &mut ConfigIo, offset: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        io.pio_read(BASE, offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn enumerate_finds_host_bridge_only() {
        let (mut io, _reset) = config_io();
        let mut found = Vec::new();
        for device in 0..32 {
            select(&mut io, 0, device, 0, 0);
            let vendor = read(&mut io, 4, 2);
            if vendor != 0xffff {
                found.push((device, vendor, read(&mut io, 6, 2)));
            }
        }
        assert_eq!(found, [(0, 0x1b36, 0x0008)]);

        select(&mut io, 0, 0, 0, 0x08);
        assert_eq!(read(&mut io, 4, 4) >> 8, 0x06_00_00);
        select(&mut io, 1, 0, 0, 0);
        assert_eq!(read(&mut io, 4, 4), u32::MAX);
        select(&mut io, 0, 0, 1, 0);
        assert_eq!(read(&mut io, 4, 2), 0xffff);
    }

    #[test]
    fn byte_and_word_lanes() {
        let (mut io, _reset) = config_io();
        select(&mut io, 0, 0, 0, 0);
        assert_eq!(read(&mut io, 4, 1), 0x36);
        assert_eq!(read(&mut io, 5, 1), 0x1b);
        assert_eq!(read(&mut io, 6, 1), 0x08);
        assert_eq!(read(&mut io, 7, 1), 0x00);
        assert_eq!(read(&mut io, 6, 2), 0x0008);

        // Command register through the data window, word and byte wide.
        select(&mut io, 0, 0, 0, 0x04);
        io.pio_write(BASE, 4, &0x0006u16.to_le_bytes());
        assert_eq!(read(&mut io, 4, 2), 0x0006);
        io.pio_write(BASE, 4, &[0x02]);
        assert_eq!(read(&mut io, 4, 4) & 0xffff, 0x0002);
        // Interrupt line at 0x3c, byte lane 0; the register bits 1:0 are
        // ignored in the address.
        select(&mut io, 0, 0, 0, 0x3c | 0x3);
        io.pio_write(BASE, 4, &[0x0b]);
        assert_eq!(read(&mut io, 4, 1), 0x0b);
    }

    #[test]
    fn disabled_address_reads_ones() {
        let (mut io, _reset) = config_io();
        io.pio_write(BASE, 0, &0x0000_0000u32.to_le_bytes());
        assert_eq!(read(&mut io, 4, 4), u32::MAX);
        io.pio_write(BASE, 4, &[0x06]);
        select(&mut io, 0, 0, 0, 4);
        assert_eq!(read(&mut io, 4, 2), 0);
    }

    #[test]
    fn address_register_reads_back() {
        let (mut io, _reset) = config_io();
        io.pio_write(BASE, 0, &0x8000_0000u32.to_le_bytes());
        assert_eq!(read(&mut io, 0, 4), 0x8000_0000);
        // Linux's type 1 probe pokes a byte at 0xcfb first: not the address
        // register.
        io.pio_write(BASE, 3, &[0x01]);
        assert_eq!(read(&mut io, 0, 4), 0x8000_0000);
        assert_eq!(read(&mut io, 0, 2), 0xffff);
    }

    #[test]
    fn byte_at_cf9_is_reset_control() {
        let (mut io, reset) = config_io();
        io.pio_write(BASE, 0, &0x8000_0000u32.to_le_bytes());
        io.pio_write(BASE, 1, &[RESET_VALUE]);
        assert_eq!(reset.event_fd().read().unwrap(), 1);
        assert_eq!(read(&mut io, 1, 1), 0x02);
        // The address register is untouched.
        assert_eq!(read(&mut io, 0, 4), 0x8000_0000);
        // A dword write whose second byte has bit 2 set is an address.
        io.pio_write(BASE, 0, &0x8000_0400u32.to_le_bytes());
        assert!(reset.event_fd().read().is_err());
    }

    #[test]
    fn state_and_reset() {
        let (mut io, _reset) = config_io();
        select(&mut io, 0, 3, 0, 0x10);
        let state = io.save_state();
        io.reset();
        assert_eq!(io.address(), 0);
        io.restore_state(state).unwrap();
        assert_eq!(io.address(), 0x8000_1810);
    }
}
