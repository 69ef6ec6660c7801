//! x86_64 platform setup for petrel.
//!
//! Everything a guest sees of the platform before its first instruction: the guest-physical
//! memory layout, the e820 map, CPUID and MSRs, the boot-time register state for the PVH and
//! Linux 64-bit boot protocols, and the ACPI tables.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod topology;

/// Guest memory type used by the whole VMM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;
