//! vCPU registers for dumps: read on each vCPU's own thread (KVM serialises vCPU ioctls with
//! KVM_RUN), with every vCPU held so that the registers and the memory snapshot agree.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;

use super::error::DumpError;
use crate::vm::vcpu::{ask_all, RunState, VcpuHandle, VcpuRequest};

/// MSR_KERNEL_GS_BASE.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// What a dump needs of one vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuRegisters {
    /// General registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segments, descriptor tables, control registers and EFER.
    pub sregs: kvm_sregs,
    /// MSR_KERNEL_GS_BASE (0 if KVM would not read it).
    pub kernel_gs_base: u64,
}

/// CR0.PG.
const CR0_PG: u64 = 1 << 31;
/// EFER.LMA.
const EFER_LMA: u64 = 1 << 10;

impl CpuRegisters {
    /// Whether the vCPU is in long mode (QEMU's HF_LMA).
    pub fn long_mode(&self) -> bool {
        self.sregs.efer & EFER_LMA != 0
    }

    /// Whether paging is on.
    pub fn paging(&self) -> bool {
        self.sregs.cr0 & CR0_PG != 0
    }
}

/// Reads the registers of the vCPU behind `fd`; called on that vCPU's thread.
pub fn capture(fd: &VcpuFd) -> Option<CpuRegisters> {
    let regs = fd.get_regs().ok()?;
    let sregs = fd.get_sregs().ok()?;
    let entry = kvm_msr_entry {
        index: MSR_KERNEL_GS_BASE,
        ..Default::default()
    };
    let kernel_gs_base = Msrs::from_entries(&[entry])
        .ok()
        .and_then(|mut msrs| match fd.get_msrs(&mut msrs) {
            Ok(1) => Some(msrs.as_slice()[0].data),
            _ => None,
        })
        .unwrap_or(0);
    Some(CpuRegisters {
        regs,
        sregs,
        kernel_gs_base,
    })
}

/// Asks each vCPU in `vcpus` for its registers and waits for the answers.
pub fn read_all(
    vcpus: &[VcpuHandle],
    run_state: &RunState,
) -> Result<Vec<CpuRegisters>, DumpError> {
    let answers = ask_all(vcpus, run_state, VcpuRequest::Registers);
    vcpus
        .iter()
        .zip(answers)
        .map(|(v, answer)| answer.flatten().ok_or(DumpError::CpuState(v.index())))
        .collect()
}

/// vCPUs held out of the guest; dropping it lets them run again unless they were held
/// before.
pub struct Hold<'a> {
    run_state: &'a RunState,
    was_paused: bool,
}

impl<'a> Hold<'a> {
    /// Holds every vCPU. They stop at their next exit, which a register request forces, so
    /// after [`read_all`] none of them is in the guest.
    pub fn new(run_state: &'a RunState) -> Hold<'a> {
        let was_paused = run_state.is_paused();
        run_state.set_paused(true);
        Hold {
            run_state,
            was_paused,
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.was_paused {
            self.run_state.set_paused(false);
        }
    }
}
