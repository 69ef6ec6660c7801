//! Base address registers: what a function asks for and how the size probe
//! sees it.

use serde::{Deserialize, Serialize};

/// Number of BARs in a type 0 header.
pub const NUM_BARS: usize = 6;

const IO_SPACE: u32 = 0x1;
const MEM_TYPE_64: u32 = 0x4;
const MEM_PREFETCHABLE: u32 = 0x8;
/// Low bits of an I/O BAR that are not address.
pub(super) const IO_FLAG_BITS: u32 = 0x3;
/// Low bits of a memory BAR that are not address.
pub(super) const MEM_FLAG_BITS: u32 = 0xf;

const MIN_IO_SIZE: u64 = 4;
const MAX_IO_SIZE: u64 = 1 << 16;
const MIN_MEM_SIZE: u64 = 16;
const MAX_MEM32_SIZE: u64 = 1 << 31;
const MAX_MEM64_SIZE: u64 = 1 << 63;

/// The address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB (one register).
    Mem32,
    /// Memory anywhere (two registers: this one and the next).
    Mem64,
}

/// A BAR as the function declares it, with the address currently
/// programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBar {
    /// BAR number (0-5); for a 64-bit BAR, the lower of its two registers.
    pub index: usize,
    /// Address space decoded.
    pub kind: BarKind,
    /// Size in bytes, a power of two.
    pub size: u64,
    /// Whether reads have no side effects (memory BARs only).
    pub prefetchable: bool,
    /// Address the BAR is programmed with.
    pub address: u64,
}

/// A declared BAR's shape, without its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BarShape {
    pub kind: BarKind,
    pub size: u64,
    pub prefetchable: bool,
}

impl BarShape {
    /// Whether `size` is one this kind of BAR can have: a power of two
    /// within the kind's limits.
    pub fn size_is_valid(&self) -> bool {
        let (min, max) = match self.kind {
            BarKind::Io => (MIN_IO_SIZE, MAX_IO_SIZE),
            BarKind::Mem32 => (MIN_MEM_SIZE, MAX_MEM32_SIZE),
            BarKind::Mem64 => (MIN_MEM_SIZE, MAX_MEM64_SIZE),
        };
        self.size.is_power_of_two() && (min..=max).contains(&self.size)
    }

    /// Registers the BAR occupies.
    pub fn register_count(&self) -> usize {
        match self.kind {
            BarKind::Mem64 => 2,
            BarKind::Io | BarKind::Mem32 => 1,
        }
    }

    /// Read-only type bits of the (low) register.
    pub fn flag_bits(&self) -> u32 {
        let prefetch = if self.prefetchable {
            MEM_PREFETCHABLE
        } else {
            0
        };
        match self.kind {
            BarKind::Io => IO_SPACE,
            BarKind::Mem32 => prefetch,
            BarKind::Mem64 => MEM_TYPE_64 | prefetch,
        }
    }

    /// Writable bits of the low and (for 64-bit BARs) high registers: the
    /// address bits at or above the size. Writing all-ones and reading back
    /// thus yields the size mask, which is how software probes the size.
    pub fn write_masks(&self) -> (u32, u32) {
        let address_mask = !(self.size - 1);
        let flags = match self.kind {
            BarKind::Io => IO_FLAG_BITS,
            BarKind::Mem32 | BarKind::Mem64 => MEM_FLAG_BITS,
        };
        let low = (address_mask as u32) & !flags;
        let high = match self.kind {
            BarKind::Mem64 => (address_mask >> 32) as u32,
            BarKind::Io | BarKind::Mem32 => 0,
        };
        (low, high)
    }

    /// Decodes the programmed address from the BAR's registers.
    pub fn address(&self, low: u32, high: u32) -> u64 {
        match self.kind {
            BarKind::Io => u64::from(low & !IO_FLAG_BITS),
            BarKind::Mem32 => u64::from(low & !MEM_FLAG_BITS),
            BarKind::Mem64 => u64::from(high) << 32 | u64::from(low & !MEM_FLAG_BITS),
        }
    }

    /// Whether `address` is one the BAR can be programmed with.
    pub fn address_is_valid(&self, address: u64) -> bool {
        let Some(end) = address.checked_add(self.size - 1) else {
            return false;
        };
        let fits = match self.kind {
            BarKind::Io | BarKind::Mem32 => end <= u64::from(u32::MAX),
            BarKind::Mem64 => true,
        };
        // Sizes are powers of two.
        address & (self.size - 1) == 0 && fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: BarKind, size: u64, prefetchable: bool) -> BarShape {
        BarShape {
            kind,
            size,
            prefetchable,
        }
    }

    #[test]
    fn masks() {
        assert_eq!(
            shape(BarKind::Mem32, 0x1000, false).write_masks(),
            (0xffff_f000, 0)
        );
        assert_eq!(
            shape(BarKind::Io, 0x20, false).write_masks(),
            (0xffff_ffe0, 0)
        );
        assert_eq!(
            shape(BarKind::Mem64, 1 << 33, true).write_masks(),
            (0, 0xffff_fffe)
        );
    }

    #[test]
    fn sizes() {
        assert!(shape(BarKind::Io, 4, false).size_is_valid());
        assert!(!shape(BarKind::Io, 2, false).size_is_valid());
        assert!(!shape(BarKind::Mem32, 0x3000, false).size_is_valid());
        assert!(!shape(BarKind::Mem32, 1 << 32, false).size_is_valid());
        assert!(shape(BarKind::Mem64, 1 << 40, false).size_is_valid());
    }

    #[test]
    fn addresses() {
        let bar = shape(BarKind::Mem32, 0x1000, false);
        assert!(bar.address_is_valid(0xfebf_f000));
        assert!(!bar.address_is_valid(0xfebf_f800));
        assert!(!bar.address_is_valid(0x1_0000_0000));
        let bar64 = shape(BarKind::Mem64, 0x1000, false);
        assert!(bar64.address_is_valid(0x80_0000_0000));
        assert_eq!(bar64.address(0xe000_000c, 0x80), 0x80_e000_0000);
    }
}
