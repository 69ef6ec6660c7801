//! Runs a guest from a parsed command line: opens backends, builds devices, boots, and drives
//! the control loop through resets until the guest or the user ends it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::Kvm;
use petrel_arch::layout::{LayoutError, MemoryLayout};
use petrel_arch::topology::Topology;
use thiserror::Error;

use crate::chardev::{Chardev, ChardevError};
use crate::cli::{ChardevBackend, ChardevSpec, Config};
use crate::event_loop::lifecycle::Lifecycle;
use crate::event_loop::serial_input::SerialInput;
use crate::event_loop::signals::SignalFd;
use crate::event_loop::{ActionSlot, LoopAction};
use crate::process::{self, PidFile, ProcessError};
use crate::vm::devices::{DeviceError, DeviceManager};
use crate::vm::vcpu::{self, RunState, VcpuError, VcpuEvents};
use crate::vm::{self, BootConfig, Vm, VmError};

/// Errors that stop petrel before or while running the guest.
#[derive(Debug, Error)]
pub enum MachineError {
    /// No `-kernel`.
    #[error("no kernel given: petrel boots a kernel directly, use -kernel")]
    NoKernel,
    /// /dev/kvm is missing or unusable.
    #[error("cannot open /dev/kvm")]
    Kvm(#[source] kvm_ioctls::Error),
    /// KVM lacks something petrel needs.
    #[error("KVM lacks {0}")]
    KvmCapability(&'static str),
    /// Too many vCPUs.
    #[error("-smp: {requested} CPUs requested, but the maximum is {max}")]
    TooManyCpus {
        /// What was asked.
        requested: u32,
        /// The limit (KVM's, and 255 for xAPIC IDs).
        max: u32,
    },
    /// APIC IDs beyond what the MADT's xAPIC entries hold.
    #[error("-smp: the topology needs APIC IDs up to {0}, more than 254")]
    ApicIdRange(u32),
    /// RAM size impossible here.
    #[error("-m: cannot lay out guest memory")]
    Memory(#[source] LayoutError),
    /// `-cpu` feature errors.
    #[error("-cpu")]
    Cpu(#[source] petrel_arch::cpuid::CpuidError),
    /// A chardev could not be opened.
    #[error(transparent)]
    Chardev(#[from] ChardevError),
    /// pid file or daemonizing.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Device construction.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// VM construction or boot.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// vCPU signal setup.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The control loop.
    #[error("event loop: {0}")]
    EventLoop(String),
    /// A vCPU failed at run time.
    #[error("{0}")]
    GuestFatal(String),
}

/// Largest vCPU count: xAPIC IDs in the MADT are 8 bits and 0xff is the broadcast ID.
const MAX_XAPIC_CPUS: u32 = 255;

/// Runs the guest described by `cfg`; returns the process exit status.
pub fn run(cfg: Config, start: Instant) -> Result<i32, MachineError> {
    let kernel = cfg.kernel.clone().ok_or(MachineError::NoKernel)?;
    petrel_arch::cpuid::validate_features(&cfg.cpu.features).map_err(MachineError::Cpu)?;

    let kvm = Kvm::new().map_err(MachineError::Kvm)?;
    if !kvm.check_extension(kvm_ioctls::Cap::Irqchip)
        || !kvm.check_extension(kvm_ioctls::Cap::Irqfd)
    {
        return Err(MachineError::KvmCapability(
            "an in-kernel irqchip with irqfd",
        ));
    }
    let max = (kvm.get_max_vcpus() as u32).min(MAX_XAPIC_CPUS);
    if cfg.smp.maxcpus > max {
        return Err(MachineError::TooManyCpus {
            requested: cfg.smp.maxcpus,
            max,
        });
    }
    let topology = Topology {
        sockets: cfg.smp.sockets,
        dies: cfg.smp.dies,
        cores: cfg.smp.cores,
        threads: cfg.smp.threads,
    };
    let top_apic = topology.apic_id(cfg.smp.maxcpus - 1);
    if top_apic > 254 {
        return Err(MachineError::ApicIdRange(top_apic));
    }
    let cpuid = vm::supported_cpuid(&kvm)?;
    let layout =
        MemoryLayout::new(cfg.memory.size, vm::phys_bits(&cpuid)).map_err(MachineError::Memory)?;

    let notifier = if cfg.daemonize {
        Some(process::daemonize()?)
    } else {
        None
    };
    let result = setup_and_run(&cfg, kernel, kvm, cpuid, layout, start, notifier);
    crate::chardev::restore_terminal();
    result
}

fn open_serials(cfg: &Config) -> Result<Vec<Chardev>, MachineError> {
    let mut out = Vec::new();
    for spec in &cfg.serials {
        let backend: &ChardevBackend = match spec {
            ChardevSpec::Backend(b) => b,
            ChardevSpec::Chardev(id) => cfg
                .chardevs
                .iter()
                .find(|(cid, _)| cid == id)
                .map(|(_, b)| b)
                .expect("the parser checks chardev references"),
        };
        out.push(Chardev::open(backend)?);
    }
    Ok(out)
}

fn setup_and_run(
    cfg: &Config,
    kernel: std::path::PathBuf,
    kvm: Kvm,
    cpuid: kvm_bindings::CpuId,
    layout: MemoryLayout,
    start: Instant,
    notifier: Option<process::DaemonNotifier>,
) -> Result<i32, MachineError> {
    let prepared = (|| {
        let pidfile = cfg.pidfile.as_deref().map(PidFile::create).transpose()?;
        let serials = open_serials(cfg)?;
        let devices = DeviceManager::new(serials, &layout, start)?;
        // Termination signals must be blocked before any thread exists.
        let signals = SignalFd::new().map_err(|e| MachineError::EventLoop(e.to_string()))?;
        vcpu::install_kick_handler()?;
        Ok::<_, MachineError>((pidfile, devices, signals))
    })();
    let (_pidfile, mut devices, signals) = match prepared {
        Ok(p) => p,
        Err(e) => {
            if let Some(n) = notifier {
                report_setup_failure(&e);
                n.failed();
            }
            return Err(e);
        }
    };

    let boot_cfg = BootConfig {
        kernel,
        initrd: cfg.initrd.clone(),
        cmdline: cfg.append.clone(),
        layout,
        cpus: cfg.smp.cpus,
        max_cpus: cfg.smp.maxcpus,
        topology: Topology {
            sockets: cfg.smp.sockets,
            dies: cfg.smp.dies,
            cores: cfg.smp.cores,
            threads: cfg.smp.threads,
        },
        cpu_features: cfg.cpu.features.clone(),
    };

    let actions: ActionSlot = Arc::new(Mutex::new(Vec::new()));
    let vcpu_events = VcpuEvents::new().map_err(|e| MachineError::EventLoop(e.to_string()))?;
    let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
        .map_err(|e| MachineError::EventLoop(format!("{e:?}")))?;
    let lifecycle = Lifecycle::new(
        devices
            .shutdown_evt
            .try_clone()
            .map_err(|e| MachineError::EventLoop(e.to_string()))?,
        devices
            .reset_evt
            .try_clone()
            .map_err(|e| MachineError::EventLoop(e.to_string()))?,
        vcpu_events.clone(),
        signals,
        actions.clone(),
    );
    manager.add_subscriber(Arc::new(Mutex::new(lifecycle)));
    for port in &mut devices.serials {
        if let Some(input) = port.input.take() {
            let drained = port
                .drained
                .try_clone()
                .map_err(|e| MachineError::EventLoop(e.to_string()))?;
            let sub = SerialInput::new(port.device.clone(), input, drained, actions.clone());
            manager.add_subscriber(Arc::new(Mutex::new(sub)));
        }
    }

    let run_state = RunState::new(cfg.start_paused);
    let vm = match Vm::boot(&kvm, &boot_cfg, &cpuid, &devices, &run_state, &vcpu_events) {
        Ok(vm) => vm,
        Err(e) => {
            let e = MachineError::from(e);
            if let Some(n) = notifier {
                report_setup_failure(&e);
                n.failed();
            }
            return Err(e);
        }
    };
    if let Some(n) = notifier {
        n.ready();
    }
    // Held in an Option so a reset can drop the old VM (and its irqfd bindings) before the
    // new one is built.
    let mut vm = Some(vm);
    let stop = |vm: &mut Option<Vm>| {
        if let Some(mut v) = vm.take() {
            v.stop(&run_state);
        }
    };

    loop {
        if let Err(e) = manager.run() {
            log::debug!("event loop wait: {e:?}");
        }
        let pending: Vec<LoopAction> =
            std::mem::take(&mut *actions.lock().unwrap_or_else(|e| e.into_inner()));
        for action in pending {
            match action {
                LoopAction::GuestShutdown => {
                    if cfg.no_shutdown {
                        // Keep the process and the guest's state; only a signal ends it now.
                        run_state.set_paused(true);
                        if let Some(v) = &vm {
                            v.kick_all();
                        }
                        continue;
                    }
                    stop(&mut vm);
                    return Ok(i32::from(devices.guest_status().unwrap_or(0)));
                }
                LoopAction::GuestReset => {
                    stop(&mut vm);
                    if cfg.no_reboot {
                        return Ok(0);
                    }
                    devices.reset();
                    vm = Some(Vm::boot(
                        &kvm,
                        &boot_cfg,
                        &cpuid,
                        &devices,
                        &run_state,
                        &vcpu_events,
                    )?);
                }
                LoopAction::Signal(sig) => {
                    stop(&mut vm);
                    eprintln!("petrel: terminating on signal {sig}");
                    return Ok(0);
                }
                LoopAction::UserQuit => {
                    stop(&mut vm);
                    eprintln!("petrel: terminated by the user (Ctrl-A x)");
                    return Ok(0);
                }
                LoopAction::Fatal(msg) => {
                    stop(&mut vm);
                    return Err(MachineError::GuestFatal(msg));
                }
            }
        }
    }
}

fn report_setup_failure(e: &MachineError) {
    eprintln!("{}", crate::error_chain(e));
}
