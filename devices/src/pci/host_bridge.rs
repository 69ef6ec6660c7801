//! The host bridge function at 00:00.0, identifying itself as QEMU's PCIe
//! host bridge so guests recognise the machine.

use serde::{Deserialize, Serialize};

use super::config::{
    ConfigSpaceSize, PciConfigError, PciConfiguration, PciConfigurationState, PciHeader,
};
use super::device::PciDevice;
use crate::{Reset, Stateful};

/// Red Hat, Inc.
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x1b36;
/// QEMU PCIe host bridge.
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0008;
/// Bridge device.
pub const CLASS_BRIDGE: u8 = 0x06;
/// Host bridge.
pub const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

// QEMU's default subsystem IDs (Red Hat/Qumranet, QEMU).
const SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;
const SUBSYSTEM_ID: u16 = 0x1100;

/// Saved state of the host bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBridgeState {
    /// Its configuration space.
    pub config: PciConfigurationState,
}

/// The host bridge function. It has no BARs and no behaviour beyond its
/// configuration space.
#[derive(Clone, Debug)]
pub struct HostBridge {
    config: PciConfiguration,
}

impl HostBridge {
    /// Creates the host bridge.
    pub fn new() -> Self {
        let header = PciHeader {
            vendor_id: HOST_BRIDGE_VENDOR_ID,
            device_id: HOST_BRIDGE_DEVICE_ID,
            class: CLASS_BRIDGE,
            subclass: SUBCLASS_HOST_BRIDGE,
            subsystem_vendor_id: SUBSYSTEM_VENDOR_ID,
            subsystem_id: SUBSYSTEM_ID,
            ..PciHeader::default()
        };
        Self {
            config: PciConfiguration::new(&header, ConfigSpaceSize::Pci),
        }
    }

    /// Its configuration space.
    pub fn config(&self) -> &PciConfiguration {
        &self.config
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn id(&self) -> &str {
        "host-bridge"
    }

    fn config_read(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write_reg(reg_idx, offset, data);
    }
}

impl Reset for HostBridge {
    fn reset(&mut self) {
        self.config.reset();
    }
}

impl Stateful for HostBridge {
    type State = HostBridgeState;
    type Error = PciConfigError;

    fn save_state(&self) -> HostBridgeState {
        HostBridgeState {
            config: self.config.save_state(),
        }
    }

    fn restore_state(&mut self, state: HostBridgeState) -> Result<(), PciConfigError> {
        self.config.restore_state(&state.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity() {
        let mut hb = HostBridge::new();
        assert_eq!(hb.config_read(0), 0x0008_1b36);
        assert_eq!(hb.config_read(2) >> 8, 0x06_00_00);
        assert_eq!(hb.config_read(3) >> 16 & 0xff, 0);
        assert_eq!(hb.config().bars().count(), 0);
    }

    #[test]
    fn state_and_reset() {
        let mut hb = HostBridge::new();
        hb.config_write(1, 0, &[0x06]);
        let state = hb.save_state();
        hb.reset();
        assert_eq!(hb.config().command(), 0);
        hb.restore_state(state).unwrap();
        assert_eq!(hb.config().command(), 0x06);
    }
}
