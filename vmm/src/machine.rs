//! Runs a guest from a parsed command line: opens backends, builds devices, boots, and drives
//! the control loop through resets, run-state changes and front-end requests until the guest
//! or the user ends it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::Kvm;
use petrel_arch::layout::{LayoutError, MemoryLayout};
use petrel_arch::topology::Topology;
use petrel_arch::GuestMemoryMmap;
use thiserror::Error;

use crate::api::{
    self, ApiError, ApiRequest, CpuSlot, EventSink, RunStatus, StatusCell, VmEvent, VmmAction,
    VmmData,
};
use crate::balloon::attach::{build_balloon, BalloonAttachError};
use crate::balloon::{BalloonError, BalloonLayer};
use crate::blockdev::attach::{build_disks, AttachError, VmDiskEvents};
use crate::blockdev::{BlockLayer, BlockdevError};
use crate::chardev::{Chardev, ChardevError};
use crate::cli::{ChardevBackend, ChardevSpec, Config};
use crate::dump::{DumpEnv, DumpLayer};
use crate::event_loop::api::ApiSubscriber;
use crate::event_loop::lifecycle::{Lifecycle, PowerEvents};
use crate::event_loop::serial_input::SerialInput;
use crate::event_loop::signals::SignalFd;
use crate::event_loop::{ActionSlot, LoopAction};
use crate::frontend::{self, Frontend};
use crate::netdev::attach::{build_nics, NicAttachError, NicEnv};
use crate::netdev::NetLayer;
use crate::process::{self, PidFile, ProcessError};
use crate::vm::devices::{DeviceError, DeviceManager};
use crate::vm::vcpu::{self, ask_all, RunState, VcpuError, VcpuEvents, VcpuRequest};
use crate::vm::{self, BootConfig, Vm, VmContext, VmError};

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
    /// A netdev or NIC could not be created.
    #[error(transparent)]
    Nic(#[from] NicAttachError),
    /// VM construction or boot.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// vCPU signal setup.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A disk could not be opened or attached.
    #[error(transparent)]
    Disk(#[from] AttachError),
    /// The balloon could not be created.
    #[error(transparent)]
    Balloon(#[from] BalloonAttachError),
    /// A QMP monitor could not be set up.
    #[error(transparent)]
    Frontend(#[from] frontend::FrontendError),
    /// The control loop.
    #[error("event loop: {0}")]
    EventLoop(String),
    /// A vCPU failed at run time.
    #[error("{0}")]
    GuestFatal(String),
}

/// Largest vCPU count: xAPIC IDs in the MADT are 8 bits and 0xff is the broadcast ID.
const MAX_XAPIC_CPUS: u32 = 255;

fn topology(cfg: &Config) -> Topology {
    Topology {
        sockets: cfg.smp.sockets,
        dies: cfg.smp.dies,
        cores: cfg.smp.cores,
        threads: cfg.smp.threads,
    }
}

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
    let top_apic = topology(&cfg).apic_id(cfg.smp.maxcpus - 1);
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
    let boot_cfg = BootConfig {
        kernel,
        initrd: cfg.initrd.clone(),
        cmdline: cfg.append.clone(),
        layout,
        cpus: cfg.smp.cpus,
        max_cpus: cfg.smp.maxcpus,
        topology: topology(&cfg),
        cpu_features: cfg.cpu.features.clone(),
    };
    let result = setup_and_run(&cfg, kvm, cpuid, boot_cfg, start, notifier);
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

fn io_err(e: std::io::Error) -> MachineError {
    MachineError::EventLoop(e.to_string())
}

fn setup_and_run(
    cfg: &Config,
    kvm: Kvm,
    cpuid: kvm_bindings::CpuId,
    boot_cfg: BootConfig,
    start: Instant,
    notifier: Option<process::DaemonNotifier>,
) -> Result<i32, MachineError> {
    let fail = |e: MachineError, notifier: Option<process::DaemonNotifier>| {
        if let Some(n) = notifier {
            eprintln!("{}", crate::error_chain(&e));
            n.failed();
        }
        e
    };
    let (api_tx, api_rx) = api::channel_pair().map_err(io_err)?;
    let status = if cfg.start_paused {
        RunStatus::Prelaunch
    } else {
        RunStatus::Running
    };
    let status_cell = StatusCell::new(status);
    let prepared = (|| {
        // Termination signals must be blocked before any thread exists, so that they reach
        // the control loop's signalfd and no other thread.
        let signals = SignalFd::new().map_err(io_err)?;
        vcpu::install_kick_handler()?;
        let pidfile = cfg.pidfile.as_deref().map(PidFile::create).transpose()?;
        // Monitors come first: a `wait=on` monitor holds the start until its client is there.
        let disk_api = api_tx.clone();
        let frontend = Frontend::start(cfg, api_tx, status_cell.clone())?;
        let serials = open_serials(cfg)?;
        let mem = Arc::new(vm::memory::create(&boot_cfg.layout).map_err(VmError::from)?);
        let mut devices = DeviceManager::new(serials, &boot_cfg.layout, start, frontend.events())?;
        let threshold_events = frontend.events();
        let mut block = BlockLayer::new(
            Arc::new(VmDiskEvents {
                events: frontend.events(),
                api: disk_api,
            }),
            Box::new(move |e: petrel_block::WriteThresholdEvent| {
                threshold_events.emit(VmEvent::BlockWriteThreshold {
                    node_name: e.node_name,
                    amount_exceeded: e.amount_exceeded,
                    threshold: e.write_threshold,
                })
            }),
        );
        build_disks(cfg, &mut block, &mut devices, &mem)?;
        let mut net = NetLayer::default();
        let anonymous_before = block
            .disks()
            .iter()
            .filter(|d| d.device.as_ref().is_some_and(|dev| dev.id.is_none()))
            .count();
        build_nics(
            cfg,
            &mut net,
            NicEnv {
                devices: &mut devices,
                mem: &mem,
                events: frontend.events(),
                anonymous_before,
            },
        )?;
        Ok::<_, MachineError>((pidfile, frontend, mem, devices, block, net, signals))
    })();
    let (_pidfile, frontend, mem, mut devices, block, net, signals) = match prepared {
        Ok(p) => p,
        Err(e) => return Err(fail(e, notifier)),
    };
    let balloon = match build_balloon(cfg, &mut devices, &mem, frontend.events()) {
        Ok(b) => b,
        Err(e) => return Err(fail(e.into(), notifier)),
    };

    let actions: ActionSlot = Arc::new(Mutex::new(Vec::new()));
    let vcpu_events = VcpuEvents::new().map_err(io_err)?;
    let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
        .map_err(|e| MachineError::EventLoop(format!("{e:?}")))?;
    let power = PowerEvents {
        shutdown: devices.shutdown_evt.try_clone().map_err(io_err)?,
        reset: devices.reset_evt.try_clone().map_err(io_err)?,
        suspend: devices.suspend_evt.try_clone().map_err(io_err)?,
    };
    let lifecycle = Lifecycle::new(power, vcpu_events.clone(), signals, actions.clone());
    manager.add_subscriber(Arc::new(Mutex::new(lifecycle)));
    manager.add_subscriber(Arc::new(Mutex::new(ApiSubscriber::new(
        api_rx,
        actions.clone(),
    ))));
    for port in &mut devices.serials {
        if let Some(input) = port.input.take() {
            let drained = port.drained.try_clone().map_err(io_err)?;
            let sub = SerialInput::new(port.device.clone(), input, drained, actions.clone());
            manager.add_subscriber(Arc::new(Mutex::new(sub)));
        }
    }

    let run_state = RunState::new(cfg.start_paused);
    let ctx = VmContext {
        kvm: &kvm,
        cfg: &boot_cfg,
        mem: &mem,
        cpuid: &cpuid,
        devices: &devices,
        run_state: &run_state,
        events: &vcpu_events,
    };
    let vm = match Vm::boot(&ctx) {
        Ok(vm) => vm,
        Err(e) => return Err(fail(e.into(), notifier)),
    };
    if let Some(n) = notifier {
        n.ready();
    }
    let mut machine = Machine {
        kvm,
        cpuid,
        boot_cfg,
        mem,
        devices,
        block,
        net,
        run_state,
        vcpu_events,
        balloon,
        vm: Some(vm),
        status,
        status_cell,
        events: frontend.events(),
        no_reboot: cfg.no_reboot,
        no_shutdown: cfg.no_shutdown,
        has_monitors: frontend.has_monitors(),
        dump: DumpLayer::new(frontend.events()),
    };

    let code = loop {
        if let Err(e) = manager.run() {
            log::debug!("event loop wait: {e:?}");
        }
        let pending: Vec<LoopAction> =
            std::mem::take(&mut *actions.lock().unwrap_or_else(|e| e.into_inner()));
        let mut exit = None;
        for action in pending {
            if exit.is_none() {
                exit = machine.handle(action)?;
            } else if let LoopAction::Request(req) = action {
                (req.reply)(Err(ApiError::Failed("petrel is exiting".into())));
            }
        }
        if let Some(code) = exit {
            break code;
        }
    };
    machine.stop_vm();
    machine.block.flush_all();
    // Replies and events already queued (the reply to `quit`, SHUTDOWN) reach clients first.
    frontend.shutdown();
    Ok(code)
}

/// The control thread's view of the machine.
struct Machine {
    kvm: Kvm,
    cpuid: kvm_bindings::CpuId,
    boot_cfg: BootConfig,
    mem: Arc<GuestMemoryMmap>,
    devices: DeviceManager,
    block: BlockLayer,
    net: NetLayer,
    run_state: Arc<RunState>,
    vcpu_events: Arc<VcpuEvents>,
    balloon: BalloonLayer,
    vm: Option<Vm>,
    status: RunStatus,
    status_cell: Arc<StatusCell>,
    events: Arc<dyn EventSink>,
    no_reboot: bool,
    no_shutdown: bool,
    has_monitors: bool,
    dump: DumpLayer,
}

impl Machine {
    /// Acts on one loop action; `Some(code)` ends petrel with that exit status.
    fn handle(&mut self, action: LoopAction) -> Result<Option<i32>, MachineError> {
        match action {
            LoopAction::GuestShutdown => {
                self.events.emit(VmEvent::Shutdown {
                    guest: true,
                    reason: "guest-shutdown",
                });
                if self.no_shutdown {
                    self.pause(RunStatus::Shutdown);
                    return Ok(None);
                }
                self.stop_vm();
                Ok(Some(i32::from(self.devices.guest_status().unwrap_or(0))))
            }
            LoopAction::GuestReset => {
                if self.no_reboot {
                    self.events.emit(VmEvent::Shutdown {
                        guest: true,
                        reason: "guest-reset",
                    });
                    self.stop_vm();
                    return Ok(Some(0));
                }
                self.reset(true, "guest-reset")?;
                Ok(None)
            }
            LoopAction::GuestSuspend => {
                // Like QEMU: vCPUs held, no STOP, only SUSPEND.
                self.run_state.set_paused(true);
                if let Some(vm) = &self.vm {
                    vm.kick_all();
                }
                self.set_status(RunStatus::Suspended);
                self.events.emit(VmEvent::Suspend);
                Ok(None)
            }
            LoopAction::Signal(sig) => {
                self.events.emit(VmEvent::Shutdown {
                    guest: false,
                    reason: "host-signal",
                });
                eprintln!("petrel: terminating on signal {sig}");
                Ok(Some(0))
            }
            LoopAction::UserQuit => {
                self.events.emit(VmEvent::Shutdown {
                    guest: false,
                    reason: "host-ui",
                });
                eprintln!("petrel: terminated by the user (Ctrl-A x)");
                Ok(Some(0))
            }
            LoopAction::Fatal(msg) => {
                if !self.has_monitors {
                    return Err(MachineError::GuestFatal(msg));
                }
                // With a monitor, stay up for management software to inspect, as QEMU does.
                eprintln!("petrel: {msg}");
                self.pause(RunStatus::InternalError);
                Ok(None)
            }
            LoopAction::Request(req) => self.serve(req),
        }
    }

    fn serve(&mut self, req: ApiRequest) -> Result<Option<i32>, MachineError> {
        let ApiRequest { action, reply } = req;
        let result = match action {
            VmmAction::QueryStatus => Ok(VmmData::Status(self.status)),
            VmmAction::Stop => {
                if self.status == RunStatus::Running {
                    self.pause(RunStatus::Paused);
                }
                Ok(VmmData::Empty)
            }
            VmmAction::Cont => self.cont(),
            VmmAction::SystemReset => {
                self.reset(false, "host-qmp-system-reset")?;
                Ok(VmmData::Empty)
            }
            VmmAction::SystemPowerdown => {
                self.events.emit(VmEvent::Powerdown);
                self.devices
                    .press_power_button()
                    .map(|()| VmmData::Empty)
                    .map_err(|e| ApiError::Failed(crate::error_chain(&e)))
            }
            VmmAction::SystemWakeup => {
                // Outside S3 there is nothing to wake, and QEMU answers success.
                if self.status == RunStatus::Suspended {
                    self.wake()?;
                }
                Ok(VmmData::Empty)
            }
            VmmAction::InjectNmi => {
                if let Some(vm) = &self.vm {
                    for v in vm.vcpus() {
                        v.request(VcpuRequest::Nmi, &self.run_state);
                    }
                }
                Ok(VmmData::Empty)
            }
            VmmAction::Quit => {
                reply(Ok(VmmData::Empty));
                self.events.emit(VmEvent::Shutdown {
                    guest: false,
                    reason: "host-qmp-quit",
                });
                return Ok(Some(0));
            }
            VmmAction::QueryCpus => Ok(VmmData::Cpus(self.query_cpus())),
            VmmAction::QueryHotpluggableCpus => Ok(VmmData::CpuSlots(self.cpu_slots())),
            VmmAction::Block(req) => match self.block.serve(*req) {
                Ok(Some(data)) => Ok(VmmData::Block(data)),
                Ok(None) => Ok(VmmData::Empty),
                Err(e) => Err(block_error(&e)),
            },
            VmmAction::IoErrorStop => {
                // QEMU stops only a running VM; a request failing while paused stays held
                // until `cont` all the same.
                if self.status == RunStatus::Running {
                    self.pause(RunStatus::IoError);
                }
                Ok(VmmData::Empty)
            }
            VmmAction::QueryPci => Ok(VmmData::Pci(self.query_pci())),
            VmmAction::Balloon(req) => match self.balloon.serve(*req) {
                Ok(Some(data)) => Ok(VmmData::Balloon(data)),
                Ok(None) => Ok(VmmData::Empty),
                Err(e @ BalloonError::NotActive) => Err(ApiError::DeviceNotActive(e.to_string())),
                Err(e) => Err(ApiError::Failed(e.to_string())),
            },
            VmmAction::Dump(req) => {
                // A dump answers when it is written unless detached: the layer keeps `reply`.
                let env = DumpEnv {
                    vcpus: self.vm.as_ref().map_or(&[], |vm| vm.vcpus()),
                    run_state: &self.run_state,
                    mem: &self.mem,
                };
                self.dump.serve(*req, &env, reply);
                return Ok(None);
            }
            VmmAction::Net(req) => match self.net.serve(*req) {
                Ok(Some(data)) => Ok(VmmData::Net(data)),
                Ok(None) => Ok(VmmData::Empty),
                Err(e) if e.is_device_not_found() => Err(ApiError::DeviceNotFound(e.to_string())),
                Err(e) => Err(ApiError::Failed(crate::error_text(&e))),
            },
        };
        reply(result);
        Ok(None)
    }

    /// Changes the run state and publishes it for status queries.
    fn set_status(&mut self, status: RunStatus) {
        self.status = status;
        self.status_cell.set(status);
    }

    fn cont(&mut self) -> Result<VmmData, ApiError> {
        match self.status {
            s if s.needs_reset() => Err(ApiError::Failed(
                "Resetting the Virtual Machine is required".into(),
            )),
            RunStatus::Running | RunStatus::Suspended => Ok(VmmData::Empty),
            _ => {
                self.run_state.set_paused(false);
                self.set_status(RunStatus::Running);
                self.events.emit(VmEvent::Resume);
                // Requests held by an error stop are retried, as QEMU's `cont` does.
                self.block.resume();
                Ok(VmmData::Empty)
            }
        }
    }

    /// Holds every vCPU and enters `status`, reporting STOP if they were running.
    fn pause(&mut self, status: RunStatus) {
        let was_running = self.status == RunStatus::Running;
        self.run_state.set_paused(true);
        if let Some(vm) = &self.vm {
            vm.kick_all();
        }
        self.set_status(status);
        if was_running {
            self.events.emit(VmEvent::Stop);
        }
    }

    /// Reloads the kernel on a fresh VM over the same devices. A machine that was not
    /// running comes back held, in `prelaunch`, as in QEMU.
    fn reset(&mut self, guest: bool, reason: &'static str) -> Result<(), MachineError> {
        self.stop_vm();
        self.devices.reset();
        self.events.emit(VmEvent::Reset { guest, reason });
        if self.status != RunStatus::Running {
            self.run_state.set_paused(true);
            self.set_status(RunStatus::Prelaunch);
        }
        let vm = Vm::boot(&self.context())?;
        self.vm = Some(vm);
        Ok(())
    }

    fn context(&self) -> VmContext<'_> {
        VmContext {
            kvm: &self.kvm,
            cfg: &self.boot_cfg,
            mem: &self.mem,
            cpuid: &self.cpuid,
            devices: &self.devices,
            run_state: &self.run_state,
            events: &self.vcpu_events,
        }
    }

    /// Leaves S3: devices reset, the RAM kept, the boot vCPU at the guest's waking vector.
    fn wake(&mut self) -> Result<(), MachineError> {
        let Some(vm) = self.vm.take() else {
            return Ok(());
        };
        self.devices.wake();
        self.run_state.set_paused(false);
        let woken = vm.wake(&self.context())?;
        self.vm = Some(woken);
        self.set_status(RunStatus::Running);
        self.events.emit(VmEvent::Wakeup);
        Ok(())
    }

    fn stop_vm(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            vm.stop(&self.run_state);
        }
    }

    fn query_cpus(&self) -> Vec<api::CpuState> {
        let Some(vm) = &self.vm else {
            return Vec::new();
        };
        let answers = ask_all(vm.vcpus(), &self.run_state, VcpuRequest::QueryState);
        vm.vcpus()
            .iter()
            .zip(answers)
            .map(|(v, answer)| {
                answer.unwrap_or(api::CpuState {
                    index: v.index(),
                    thread_id: v.thread_id(),
                    pc: 0,
                    halted: false,
                })
            })
            .collect()
    }

    fn query_pci(&self) -> Vec<api::pci::PciFunctionInfo> {
        let ids = |devfn: u8| {
            self.block
                .disks()
                .iter()
                .filter_map(|d| d.device.as_ref())
                .find(|dev| dev.devfn == devfn)
                .and_then(|dev| dev.id.clone())
                .or_else(|| {
                    let nics = self.net.nics();
                    nics.iter().find(|n| n.devfn == devfn)?.id.clone()
                })
                .or_else(|| {
                    let balloon = self.balloon.device()?;
                    (balloon.devfn == devfn).then(|| balloon.id.clone())?
                })
        };
        self.devices.pci().query(&ids)
    }

    fn cpu_slots(&self) -> Vec<CpuSlot> {
        let t = self.boot_cfg.topology;
        (0..self.boot_cfg.max_cpus)
            .map(|i| CpuSlot {
                thread: i % t.threads,
                core: (i / t.threads) % t.cores,
                die: (i / (t.threads * t.cores)) % t.dies,
                socket: i / t.threads_per_package(),
                present_index: (i < self.boot_cfg.cpus).then_some(i),
            })
            .collect()
    }
}

/// A block-layer error as front ends see it.
fn block_error(e: &BlockdevError) -> ApiError {
    let text = crate::error_text(e);
    if e.is_device_not_found() {
        ApiError::DeviceNotFound(text)
    } else {
        ApiError::Failed(text)
    }
}
