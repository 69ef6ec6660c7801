//! The i8042 keyboard controller, emulated only as far as its CPU reset line,
//! built on `vm_superio::I8042Device`.
//!
//! The VMM registers it at [`I8042_PORT_BASE`] with length [`I8042_PORT_LEN`],
//! covering the data port 0x60 (offset 0) and the command/status port 0x64
//! (offset 4). Ports 0x61-0x63 in between are not the controller's: they read
//! as 0xff and ignore writes. (With KVM's in-kernel PIT, port 0x61 is handled
//! by KVM and never reaches this device.)
//!
//! Writing command 0xfe to port 0x64 pulses the reset line: the reset trigger
//! fires. Every other register reads as 0, so the status register never
//! reports output data and a guest that probes for a keyboard finds none.
//! Linux skips the probe entirely when ACPI does not describe a PS/2
//! controller (PNP0303).

use std::convert::Infallible;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::I8042Device;

use crate::{EventFdTrigger, Reset, Stateful};

/// I/O port base of the i8042 (its data port).
pub const I8042_PORT_BASE: u16 = 0x60;
/// Ports decoded from the base: 0x60 through 0x64.
pub const I8042_PORT_LEN: u16 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

/// Saved state of the i8042. The controller keeps no guest-visible state; the
/// struct exists so every device saves and restores the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {}

/// The i8042 controller's reset line.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// Creates the controller; `reset` fires when the guest asks for a CPU
    /// reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match offset {
            // Both offsets fit in a u8; vm-superio takes the same offsets.
            DATA_OFFSET | COMMAND_OFFSET => self.inner.read(offset as u8),
            _ => {
                log::debug!("i8042: read of unknown offset {offset:#x}");
                0xff
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        match offset {
            DATA_OFFSET | COMMAND_OFFSET => {
                if let Err(e) = self.inner.write(offset as u8, value) {
                    log::error!("i8042: signalling reset failed: {e}");
                }
            }
            _ => log::debug!("i8042: write of {value:#04x} to unknown offset {offset:#x}"),
        }
    }
}

impl MutDevicePio for I8042 {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_register(u64::from(offset) + i as u64);
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            self.write_register(u64::from(offset) + i as u64, *byte);
        }
    }
}

impl Stateful for I8042 {
    type State = I8042State;
    type Error = Infallible;

    fn save_state(&self) -> I8042State {
        I8042State {}
    }

    fn restore_state(&mut self, _state: I8042State) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Reset for I8042 {
    // Nothing survives or needs clearing: the controller has no state.
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (I8042, EventFdTrigger) {
        let reset = EventFdTrigger::new().unwrap();
        (I8042::new(reset.try_clone().unwrap()), reset)
    }

    #[test]
    fn reset_command_fires_trigger() {
        let (mut dev, reset) = device();
        dev.pio_write(PioAddress(I8042_PORT_BASE), 4, &[0xfe]);
        assert_eq!(reset.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn other_commands_do_not_reset() {
        let (mut dev, reset) = device();
        dev.pio_write(PioAddress(I8042_PORT_BASE), 4, &[0xaa]);
        dev.pio_write(PioAddress(I8042_PORT_BASE), 0, &[0xfe]);
        dev.pio_write(PioAddress(I8042_PORT_BASE), 1, &[0xfe]);
        assert!(reset.event_fd().read().is_err());
    }

    #[test]
    fn reads() {
        let (mut dev, _reset) = device();
        let mut b = [0u8; 1];
        dev.pio_read(PioAddress(I8042_PORT_BASE), 4, &mut b);
        assert_eq!(b, [0]);
        dev.pio_read(PioAddress(I8042_PORT_BASE), 0, &mut b);
        assert_eq!(b, [0]);
        let mut w = [0u8; 2];
        dev.pio_read(PioAddress(I8042_PORT_BASE), 1, &mut w);
        assert_eq!(w, [0xff, 0xff]);
    }
}
