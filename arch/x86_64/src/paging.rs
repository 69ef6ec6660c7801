//! Identity page tables for the Linux 64-bit entry, which must start with paging on.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::{layout::PML4_START, GuestMemoryMmap};

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
/// Gigabytes identity-mapped: all of the 32-bit space, so the kernel, boot params, command line
/// and an initrd below the hole are all reachable.
const MAPPED_GIB: u64 = 4;

/// Writes PML4, one PDPT and four page directories of 2 MiB pages mapping 0..4 GiB, and
/// returns the PML4 address for CR3.
pub fn setup_identity_map(mem: &GuestMemoryMmap) -> Result<u64, GuestMemoryError> {
    let pml4 = PML4_START.0;
    let pdpt = pml4 + 0x1000;
    let pd = pdpt + 0x1000;
    mem.write_obj(pdpt | PRESENT_RW, GuestAddress(pml4))?;
    for gib in 0..MAPPED_GIB {
        let dir = pd + gib * 0x1000;
        mem.write_obj(dir | PRESENT_RW, GuestAddress(pdpt + gib * 8))?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| (((gib << 30) + (i << 21)) | PRESENT_RW | PAGE_SIZE_2M).to_le_bytes())
            .collect();
        mem.write_slice(&entries, GuestAddress(dir))?;
    }
    Ok(pml4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_last_2m_page_below_4g() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = setup_identity_map(&mem).unwrap();
        let last: u64 = mem
            .read_obj(GuestAddress(cr3 + 0x2000 + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }
}
