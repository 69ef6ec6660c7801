//! The e820 memory map handed to the guest by both boot protocols.

use crate::layout::{self, MemoryLayout};

/// Usable RAM.
pub const E820_RAM: u32 = 1;
/// Reserved, not to be used by the guest.
pub const E820_RESERVED: u32 = 2;

/// One e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// Builds the map: low RAM up to the EBDA, the BIOS area (where the ACPI tables live), RAM
/// from 1 MiB to the hole, the ECAM window (Linux only trusts MCFG if e820 reserves it) and RAM
/// above 4 GiB.
pub fn build(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: layout::EBDA_START,
            size: 0xa0000 - layout::EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: layout::ACPI_START.0,
            size: layout::ACPI_END - layout::ACPI_START.0,
            kind: E820_RESERVED,
        },
    ];
    let low_end = layout.low_ram_end();
    if low_end > layout::HIMEM_START.0 {
        map.push(E820Entry {
            addr: layout::HIMEM_START.0,
            size: low_end - layout::HIMEM_START.0,
            kind: E820_RAM,
        });
    }
    map.push(E820Entry {
        addr: layout::ECAM_START,
        size: layout::ECAM_SIZE,
        kind: E820_RESERVED,
    });
    if layout.high_ram_size() > 0 {
        map.push(E820Entry {
            addr: layout::HIGH_RAM_START,
            size: layout.high_ram_size(),
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ram_excludes_only_the_legacy_holes() {
        let l = MemoryLayout::new(5 << 30, 40).unwrap();
        let usable: u64 = build(&l)
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(
            usable,
            (5 << 30) - (layout::HIMEM_START.0 - layout::EBDA_START)
        );
        assert!(build(&l)
            .iter()
            .any(|e| e.kind == E820_RAM && e.addr == layout::HIGH_RAM_START));
    }
}
