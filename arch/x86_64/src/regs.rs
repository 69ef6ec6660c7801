//! The register state the boot vCPU starts with, for each boot protocol.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::{gdt, layout, paging, GuestMemoryMmap};

/// Errors setting up vCPU registers.
#[derive(Debug, Error)]
pub enum RegsError {
    /// A KVM register ioctl failed.
    #[error("KVM {0} failed")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Writing the GDT, IDT or page tables failed.
    #[error("cannot write boot tables to guest memory")]
    Memory(#[source] GuestMemoryError),
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh {
        /// Entry point from the PVH ELF note.
        entry: u64,
    },
    /// Linux 64-bit boot protocol: long mode, identity paging, RSI = `boot_params`.
    Linux64 {
        /// The 64-bit entry (load address + 0x200).
        entry: u64,
    },
    /// Real mode at a physical address below 1 MiB, as firmware resumes an OS from S3 at
    /// the FACS waking vector: CS = vector >> 4, IP = vector & 0xf.
    RealMode {
        /// The waking vector.
        vector: u32,
    },
}

/// Sets the boot vCPU's registers for `mode`. For the protected-mode entries this writes the
/// GDT, an empty IDT and (for long mode) the identity page tables into guest memory.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    mode: EntryMode,
) -> Result<(), RegsError> {
    let kvm = |what| move |e| RegsError::Kvm(what, e);
    let mut sregs = vcpu.get_sregs().map_err(kvm("get_sregs"))?;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::RealMode { vector } => {
            // Everything but CS:IP stays in the reset state KVM gives a new vCPU.
            sregs.cs.selector = (vector >> 4) as u16;
            sregs.cs.base = u64::from(vector & !0xf);
            regs.rip = u64::from(vector & 0xf);
        }
        EntryMode::Pvh { entry } => {
            flat_segments(&mut sregs, mem, gdt::CODE32)?;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = layout::PVH_INFO_START.0;
        }
        EntryMode::Linux64 { entry } => {
            flat_segments(&mut sregs, mem, gdt::CODE64)?;
            sregs.cr3 = paging::setup_identity_map(mem).map_err(RegsError::Memory)?;
            sregs.cr4 = X86_CR4_PAE;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START.0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("set_sregs"))?;
    vcpu.set_regs(&regs).map_err(kvm("set_regs"))
}

/// Writes the boot GDT (with `code` as the code segment) and an empty IDT, and loads flat
/// segments from them.
fn flat_segments(sregs: &mut kvm_sregs, mem: &GuestMemoryMmap, code: u64) -> Result<(), RegsError> {
    let table = gdt::table(code);
    for (i, entry) in table.iter().enumerate() {
        let addr = GuestAddress(layout::BOOT_GDT_START.0 + i as u64 * 8);
        mem.write_obj(*entry, addr).map_err(RegsError::Memory)?;
    }
    mem.write_obj(0u64, layout::BOOT_IDT_START)
        .map_err(RegsError::Memory)?;
    sregs.gdt.base = layout::BOOT_GDT_START.0;
    sregs.gdt.limit = (size_of_val(&table) - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START.0;
    sregs.idt.limit = 7;
    let data_seg = gdt::kvm_segment_from_gdt(gdt::DATA, 3);
    sregs.cs = gdt::kvm_segment_from_gdt(code, 2);
    sregs.ds = data_seg;
    sregs.es = data_seg;
    sregs.fs = data_seg;
    sregs.gs = data_seg;
    sregs.ss = data_seg;
    sregs.tr = gdt::kvm_segment_from_gdt(gdt::TSS, 4);
    Ok(())
}

/// The x87 and SSE control words as after `fninit` and the architectural MXCSR reset value.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| RegsError::Kvm("set_fpu", e))
}

/// Returns the special registers, for diagnostics after a failed run.
pub fn describe(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => describe_state(&r, &s),
        _ => "registers unavailable".to_string(),
    }
}

fn describe_state(r: &kvm_regs, s: &kvm_sregs) -> String {
    format!(
        "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x}(base {:#x}) cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
        r.rip, r.rsp, r.rflags, s.cs.selector, s.cs.base, s.cr0, s.cr3, s.cr4, s.efer
    )
}
