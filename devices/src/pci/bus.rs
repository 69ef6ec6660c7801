//! The root bus: PCI functions on bus 0, keyed by devfn.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::device::PciDevice;
use super::host_bridge::HostBridge;
use super::{DEVICES_PER_BUS, FUNCTIONS_PER_DEVICE};
use crate::sync::lock;
use crate::Reset;

/// A function shared between the root bus and whoever else drives it (the
/// VMM's BAR handlers, its event loop).
pub type PciDeviceHandle = Arc<Mutex<dyn PciDevice>>;

/// Errors from the root bus.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PciBusError {
    /// A function already sits at that devfn.
    #[error("devfn {0:#04x} already in use")]
    SlotInUse(u8),
}

/// Bus 0 and its functions. Other bus numbers have nothing on them.
pub struct PciRoot {
    devices: BTreeMap<u8, PciDeviceHandle>,
}

impl PciRoot {
    /// Creates the root bus with the host bridge at 00:00.0.
    pub fn new() -> Self {
        let host_bridge: PciDeviceHandle = Arc::new(Mutex::new(HostBridge::new()));
        Self {
            devices: BTreeMap::from([(0, host_bridge)]),
        }
    }

    /// Places `device` at `devfn` (see [`super::devfn`]).
    ///
    /// A function other than 0 is only found by software if function 0 of
    /// the same device declares itself multi-function.
    pub fn add_device(&mut self, devfn: u8, device: PciDeviceHandle) -> Result<(), PciBusError> {
        if self.devices.contains_key(&devfn) {
            return Err(PciBusError::SlotInUse(devfn));
        }
        self.devices.insert(devfn, device);
        Ok(())
    }

    /// Takes the function at `devfn` off the bus.
    pub fn remove_device(&mut self, devfn: u8) -> Option<PciDeviceHandle> {
        self.devices.remove(&devfn)
    }

    /// The function at `devfn`.
    pub fn device(&self, devfn: u8) -> Option<&PciDeviceHandle> {
        self.devices.get(&devfn)
    }

    /// The devfn of function 0 of the lowest device number with no function
    /// in use, or `None` when all 32 are taken.
    pub fn next_free_slot(&self) -> Option<u8> {
        (0..DEVICES_PER_BUS).map(|d| d << 3).find(|&first| {
            let last = first + (FUNCTIONS_PER_DEVICE - 1);
            self.devices.range(first..=last).next().is_none()
        })
    }

    /// Reads dword `reg_idx` of function `devfn` on `bus`; all-ones where
    /// there is no function, which is how software sees an empty slot.
    pub fn config_read(&self, bus: u8, devfn: u8, reg_idx: usize) -> u32 {
        match self.function(bus, devfn) {
            Some(device) => lock(device).config_read(reg_idx),
            None => u32::MAX,
        }
    }

    /// Writes `data` at byte `offset` of dword `reg_idx` of function `devfn`
    /// on `bus`; dropped where there is no function.
    pub fn config_write(&self, bus: u8, devfn: u8, reg_idx: usize, offset: u64, data: &[u8]) {
        if let Some(device) = self.function(bus, devfn) {
            lock(device).config_write(reg_idx, offset, data);
        }
    }

    fn function(&self, bus: u8, devfn: u8) -> Option<&PciDeviceHandle> {
        if bus == 0 {
            self.devices.get(&devfn)
        } else {
            None
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        // try_lock: printing must not deadlock against a thread (possibly
        // this one) that is inside a device.
        for (devfn, device) in &self.devices {
            match device.try_lock() {
                Ok(device) => map.entry(devfn, &device.id()),
                Err(_) => map.entry(devfn, &"<busy>"),
            };
        }
        map.finish()
    }
}

impl Reset for PciRoot {
    /// Resets every function on the bus. The access paths ([`super::ConfigIo`],
    /// [`super::Ecam`]) are reset separately.
    fn reset(&mut self) {
        for device in self.devices.values() {
            lock(device).reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::devfn;

    fn bridge() -> PciDeviceHandle {
        Arc::new(Mutex::new(HostBridge::new()))
    }

    #[test]
    fn host_bridge_at_zero() {
        let root = PciRoot::new();
        assert_eq!(root.config_read(0, 0, 0), 0x0008_1b36);
        assert_eq!(root.config_read(0, 8, 0), u32::MAX);
        assert_eq!(root.config_read(1, 0, 0), u32::MAX);
    }

    #[test]
    fn add_and_conflict() {
        let mut root = PciRoot::new();
        let slot = root.next_free_slot().unwrap();
        assert_eq!(slot, devfn(1, 0).unwrap());
        root.add_device(slot, bridge()).unwrap();
        assert_eq!(
            root.add_device(slot, bridge()),
            Err(PciBusError::SlotInUse(slot))
        );
        assert_eq!(root.next_free_slot(), devfn(2, 0));
        // A function of device 2 makes the whole device number taken.
        root.add_device(devfn(2, 3).unwrap(), bridge()).unwrap();
        assert_eq!(root.next_free_slot(), devfn(3, 0));
        assert!(root.remove_device(slot).is_some());
        assert_eq!(root.next_free_slot(), devfn(1, 0));
    }

    #[test]
    fn full_bus() {
        let mut root = PciRoot::new();
        while let Some(slot) = root.next_free_slot() {
            root.add_device(slot, bridge()).unwrap();
        }
        assert_eq!(root.devices.len(), 32);
    }

    #[test]
    fn writes_reach_function_and_reset_clears() {
        let mut root = PciRoot::new();
        root.config_write(0, 0, 1, 0, &[0x06]);
        root.config_write(0, 8, 1, 0, &[0x06]);
        assert_eq!(root.config_read(0, 0, 1) & 0xffff, 0x06);
        root.reset();
        assert_eq!(root.config_read(0, 0, 1) & 0xffff, 0);
    }
}
