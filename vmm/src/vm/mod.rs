//! One boot of the guest: the KVM VM and its vCPU threads. A guest reset throws this away and
//! builds a new one over the same RAM and devices (devices hold the RAM for DMA, so it lives as
//! long as the process, as in QEMU, where a reset does not clear RAM either).

pub mod devices;
pub mod memory;
pub mod msi;
pub mod pci;
pub mod vcpu;

use std::path::PathBuf;
use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use petrel_arch::layout::{self, MemoryLayout};
use petrel_arch::regs::EntryMode;
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
    /// S3 resume without a waking vector in the FACS.
    #[error("the guest suspended without setting a waking vector in the FACS")]
    NoWakingVector,
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
/// fd closes before this reference to guest RAM goes.
pub struct Vm {
    vcpus: Vec<VcpuHandle>,
    /// Shared only weakly (by the MSI routing), so dropping it closes the VM.
    fd: Option<Arc<VmFd>>,
    mem: Arc<GuestMemoryMmap>,
    tables: acpi::AcpiTables,
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

/// A KVM VM with the in-kernel interrupt controllers and PIT, `mem` as its RAM and the
/// devices' interrupt lines connected.
fn create_fd(
    kvm: &Kvm,
    mem: &GuestMemoryMmap,
    devices: &DeviceManager,
) -> Result<Arc<VmFd>, VmError> {
    let fd = Arc::new(kvm.create_vm().map_err(|e| VmError::Kvm("create_vm", e))?);
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
    memory::register(&fd, mem)?;
    devices.connect_irqs(&fd)?;
    Ok(fd)
}

/// Everything that stays the same across the boots of one machine.
pub struct VmContext<'a> {
    /// KVM.
    pub kvm: &'a Kvm,
    /// What to boot.
    pub cfg: &'a BootConfig,
    /// Guest RAM, shared with the devices.
    pub mem: &'a Arc<GuestMemoryMmap>,
    /// CPUID KVM supports.
    pub cpuid: &'a CpuId,
    /// The platform devices.
    pub devices: &'a DeviceManager,
    /// Whether vCPUs may run.
    pub run_state: &'a Arc<RunState>,
    /// Where vCPU threads report.
    pub events: &'a Arc<VcpuEvents>,
}

impl Vm {
    /// Creates the VM, loads the kernel and starts every vCPU thread (held if `run_state` is
    /// paused).
    pub fn boot(ctx: &VmContext) -> Result<Vm, VmError> {
        let cfg = ctx.cfg;
        let mem = ctx.mem.clone();
        let fd = create_fd(ctx.kvm, &mem, ctx.devices)?;
        let e820 = e820::build(&cfg.layout);
        let apic_ids: Vec<u32> = (0..cfg.cpus).map(|i| cfg.topology.apic_id(i)).collect();
        let spare: Vec<u32> = (cfg.cpus..cfg.max_cpus)
            .map(|i| cfg.topology.apic_id(i))
            .collect();
        let tables =
            acpi::write_tables(&mem, &cfg.layout, &ctx.devices.acpi_config(apic_ids, spare))
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
        Vm::start(ctx, fd, mem, tables, info.entry)
    }

    /// Resumes a guest from S3: the same RAM on a fresh KVM VM (in-kernel devices back to
    /// their reset state, as after a real suspend), the boot vCPU in real mode at the FACS
    /// waking vector. The vCPU threads of `self` must be stopped.
    pub fn wake(mut self, ctx: &VmContext) -> Result<Vm, VmError> {
        self.stop(ctx.run_state);
        // The old VM must release its irqfds before the new one takes them.
        drop(self.fd.take());
        let vector = self
            .tables
            .waking_vector(&self.mem)
            .ok_or(VmError::NoWakingVector)?;
        let fd = create_fd(ctx.kvm, &self.mem, ctx.devices)?;
        let mem = self.mem.clone();
        let tables = self.tables.clone();
        Vm::start(ctx, fd, mem, tables, EntryMode::RealMode { vector })
    }

    fn start(
        ctx: &VmContext,
        fd: Arc<VmFd>,
        mem: Arc<GuestMemoryMmap>,
        tables: acpi::AcpiTables,
        entry: EntryMode,
    ) -> Result<Vm, VmError> {
        let setup = VcpuSetup {
            vm: &fd,
            mem: &mem,
            base_cpuid: ctx.cpuid,
            features: &ctx.cfg.cpu_features,
            topology: ctx.cfg.topology,
            entry,
        };
        let fds = (0..ctx.cfg.cpus)
            .map(|i| vcpu::create_vcpu(&setup, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut vm = Vm {
            vcpus: Vec::with_capacity(fds.len()),
            fd: Some(fd),
            mem,
            tables,
        };
        for (i, vcpu_fd) in fds.into_iter().enumerate() {
            let io = ctx.devices.io.clone();
            match vcpu::spawn(
                i as u32,
                vcpu_fd,
                io,
                ctx.run_state.clone(),
                ctx.events.clone(),
            ) {
                Ok(h) => vm.vcpus.push(h),
                Err(e) => {
                    vm.stop(ctx.run_state);
                    return Err(e.into());
                }
            }
        }
        Ok(vm)
    }

    /// The vCPU threads, in index order.
    pub fn vcpus(&self) -> &[VcpuHandle] {
        &self.vcpus
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
