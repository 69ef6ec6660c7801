//! Guest-physical memory layout.
//!
//! RAM starts at 0 and runs up to the 32-bit PCI hole at 3 GiB; whatever does not fit below the
//! hole continues at 4 GiB. The hole holds the 32-bit PCI MMIO window, the ECAM configuration
//! space and the IOAPIC/LAPIC pages. Fixed low addresses hold the boot structures.

use thiserror::Error;
use vm_memory::GuestAddress;

/// Errors computing the memory layout.
#[derive(Debug, Error)]
pub enum LayoutError {
    /// RAM size is zero or not page aligned.
    #[error("RAM size {0:#x} must be a non-zero multiple of 4 KiB")]
    BadSize(u64),
    /// RAM does not fit in the guest's physical address space.
    #[error("RAM size {size} MiB exceeds the {phys_bits}-bit guest physical address space")]
    TooLarge {
        /// Requested RAM in MiB.
        size: u64,
        /// Guest physical address width.
        phys_bits: u8,
    },
}

/// The GDT used at boot.
pub const BOOT_GDT_START: GuestAddress = GuestAddress(0x500);
/// The (empty) IDT used at boot.
pub const BOOT_IDT_START: GuestAddress = GuestAddress(0x520);
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: GuestAddress = GuestAddress(0x6000);
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: GuestAddress = GuestAddress(0x6040);
/// PVH memory map entries.
pub const PVH_MEMMAP_START: GuestAddress = GuestAddress(0x6100);
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack pointer for the Linux 64-bit entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Top-level page table for the Linux 64-bit entry; the PDPT and PDs follow it.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Largest command line we accept, terminator included.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the extended BIOS data area, reserved up to 640 KiB.
pub const EBDA_START: u64 = 0x9fc00;
/// The BIOS area below 1 MiB where the ACPI tables go: guests scan it for the RSDP.
pub const ACPI_START: GuestAddress = GuestAddress(0xe0000);
/// End of the ACPI/BIOS area.
pub const ACPI_END: u64 = 0x10_0000;
/// Where kernels are loaded.
pub const HIMEM_START: GuestAddress = GuestAddress(0x10_0000);

/// Start of the 32-bit PCI hole; RAM below 4 GiB ends here at the latest.
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// 32-bit PCI MMIO window for BARs.
pub const PCI_MMIO32_START: u64 = PCI_HOLE_START;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCIe ECAM configuration space (256 buses of 1 MiB).
pub const ECAM_START: u64 = 0xe000_0000;
/// Size of the ECAM region.
pub const ECAM_SIZE: u64 = 0x1000_0000;
/// Buses covered by ECAM.
pub const ECAM_BUSES: u16 = 256;
/// The IOAPIC's MMIO page.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC's MMIO page.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM needs three pages for the TSS on Intel, below 4 GiB and outside RAM.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// KVM's identity-map page on Intel, right before the TSS.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// Where RAM above the hole starts.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

/// Where guest RAM is and where the MMIO windows are, for one RAM size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Total RAM in bytes.
    pub ram_size: u64,
    /// RAM ranges as (start, length).
    pub ram_ranges: Vec<(GuestAddress, u64)>,
    /// The 64-bit PCI MMIO window above RAM, as (start, length).
    pub pci_mmio64: (u64, u64),
}

impl MemoryLayout {
    /// Lays out `ram_size` bytes of RAM for a guest with `phys_bits` physical address bits.
    pub fn new(ram_size: u64, phys_bits: u8) -> Result<Self, LayoutError> {
        if ram_size == 0 || !ram_size.is_multiple_of(0x1000) {
            return Err(LayoutError::BadSize(ram_size));
        }
        let low = ram_size.min(PCI_HOLE_START);
        let mut ram_ranges = vec![(GuestAddress(0), low)];
        let mut top = low;
        if ram_size > low {
            ram_ranges.push((GuestAddress(HIGH_RAM_START), ram_size - low));
            top = HIGH_RAM_START + (ram_size - low);
        }
        let addr_space = 1u64 << phys_bits.min(52);
        // Leave at least 1 GiB for 64-bit BARs above RAM.
        const MMIO64_MIN: u64 = 1 << 30;
        let mmio64_start = top.max(HIGH_RAM_START).next_multiple_of(MMIO64_MIN);
        if mmio64_start + MMIO64_MIN > addr_space {
            return Err(LayoutError::TooLarge {
                size: ram_size >> 20,
                phys_bits,
            });
        }
        Ok(MemoryLayout {
            ram_size,
            ram_ranges,
            pci_mmio64: (mmio64_start, addr_space - mmio64_start),
        })
    }

    /// End of RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.ram_ranges[0].1
    }

    /// RAM above 4 GiB, in bytes.
    pub fn high_ram_size(&self) -> u64 {
        self.ram_ranges.get(1).map_or(0, |r| r.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_range() {
        let l = MemoryLayout::new(128 << 20, 40).unwrap();
        assert_eq!(l.ram_ranges, vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(l.high_ram_size(), 0);
        assert_eq!(l.pci_mmio64.0, HIGH_RAM_START);
    }

    #[test]
    fn large_ram_splits_around_the_hole() {
        let l = MemoryLayout::new(5 << 30, 40).unwrap();
        assert_eq!(l.low_ram_end(), PCI_HOLE_START);
        assert_eq!(
            l.ram_ranges[1],
            (GuestAddress(HIGH_RAM_START), (5 << 30) - PCI_HOLE_START)
        );
        assert_eq!(l.pci_mmio64.0, HIGH_RAM_START + (2 << 30));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(MemoryLayout::new(0, 40).is_err());
        assert!(MemoryLayout::new(4097, 40).is_err());
        assert!(MemoryLayout::new(1 << 40, 40).is_err());
    }
}
