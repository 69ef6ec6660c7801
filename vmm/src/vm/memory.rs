//! Guest RAM: anonymous mappings laid out by the arch crate and registered as KVM memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use petrel_arch::layout::MemoryLayout;
use petrel_arch::GuestMemoryMmap;
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// Errors setting up guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("cannot allocate {0} MiB of guest memory")]
    Allocate(u64, #[source] vm_memory::mmap::FromRangesError),
    /// KVM refused a memory slot.
    #[error("cannot register guest memory slot {0} with KVM")]
    Slot(u32, #[source] kvm_ioctls::Error),
}

/// Maps the RAM ranges of `layout`. Mappings are not reserved up front, so RAM the guest never
/// touches costs nothing.
pub fn create(layout: &MemoryLayout) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<_> = layout
        .ram_ranges
        .iter()
        .map(|&(a, l)| (a, l as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|e| MemoryError::Allocate(layout.ram_size >> 20, e))
}

/// Registers every region of `mem` with `vm`, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap_or(std::ptr::null_mut());
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM: every
        // `Vm` holds a reference to the RAM and drops its VM fd first.
        unsafe { vm.set_user_memory_region(r) }.map_err(|e| MemoryError::Slot(slot, e))?;
    }
    Ok(())
}
