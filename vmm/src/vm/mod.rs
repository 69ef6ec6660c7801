//! One boot of the guest: the KVM VM, its RAM, its vCPU threads. A guest reset throws this away
//! and builds a new one over the same devices.

pub mod devices;
pub mod memory;
pub mod vcpu;

use std::path::PathBuf;
use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use petrel_arch::layout::{self, MemoryLayout};
use petrel_arch::topology::Topology;
use petrel_arch::{acpi, boot, e820, GuestMemoryMmap};
use thiserror::Error;
use vm_memory::GuestAddress;

use devices::{DeviceError, DeviceManager};
use vcpu::{RunState, VcpuError, VcpuEvents, VcpuHandle, VcpuSetup};

/// Errors building or starting a VM.
#[derive(Debug, Error)]
pub enum VmError {
    /// A KVM ioctl on the VM failed.
    #[error("KVM {0} failed")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The devices could not be connected.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// The ACPI tables could not be written.
    #[error("cannot write the ACPI tables")]
    Acpi(#[source] vm_memory::GuestMemoryError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU could not be created or started.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

/// What a boot needs from the configuration.
pub struct BootConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// RAM layout.
    pub layout: MemoryLayout,
    /// vCPUs present at boot.
    pub cpus: u32,
    /// Possible vCPUs.
    pub max_cpus: u32,
    /// `-smp` topology.
    pub topology: Topology,
    /// `-cpu` feature toggles.
    pub cpu_features: Vec<(String, bool)>,
}

/// A booted guest. Field order is drop order: threads stop before the VM fd closes, and the VM
/// fd closes before guest RAM is unmapped.
pub struct Vm {
    vcpus: Vec<VcpuHandle>,
    _fd: VmFd,
    _mem: GuestMemoryMmap,
}

/// The CPUID KVM supports here; the host's physical address width comes from leaf 0x80000008.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, VmError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmError::Kvm("get_supported_cpuid", e))
}

/// Guest physical address bits as CPUID reports them.
pub fn phys_bits(cpuid: &CpuId) -> u8 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| (e.eax & 0xff) as u8)
}

impl Vm {
    /// Creates the VM, loads the kernel and starts every vCPU thread (held if `run_state` is
    /// paused).
    pub fn boot(
        kvm: &Kvm,
        cfg: &BootConfig,
        base_cpuid: &CpuId,
        devices: &DeviceManager,
        run_state: &Arc<RunState>,
        events: &Arc<VcpuEvents>,
    ) -> Result<Vm, VmError> {
        let fd = kvm.create_vm().map_err(|e| VmError::Kvm("create_vm", e))?;
        fd.set_tss_address(layout::KVM_TSS_START as usize)
            .map_err(|e| VmError::Kvm("set_tss_address", e))?;
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_START)
            .map_err(|e| VmError::Kvm("set_identity_map_address", e))?;
        fd.create_irq_chip()
            .map_err(|e| VmError::Kvm("create_irq_chip", e))?;
        let pit = kvm_bindings::kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(|e| VmError::Kvm("create_pit2", e))?;

        let mem = memory::create(&cfg.layout)?;
        memory::register(&fd, &mem)?;
        devices.connect_irqs(&fd)?;

        let e820 = e820::build(&cfg.layout);
        let apic_ids: Vec<u32> = (0..cfg.cpus).map(|i| cfg.topology.apic_id(i)).collect();
        let spare: Vec<u32> = (cfg.cpus..cfg.max_cpus)
            .map(|i| cfg.topology.apic_id(i))
            .collect();
        let tables = acpi::write_tables(&mem, &cfg.layout, &devices.acpi_config(apic_ids, spare))
            .map_err(VmError::Acpi)?;
        let info = boot::load_kernel(
            &mem,
            &cfg.layout,
            &e820,
            &cfg.kernel,
            cfg.initrd.as_deref(),
            &cfg.cmdline,
            GuestAddress(tables.rsdp.0),
        )?;

        let setup = VcpuSetup {
            vm: &fd,
            mem: &mem,
            base_cpuid,
            features: &cfg.cpu_features,
            topology: cfg.topology,
            entry: info.entry,
        };
        let fds = (0..cfg.cpus)
            .map(|i| vcpu::create_vcpu(&setup, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut vm = Vm {
            vcpus: Vec::with_capacity(fds.len()),
            _fd: fd,
            _mem: mem,
        };
        for (i, vcpu_fd) in fds.into_iter().enumerate() {
            let handle = vcpu::spawn(
                i as u32,
                vcpu_fd,
                devices.io.clone(),
                run_state.clone(),
                events.clone(),
            );
            match handle {
                Ok(h) => vm.vcpus.push(h),
                Err(e) => {
                    vm.stop(run_state);
                    return Err(e.into());
                }
            }
        }
        Ok(vm)
    }

    /// Kicks every vCPU out of the guest so it notices a pause.
    pub fn kick_all(&self) {
        for v in &self.vcpus {
            v.kick();
        }
    }

    /// Stops and joins every vCPU thread.
    pub fn stop(&mut self, run_state: &RunState) {
        for v in &mut self.vcpus {
            v.stop(run_state);
        }
        self.vcpus.clear();
    }
}
