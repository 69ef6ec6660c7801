//! A PCI function's configuration space.
//!
//! Every dword has a mask of guest-writable bits and a mask of
//! write-1-to-clear bits; everything else is read-only to the guest. The
//! values set while building the function (header, BARs, capabilities,
//! firmware-style assignments) are its power-on values, which a reset brings
//! back.

use serde::{Deserialize, Serialize};

use super::bar::{BarKind, BarShape, PciBar, NUM_BARS};

/// Offset of the vendor ID.
pub const VENDOR_ID: usize = 0x00;
/// Offset of the device ID.
pub const DEVICE_ID: usize = 0x02;
/// Offset of the command register.
pub const COMMAND: usize = 0x04;
/// Offset of the status register.
pub const STATUS: usize = 0x06;
/// Offset of the revision ID.
pub const REVISION_ID: usize = 0x08;
/// Offset of the programming interface byte.
pub const PROG_IF: usize = 0x09;
/// Offset of the subclass byte.
pub const SUBCLASS: usize = 0x0a;
/// Offset of the class code byte.
pub const CLASS: usize = 0x0b;
/// Offset of the header type byte.
pub const HEADER_TYPE: usize = 0x0e;
/// Offset of BAR 0.
pub const BAR0: usize = 0x10;
/// Offset of the subsystem vendor ID.
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Offset of the subsystem ID.
pub const SUBSYSTEM_ID: usize = 0x2e;
/// Offset of the capabilities pointer.
pub const CAPABILITIES_POINTER: usize = 0x34;
/// Offset of the interrupt line.
pub const INTERRUPT_LINE: usize = 0x3c;
/// Offset of the interrupt pin.
pub const INTERRUPT_PIN: usize = 0x3d;

/// Command register: respond to I/O space accesses.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: respond to memory space accesses.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: may master the bus (DMA, MSI).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx assertion disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: a capability list is present.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

// IO, MEMORY, BUS_MASTER, PARITY_ERROR_RESPONSE, SERR, INTX_DISABLE.
const COMMAND_WRITABLE: u32 = 0x0547;
// Detected parity error, signalled SERR, received master and target aborts,
// signalled target abort, master data parity error.
const STATUS_W1C: u32 = 0xf900;
const MULTIFUNCTION: u8 = 0x80;
const FIRST_CAPABILITY: usize = 0x40;
const CAPABILITY_AREA_END: usize = 0x100;

/// Errors building or restoring a configuration space.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PciConfigError {
    /// The BAR number is out of range for the BAR kind.
    #[error("bar {0} out of range")]
    BarIndex(usize),
    /// The BAR (or the upper half a 64-bit BAR needs) is already declared.
    #[error("bar {0} already in use")]
    BarInUse(usize),
    /// The size is not a power of two within the kind's limits.
    #[error("invalid bar size {0:#x}")]
    BarSize(u64),
    /// Only memory BARs can be prefetchable.
    #[error("i/o bar cannot be prefetchable")]
    PrefetchableIo,
    /// No BAR is declared at this number.
    #[error("bar {0} not declared")]
    NoSuchBar(usize),
    /// The address is misaligned or outside the BAR's address space.
    #[error("invalid address {address:#x} for bar {index}")]
    BarAddress {
        /// BAR number.
        index: usize,
        /// Rejected address.
        address: u64,
    },
    /// The capability does not fit in the standard configuration space.
    #[error("no room for a {0}-byte capability")]
    CapabilitySpace(usize),
    /// The register index is past the end of the configuration space.
    #[error("register {0} out of range")]
    Register(usize),
    /// A saved configuration space has the wrong size.
    #[error("saved space has {got} dwords, expected {expected}")]
    StateSize {
        /// Dwords in this function's space.
        expected: usize,
        /// Dwords in the saved space.
        got: usize,
    },
}

/// Size of a configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSpaceSize {
    /// 256 bytes: a conventional PCI function.
    Pci,
    /// 4096 bytes: a PCI Express function with extended space.
    PciExpress,
}

impl ConfigSpaceSize {
    /// Size in dwords.
    pub fn dwords(self) -> usize {
        match self {
            Self::Pci => 64,
            Self::PciExpress => 1024,
        }
    }
}

/// Identification of a type 0 (endpoint) function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Base class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Whether the device has functions other than 0; software only scans
    /// functions 1-7 when function 0 says so.
    pub multifunction: bool,
    /// Interrupt pin (0 none, 1-4 INTA#-INTD#).
    pub interrupt_pin: u8,
}

/// Saved configuration space of a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfigurationState {
    /// Register values, one per dword.
    pub regs: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
enum BarSlot {
    Free,
    Declared(BarShape),
    /// Upper register of the 64-bit BAR in the slot below.
    UpperHalf,
}

/// A function's configuration space.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    regs: Vec<u32>,
    power_on: Vec<u32>,
    write_mask: Vec<u32>,
    w1c_mask: Vec<u32>,
    bars: [BarSlot; NUM_BARS],
    last_capability: Option<usize>,
    next_capability: usize,
}

impl PciConfiguration {
    /// Creates a type 0 header with `header`'s identification; command
    /// register, cache line size and interrupt line are guest-writable, the
    /// status register's error bits are write-1-to-clear.
    pub fn new(header: &PciHeader, size: ConfigSpaceSize) -> Self {
        let dwords = size.dwords();
        let mut config = Self {
            regs: vec![0; dwords],
            power_on: vec![0; dwords],
            write_mask: vec![0; dwords],
            w1c_mask: vec![0; dwords],
            bars: [BarSlot::Free; NUM_BARS],
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        };
        config.set_power_on_word(VENDOR_ID, header.vendor_id);
        config.set_power_on_word(DEVICE_ID, header.device_id);
        config.set_power_on_byte(REVISION_ID, header.revision);
        config.set_power_on_byte(PROG_IF, header.prog_if);
        config.set_power_on_byte(SUBCLASS, header.subclass);
        config.set_power_on_byte(CLASS, header.class);
        let header_type = if header.multifunction {
            MULTIFUNCTION
        } else {
            0
        };
        config.set_power_on_byte(HEADER_TYPE, header_type);
        config.set_power_on_word(SUBSYSTEM_VENDOR_ID, header.subsystem_vendor_id);
        config.set_power_on_word(SUBSYSTEM_ID, header.subsystem_id);
        config.set_power_on_byte(INTERRUPT_PIN, header.interrupt_pin);

        config.write_mask[COMMAND / 4] = COMMAND_WRITABLE;
        config.w1c_mask[STATUS / 4] = STATUS_W1C << 16;
        // Cache line size.
        config.write_mask[0x0c / 4] = 0xff;
        config.write_mask[INTERRUPT_LINE / 4] = 0xff;
        config
    }

    /// Number of dwords in the space.
    pub fn dwords(&self) -> usize {
        self.regs.len()
    }

    /// Reads dword `reg_idx`; all-ones past the end of the space.
    pub fn read_reg(&self, reg_idx: usize) -> u32 {
        self.regs.get(reg_idx).copied().unwrap_or(u32::MAX)
    }

    /// Applies a guest write of `data` (1, 2 or 4 bytes) at byte `offset`
    /// of dword `reg_idx`, honouring the writable and write-1-to-clear
    /// masks. Writes past the end of the space or crossing the dword are
    /// dropped.
    pub fn write_reg(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        let Some((value, lanes)) = dword_lanes(offset, data) else {
            log::debug!(
                "pci config: dropped {}-byte write at dword {reg_idx} offset {offset}",
                data.len()
            );
            return;
        };
        let Some(reg) = self.regs.get_mut(reg_idx) else {
            return;
        };
        let writable = self.write_mask[reg_idx] & lanes;
        let clearable = self.w1c_mask[reg_idx] & lanes;
        *reg = (*reg & !writable) | (value & writable);
        *reg &= !(value & clearable);
    }

    /// Sets dword `reg_idx` as the device itself would (status bits, say),
    /// bypassing the guest masks. Not kept across a reset.
    pub fn set_reg(&mut self, reg_idx: usize, value: u32) -> Result<(), PciConfigError> {
        let reg = self
            .regs
            .get_mut(reg_idx)
            .ok_or(PciConfigError::Register(reg_idx))?;
        *reg = value;
        Ok(())
    }

    /// Makes the bits in `mask` of dword `reg_idx` guest-writable (for
    /// capability fields).
    pub fn set_write_mask(&mut self, reg_idx: usize, mask: u32) -> Result<(), PciConfigError> {
        let m = self
            .write_mask
            .get_mut(reg_idx)
            .ok_or(PciConfigError::Register(reg_idx))?;
        *m = mask;
        Ok(())
    }

    /// Makes the bits in `mask` of dword `reg_idx` write-1-to-clear.
    pub fn set_w1c_mask(&mut self, reg_idx: usize, mask: u32) -> Result<(), PciConfigError> {
        let m = self
            .w1c_mask
            .get_mut(reg_idx)
            .ok_or(PciConfigError::Register(reg_idx))?;
        *m = mask;
        Ok(())
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_reg(COMMAND / 4) as u16
    }

    /// Whether the guest enabled I/O space decoding (I/O BARs are live).
    pub fn io_enabled(&self) -> bool {
        self.command() & COMMAND_IO != 0
    }

    /// Whether the guest enabled memory space decoding (memory BARs are live).
    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    /// Whether the guest allows the function to master the bus.
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    /// Sets the interrupt line as firmware would, kept across resets.
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.set_power_on_byte(INTERRUPT_LINE, line);
    }

    /// Declares BAR `index` of `size` bytes (a power of two) decoding `kind`
    /// space. A 64-bit BAR also takes register `index + 1`.
    pub fn add_bar(
        &mut self,
        index: usize,
        size: u64,
        kind: BarKind,
        prefetchable: bool,
    ) -> Result<(), PciConfigError> {
        let shape = BarShape {
            kind,
            size,
            prefetchable,
        };
        if kind == BarKind::Io && prefetchable {
            return Err(PciConfigError::PrefetchableIo);
        }
        if !shape.size_is_valid() {
            return Err(PciConfigError::BarSize(size));
        }
        let count = shape.register_count();
        let slots = self
            .bars
            .get(index..index + count)
            .ok_or(PciConfigError::BarIndex(index))?;
        if let Some(used) = slots.iter().position(|s| !matches!(s, BarSlot::Free)) {
            return Err(PciConfigError::BarInUse(index + used));
        }

        let (low_mask, high_mask) = shape.write_masks();
        let reg = BAR0 / 4 + index;
        self.set_power_on_dword(reg, shape.flag_bits());
        self.write_mask[reg] = low_mask;
        self.bars[index] = BarSlot::Declared(shape);
        if count == 2 {
            self.set_power_on_dword(reg + 1, 0);
            self.write_mask[reg + 1] = high_mask;
            self.bars[index + 1] = BarSlot::UpperHalf;
        }
        Ok(())
    }

    /// Programs BAR `index` with `address`, as firmware assigning resources
    /// would; kept across resets.
    pub fn set_bar_address(&mut self, index: usize, address: u64) -> Result<(), PciConfigError> {
        let shape = self.bar_shape(index)?;
        if !shape.address_is_valid(address) {
            return Err(PciConfigError::BarAddress { index, address });
        }
        let reg = BAR0 / 4 + index;
        self.set_power_on_dword(reg, address as u32 | shape.flag_bits());
        if shape.kind == BarKind::Mem64 {
            self.set_power_on_dword(reg + 1, (address >> 32) as u32);
        }
        Ok(())
    }

    /// BAR `index` with its current address, if one is declared there.
    pub fn bar(&self, index: usize) -> Option<PciBar> {
        let shape = self.bar_shape(index).ok()?;
        let reg = BAR0 / 4 + index;
        let high = match shape.kind {
            BarKind::Mem64 => self.regs[reg + 1],
            BarKind::Io | BarKind::Mem32 => 0,
        };
        Some(PciBar {
            index,
            kind: shape.kind,
            size: shape.size,
            prefetchable: shape.prefetchable,
            address: shape.address(self.regs[reg], high),
        })
    }

    /// All declared BARs, lowest index first.
    pub fn bars(&self) -> impl Iterator<Item = PciBar> + '_ {
        (0..NUM_BARS).filter_map(|i| self.bar(i))
    }

    /// Appends a capability with ID `id` whose bytes after the ID and next
    /// pointer are `body`, and returns its offset. Its contents are
    /// read-only until [`Self::set_write_mask`] says otherwise.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciConfigError> {
        let len = 2 + body.len();
        let offset = self.next_capability;
        let end = offset + len;
        if end > CAPABILITY_AREA_END {
            return Err(PciConfigError::CapabilitySpace(len));
        }
        self.set_power_on_byte(offset, id);
        self.set_power_on_byte(offset + 1, 0);
        for (i, byte) in body.iter().enumerate() {
            self.set_power_on_byte(offset + 2 + i, *byte);
        }
        // Both offsets are below 0x100.
        match self.last_capability {
            Some(previous) => self.set_power_on_byte(previous + 1, offset as u8),
            None => self.set_power_on_byte(CAPABILITIES_POINTER, offset as u8),
        }
        let status = self.power_on_word(STATUS) | STATUS_CAPABILITIES;
        self.set_power_on_word(STATUS, status);
        self.last_capability = Some(offset);
        // Capabilities start on dword boundaries.
        self.next_capability = end.next_multiple_of(4);
        Ok(offset)
    }

    /// Returns every register to its power-on value.
    pub fn reset(&mut self) {
        self.regs.copy_from_slice(&self.power_on);
    }

    /// Captures the register values.
    pub fn save_state(&self) -> PciConfigurationState {
        PciConfigurationState {
            regs: self.regs.clone(),
        }
    }

    /// Restores register values saved from a function built the same way.
    pub fn restore_state(&mut self, state: &PciConfigurationState) -> Result<(), PciConfigError> {
        if state.regs.len() != self.regs.len() {
            return Err(PciConfigError::StateSize {
                expected: self.regs.len(),
                got: state.regs.len(),
            });
        }
        self.regs.copy_from_slice(&state.regs);
        Ok(())
    }

    fn bar_shape(&self, index: usize) -> Result<BarShape, PciConfigError> {
        match self.bars.get(index) {
            Some(BarSlot::Declared(shape)) => Ok(*shape),
            _ => Err(PciConfigError::NoSuchBar(index)),
        }
    }

    fn set_power_on_dword(&mut self, reg_idx: usize, value: u32) {
        self.power_on[reg_idx] = value;
        self.regs[reg_idx] = value;
    }

    fn set_power_on_bytes(&mut self, offset: usize, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let at = offset + i;
            let shift = 8 * (at % 4);
            let value = (self.power_on[at / 4] & !(0xff << shift)) | u32::from(*byte) << shift;
            self.set_power_on_dword(at / 4, value);
        }
    }

    fn set_power_on_byte(&mut self, offset: usize, value: u8) {
        self.set_power_on_bytes(offset, &[value]);
    }

    fn set_power_on_word(&mut self, offset: usize, value: u16) {
        self.set_power_on_bytes(offset, &value.to_le_bytes());
    }

    fn power_on_word(&self, offset: usize) -> u16 {
        (self.power_on[offset / 4] >> (8 * (offset % 4))) as u16
    }
}

/// The value of a `data.len()`-byte access at byte `offset` of a dword,
/// shifted into place, and the mask of the bytes it covers; `None` for an
/// access that is not 1, 2 or 4 bytes or leaves the dword.
fn dword_lanes(offset: u64, data: &[u8]) -> Option<(u32, u32)> {
    let offset = usize::try_from(offset).ok()?;
    if !matches!(data.len(), 1 | 2 | 4) || offset + data.len() > 4 {
        return None;
    }
    let mut value = 0u32;
    let mut lanes = 0u32;
    for (i, byte) in data.iter().enumerate() {
        let shift = 8 * (offset + i);
        value |= u32::from(*byte) << shift;
        lanes |= 0xff << shift;
    }
    Some((value, lanes))
}

#[cfg(test)]
mod tests;
