//! vCPU threads: one per vCPU, each running KVM_RUN and dispatching its exits straight to the
//! device that owns the port or address, with no lock over all devices.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use petrel_arch::regs::EntryMode;
use petrel_arch::topology::Topology;
use petrel_arch::{cpuid, lapic, msr, regs, GuestMemoryMmap};
use thiserror::Error;
use vm_device::bus::{MmioAddress, PioAddress};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// Errors creating or configuring a vCPU.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// KVM refused to create the vCPU.
    #[error("cannot create vCPU {0}")]
    Create(u32, #[source] kvm_ioctls::Error),
    /// A KVM configuration ioctl failed.
    #[error("vCPU {0}: KVM {1} failed")]
    Kvm(u32, &'static str, #[source] kvm_ioctls::Error),
    /// CPUID adjustment failed.
    #[error("vCPU {0}: bad CPUID configuration")]
    Cpuid(u32, #[source] cpuid::CpuidError),
    /// Boot register setup failed.
    #[error("vCPU {0}: cannot set boot registers")]
    Regs(u32, #[source] regs::RegsError),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The thread could not be spawned.
    #[error("cannot spawn thread for vCPU {0}")]
    Spawn(u32, #[source] std::io::Error),
}

/// Why a vCPU thread asks the control loop to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The guest triple-faulted or asked KVM for a reset.
    Reset,
    /// The guest asked KVM for a shutdown.
    Shutdown,
    /// KVM could not run the guest any further.
    Fatal(String),
}

/// The vCPUs' run state shared with the control loop: paused vCPUs wait on it before
/// entering the guest.
#[derive(Default)]
pub struct RunState {
    paused: Mutex<bool>,
    cond: Condvar,
}

impl RunState {
    /// A run state starting paused (`-S`) or running.
    pub fn new(paused: bool) -> Arc<RunState> {
        Arc::new(RunState {
            paused: Mutex::new(paused),
            cond: Condvar::new(),
        })
    }

    /// Lets vCPUs run (or holds them).
    pub fn set_paused(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = paused;
        self.cond.notify_all();
    }

    /// Whether vCPUs are held.
    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while paused, but returns early to serve mailbox requests or to stop.
    fn wait_while_paused(&self, stop: &AtomicBool, mailbox: &Mailbox) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        while *paused && !stop.load(Ordering::Acquire) && !mailbox.has_requests() {
            paused = self.cond.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Something only the vCPU's own thread can do, because KVM serialises vCPU ioctls with
/// KVM_RUN.
pub enum VcpuRequest {
    /// Queue an NMI.
    Nmi,
    /// Report registers and run state.
    QueryState(Sender<crate::api::CpuState>),
    /// Report the registers a memory dump records (None if KVM refused).
    Registers(Sender<Option<crate::dump::cpu::CpuRegisters>>),
}

/// Requests waiting for a vCPU thread.
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<Vec<VcpuRequest>>,
}

impl Mailbox {
    fn has_requests(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn take(&self) -> Vec<VcpuRequest> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Events from vCPU threads to the control loop: a queue plus an eventfd to wake the loop.
pub struct VcpuEvents {
    queue: Mutex<Vec<(u32, VcpuEvent)>>,
    /// Readable when the queue has something.
    pub evt: EventFd,
}

impl VcpuEvents {
    /// An empty queue.
    pub fn new() -> std::io::Result<Arc<VcpuEvents>> {
        Ok(Arc::new(VcpuEvents {
            queue: Mutex::new(Vec::new()),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        }))
    }

    fn push(&self, index: u32, e: VcpuEvent) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, e));
        // A full counter still wakes the loop, so a failed write loses nothing.
        let _ = self.evt.write(1);
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Vec<(u32, VcpuEvent)> {
        let _ = self.evt.read();
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a vCPU is built from.
pub struct VcpuSetup<'a> {
    /// The VM.
    pub vm: &'a VmFd,
    /// Guest memory, for boot tables.
    pub mem: &'a GuestMemoryMmap,
    /// CPUID KVM supports, before per-vCPU changes.
    pub base_cpuid: &'a CpuId,
    /// `-cpu` feature toggles.
    pub features: &'a [(String, bool)],
    /// `-smp` topology.
    pub topology: Topology,
    /// How the boot vCPU enters the kernel; application processors wait for INIT/SIPI.
    pub entry: EntryMode,
}

/// Creates and configures vCPU `index`.
pub fn create_vcpu(setup: &VcpuSetup, index: u32) -> Result<VcpuFd, VcpuError> {
    let apic_id = setup.topology.apic_id(index);
    let fd = setup
        .vm
        .create_vcpu(u64::from(apic_id))
        .map_err(|e| VcpuError::Create(index, e))?;
    let kvm = |what| move |e| VcpuError::Kvm(index, what, e);
    let mut cpuid = setup.base_cpuid.clone();
    cpuid::apply_topology(&mut cpuid, &setup.topology, index);
    cpuid::apply_features(&mut cpuid, setup.features).map_err(|e| VcpuError::Cpuid(index, e))?;
    fd.set_cpuid2(&cpuid).map_err(kvm("set_cpuid2"))?;
    fd.set_msrs(&msr::boot_msrs()).map_err(kvm("set_msrs"))?;
    regs::setup_fpu(&fd).map_err(|e| VcpuError::Regs(index, e))?;
    let mut lapic_state = fd.get_lapic().map_err(kvm("get_lapic"))?;
    lapic::set_lint(&mut lapic_state);
    fd.set_lapic(&lapic_state).map_err(kvm("set_lapic"))?;
    // Only the BSP gets boot registers: application processors stay in KVM's wait-for-SIPI
    // state and start in real mode at the vector the guest's SIPI gives.
    if index == 0 {
        regs::setup_boot_vcpu(&fd, setup.mem, setup.entry)
            .map_err(|e| VcpuError::Regs(index, e))?;
    }
    Ok(fd)
}

thread_local! {
    /// This thread's `kvm_run`, for the kick handler. Null on threads that run no vCPU.
    static KVM_RUN: std::cell::Cell<*mut kvm_bindings::kvm_run> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Makes the interrupted vCPU's next (or current) KVM_RUN return at once. Setting
/// `immediate_exit` closes the race of a kick that lands just before the thread enters
/// KVM_RUN: the signal alone would be lost and the vCPU could sleep in a guest HLT forever.
extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, published by its vCPU
        // loop and cleared before the VcpuFd (and the mapping) goes away; a single byte
        // store is async-signal-safe.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Installs the no-op handler for the signal that kicks vCPUs out of KVM_RUN.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::Signal)
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// A running vCPU thread.
pub struct VcpuHandle {
    index: u32,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    tid: Arc<AtomicI32>,
}

impl VcpuHandle {
    /// The vCPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The host thread id, once the thread has started.
    pub fn thread_id(&self) -> i32 {
        self.tid.load(Ordering::Acquire)
    }

    /// Hands `req` to the vCPU thread, waking it wherever it is.
    pub fn request(&self, req: VcpuRequest, run_state: &RunState) {
        self.mailbox
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req);
        run_state.cond.notify_all();
        self.kick();
    }

    /// Interrupts KVM_RUN so the thread notices a state change.
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the pthread is alive until joined, and joining needs `&mut self`.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Stops the thread and waits for it. The kick is repeated because a signal sent just
    /// before the thread enters KVM_RUN would otherwise be lost.
    pub fn stop(&mut self, run_state: &RunState) {
        self.stop.store(true, Ordering::Release);
        run_state.cond.notify_all();
        while !self.done.load(Ordering::Acquire) {
            self.kick();
            std::thread::sleep(Duration::from_micros(200));
            run_state.cond.notify_all();
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("vCPU {} thread panicked", self.index);
            }
        }
    }
}

/// How long a vCPU thread may take to answer a request before the asker gives up on it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends every vCPU of `vcpus` the request `make` builds around a reply channel, all before
/// waiting, then collects the answers in order: None for a vCPU that did not answer within
/// [`ANSWER_TIMEOUT`].
pub fn ask_all<T>(
    vcpus: &[VcpuHandle],
    run_state: &RunState,
    make: impl Fn(Sender<T>) -> VcpuRequest,
) -> Vec<Option<T>> {
    let waiting: Vec<_> = vcpus
        .iter()
        .map(|v| {
            let (tx, rx) = mpsc::channel();
            v.request(make(tx), run_state);
            rx
        })
        .collect();
    waiting
        .into_iter()
        .map(|rx| rx.recv_timeout(ANSWER_TIMEOUT).ok())
        .collect()
}

/// Starts vCPU `index` on its own thread.
pub fn spawn(
    index: u32,
    mut fd: VcpuFd,
    io: Arc<IoManager>,
    run_state: Arc<RunState>,
    events: Arc<VcpuEvents>,
) -> Result<VcpuHandle, VcpuError> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mailbox = Arc::new(Mailbox::default());
    let tid = Arc::new(AtomicI32::new(0));
    let (stop2, done2, mailbox2, tid2) = (stop.clone(), done.clone(), mailbox.clone(), tid.clone());
    let thread = std::thread::Builder::new()
        .name(format!("CPU {index}/KVM"))
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid2.store(unsafe { libc::gettid() }, Ordering::Release);
            let ctx = VcpuContext {
                index,
                io: &io,
                run_state: &run_state,
                events: &events,
            };
            run_loop(&ctx, &mut fd, &stop2, &mailbox2);
            done2.store(true, Ordering::Release);
        })
        .map_err(|e| VcpuError::Spawn(index, e))?;
    // query-cpus may ask right away: wait until the thread has published its id.
    while tid.load(Ordering::Acquire) == 0 && !done.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    Ok(VcpuHandle {
        index,
        thread: Some(thread),
        stop,
        done,
        mailbox,
        tid,
    })
}

struct VcpuContext<'a> {
    index: u32,
    io: &'a IoManager,
    run_state: &'a RunState,
    events: &'a VcpuEvents,
}

fn serve(index: u32, fd: &VcpuFd, mailbox: &Mailbox) {
    for req in mailbox.take() {
        match req {
            VcpuRequest::Nmi => {
                if let Err(e) = fd.nmi() {
                    log::warn!("vCPU {index}: cannot inject NMI: {e}");
                }
            }
            VcpuRequest::QueryState(reply) => {
                let pc = match (fd.get_regs(), fd.get_sregs()) {
                    (Ok(r), Ok(s)) => s.cs.base.wrapping_add(r.rip),
                    _ => 0,
                };
                let halted = fd
                    .get_mp_state()
                    .is_ok_and(|m| m.mp_state != kvm_bindings::KVM_MP_STATE_RUNNABLE);
                // SAFETY: gettid has no preconditions.
                let thread_id = unsafe { libc::gettid() };
                let _ = reply.send(crate::api::CpuState {
                    index,
                    thread_id,
                    pc,
                    halted,
                });
            }
            VcpuRequest::Registers(reply) => {
                let _ = reply.send(crate::dump::cpu::capture(fd));
            }
        }
    }
}

fn run_loop(ctx: &VcpuContext, fd: &mut VcpuFd, stop: &AtomicBool, mailbox: &Mailbox) {
    let run: *mut kvm_bindings::kvm_run = fd.get_kvm_run();
    KVM_RUN.with(|r| r.set(run));
    run_vcpu(ctx, fd, stop, mailbox);
    KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
}

fn run_vcpu(ctx: &VcpuContext, fd: &mut VcpuFd, stop: &AtomicBool, mailbox: &Mailbox) {
    let VcpuContext {
        index,
        io,
        run_state,
        events,
    } = *ctx;
    loop {
        serve(index, fd, mailbox);
        run_state.wait_while_paused(stop, mailbox);
        if stop.load(Ordering::Acquire) {
            return;
        }
        if run_state.is_paused() {
            continue;
        }
        let event = match fd.run() {
            Ok(exit) => handle_exit(exit, io),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(VcpuEvent::Fatal(format!("KVM_RUN failed: {e}"))),
        };
        if let Some(event) = event {
            let event = match event {
                VcpuEvent::Fatal(msg) => VcpuEvent::Fatal(format!("{msg}; {}", regs::describe(fd))),
                other => other,
            };
            let fatal = matches!(event, VcpuEvent::Fatal(_));
            events.push(index, event);
            if fatal {
                // Nothing more can run here; keep answering queries until stopped.
                while !stop.load(Ordering::Acquire) {
                    serve(index, fd, mailbox);
                    std::thread::park_timeout(Duration::from_millis(20));
                }
                return;
            }
        }
    }
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

fn handle_exit(exit: VcpuExit, io: &IoManager) -> Option<VcpuEvent> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if io.pio_read(PioAddress(port), data).is_err() {
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            // Writes to ports nobody decodes are dropped, as on real hardware.
            let _ = io.pio_write(PioAddress(port), data);
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if io.mmio_read(MmioAddress(addr), data).is_err() {
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            let _ = io.mmio_write(MmioAddress(addr), data);
            None
        }
        VcpuExit::Shutdown => Some(VcpuEvent::Reset),
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => Some(VcpuEvent::Reset),
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => Some(VcpuEvent::Shutdown),
        VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen | VcpuExit::IoapicEoi(_) => None,
        VcpuExit::FailEntry(reason, cpu) => Some(VcpuEvent::Fatal(format!(
            "KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
        ))),
        VcpuExit::InternalError => Some(VcpuEvent::Fatal(
            "KVM internal error (emulation failure)".into(),
        )),
        other => Some(VcpuEvent::Fatal(format!("unexpected KVM exit {other:?}"))),
    }
}
