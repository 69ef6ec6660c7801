//! The chipset reset control register at I/O port 0xcf9 (PIIX4/ICH9 RCR).
//!
//! The FADT's RESET_REG points here with [`RESET_VALUE`]. Port 0xcf9 lies
//! inside the PCI configuration address register (0xcf8-0xcfb), so on a PC
//! the PCI configuration device forwards byte accesses at 0xcf9 to this one
//! (see [`crate::pci::config_io`]); it can also be registered on its own at
//! [`RESET_PORT`] with length [`RESET_PORT_LEN`] on a machine without PCI.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::Trigger;

use crate::{EventFdTrigger, Reset, Stateful};

/// I/O port of the reset control register.
pub const RESET_PORT: u16 = 0xcf9;
/// Ports decoded by the register.
pub const RESET_PORT_LEN: u16 = 1;
/// Value the FADT tells the OS to write to reset the machine (hard reset,
/// reset CPU).
pub const RESET_VALUE: u8 = 0x06;

/// Writing this bit resets the machine; it always reads as 0.
const RST_CPU: u8 = 1 << 2;

/// Saved state of the reset control register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetControlState {
    /// Last value written, with the reset bit clear.
    pub value: u8,
}

/// The reset control register.
#[derive(Debug)]
pub struct ResetControl {
    reset: EventFdTrigger,
    value: u8,
}

impl ResetControl {
    /// Creates the register; `reset` fires when the guest requests a reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        Self { reset, value: 0 }
    }

    /// Reads the register.
    pub fn read(&self) -> u8 {
        self.value
    }

    /// Writes the register, firing the reset trigger if the reset bit is set.
    pub fn write(&mut self, value: u8) {
        self.value = value & !RST_CPU;
        if value & RST_CPU != 0 {
            log::info!("reset control: guest requested reset ({value:#04x})");
            if let Err(e) = self.reset.trigger() {
                log::error!("reset control: signalling reset failed: {e}");
            }
        }
    }
}

impl MutDevicePio for ResetControl {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = if usize::from(offset) + i == 0 {
                self.read()
            } else {
                log::debug!("reset control: read of unknown offset {offset:#x}+{i}");
                0xff
            };
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if usize::from(offset) + i == 0 {
                self.write(*byte);
            } else {
                log::debug!("reset control: write to unknown offset {offset:#x}+{i}");
            }
        }
    }
}

impl Stateful for ResetControl {
    type State = ResetControlState;
    type Error = Infallible;

    fn save_state(&self) -> ResetControlState {
        ResetControlState { value: self.value }
    }

    fn restore_state(&mut self, state: ResetControlState) -> Result<(), Infallible> {
        self.value = state.value & !RST_CPU;
        Ok(())
    }
}

impl Reset for ResetControl {
    fn reset(&mut self) {
        self.value = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (ResetControl, EventFdTrigger) {
        let reset = EventFdTrigger::new().unwrap();
        (ResetControl::new(reset.try_clone().unwrap()), reset)
    }

    #[test]
    fn reset_value_fires_and_reads_back_without_reset_bit() {
        let (mut dev, reset) = device();
        dev.pio_write(PioAddress(RESET_PORT), 0, &[RESET_VALUE]);
        assert_eq!(reset.event_fd().read().unwrap(), 1);
        let mut b = [0];
        dev.pio_read(PioAddress(RESET_PORT), 0, &mut b);
        assert_eq!(b, [0x02]);
    }

    #[test]
    fn other_values_do_not_fire() {
        let (mut dev, reset) = device();
        dev.write(0x02);
        dev.write(0x08);
        assert!(reset.event_fd().read().is_err());
        assert_eq!(dev.read(), 0x08);
    }

    #[test]
    fn state_and_reset() {
        let (mut dev, _reset) = device();
        dev.write(0x02);
        let state = dev.save_state();
        dev.reset();
        assert_eq!(dev.read(), 0);
        dev.restore_state(state).unwrap();
        assert_eq!(dev.read(), 0x02);
    }
}
