//! Typed VMM operations: what a front end (QMP today) may ask of the VMM, and what it gets
//! back. Requests travel to the control loop over a channel plus an eventfd, each with its own
//! reply function, so front ends never touch VMM state directly.

pub mod balloon;
pub mod block;
pub mod dump;
pub mod net;
pub mod pci;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

/// The guest's run state, as QMP's RunState names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Created with `-S`, never started.
    Prelaunch,
    /// vCPUs running.
    Running,
    /// Stopped by `stop`.
    Paused,
    /// The guest powered off and `-no-shutdown` kept the process.
    Shutdown,
    /// A vCPU failed and cannot go on.
    InternalError,
    /// The guest is in ACPI S3.
    Suspended,
    /// A disk error stopped the VM (`werror=stop`); `cont` retries the request.
    IoError,
}

impl RunStatus {
    /// QMP's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Prelaunch => "prelaunch",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Shutdown => "shutdown",
            RunStatus::InternalError => "internal-error",
            RunStatus::Suspended => "suspended",
            RunStatus::IoError => "io-error",
        }
    }

    /// States that only a reset leaves (QEMU's `runstate_needs_reset`).
    pub fn needs_reset(self) -> bool {
        matches!(self, RunStatus::Shutdown | RunStatus::InternalError)
    }
}

/// The run state the VMM publishes on every change, so status queries need no round trip to
/// the control thread.
#[derive(Debug)]
pub struct StatusCell(std::sync::atomic::AtomicU8);

impl StatusCell {
    const ALL: [RunStatus; 7] = [
        RunStatus::Prelaunch,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Shutdown,
        RunStatus::InternalError,
        RunStatus::Suspended,
        RunStatus::IoError,
    ];

    /// A cell holding `status`.
    pub fn new(status: RunStatus) -> Arc<StatusCell> {
        let cell = Arc::new(StatusCell(std::sync::atomic::AtomicU8::new(0)));
        cell.set(status);
        cell
    }

    /// Publishes `status`.
    pub fn set(&self, status: RunStatus) {
        let i = Self::ALL.iter().position(|s| *s == status).unwrap_or(0);
        self.0.store(i as u8, std::sync::atomic::Ordering::Release);
    }

    /// The last published status.
    pub fn get(&self) -> RunStatus {
        Self::ALL[usize::from(self.0.load(std::sync::atomic::Ordering::Acquire)) % Self::ALL.len()]
    }
}

/// One vCPU as `query-cpus` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// Index (`-smp` order).
    pub index: u32,
    /// Host thread id of its thread.
    pub thread_id: i32,
    /// Instruction pointer (linear: CS base + RIP).
    pub pc: u64,
    /// Whether it waits in HLT (or for INIT/SIPI).
    pub halted: bool,
}

/// A possible vCPU slot, for `query-hotpluggable-cpus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSlot {
    /// Socket, die, core and thread ids.
    pub socket: u32,
    /// Die within the socket.
    pub die: u32,
    /// Core within the die.
    pub core: u32,
    /// Thread within the core.
    pub thread: u32,
    /// The vCPU index if present.
    pub present_index: Option<u32>,
}

/// What the VMM can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmAction {
    /// Run state.
    QueryStatus,
    /// Pause the vCPUs.
    Stop,
    /// Resume (or start, after `-S`).
    Cont,
    /// Reset the machine as the reset button would.
    SystemReset,
    /// Press the ACPI power button.
    SystemPowerdown,
    /// Wake the guest from S3.
    SystemWakeup,
    /// Deliver an NMI to every vCPU.
    InjectNmi,
    /// End petrel.
    Quit,
    /// vCPU states.
    QueryCpus,
    /// Possible vCPU slots.
    QueryHotpluggableCpus,
    /// A block-layer operation.
    Block(Box<block::BlockRequest>),
    /// A disk's I/O thread hit an error its policy stops the VM for.
    IoErrorStop,
    /// The PCI buses and functions.
    QueryPci,
    /// A balloon or guest-RAM operation.
    Balloon(Box<balloon::BalloonRequest>),
    /// A network operation.
    Net(Box<net::NetRequest>),
    /// A memory dump operation.
    Dump(Box<dump::DumpRequest>),
}

/// What the VMM answers.
#[derive(Debug)]
pub enum VmmData {
    /// Nothing beyond success.
    Empty,
    /// `QueryStatus`.
    Status(RunStatus),
    /// `QueryCpus`.
    Cpus(Vec<CpuState>),
    /// `QueryHotpluggableCpus`.
    CpuSlots(Vec<CpuSlot>),
    /// A block-layer answer.
    Block(block::BlockData),
    /// `QueryPci`.
    Pci(Vec<pci::PciFunctionInfo>),
    /// A balloon or guest-RAM answer.
    Balloon(balloon::BalloonData),
    /// A network answer.
    Net(net::NetData),
    /// A dump answer.
    Dump(dump::DumpData),
}

/// Why an operation failed; the message is what clients see.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApiError {
    /// The operation is not possible in this state, or failed.
    #[error("{0}")]
    Failed(String),
    /// The device named does not exist (QMP's `DeviceNotFound`).
    #[error("{0}")]
    DeviceNotFound(String),
    /// The device the operation needs is not there (QMP's `DeviceNotActive`).
    #[error("{0}")]
    DeviceNotActive(String),
}

/// The reply function of one request.
pub type ReplyFn = Box<dyn FnOnce(Result<VmmData, ApiError>) + Send>;

/// Things that happened to the guest, for front ends to report (QMP events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// vCPUs stopped.
    Stop,
    /// vCPUs resumed.
    Resume,
    /// The machine was reset.
    Reset {
        /// Asked by the guest (not by a front end).
        guest: bool,
        /// QEMU's ShutdownCause name.
        reason: &'static str,
    },
    /// The machine shut down.
    Shutdown {
        /// Asked by the guest.
        guest: bool,
        /// QEMU's ShutdownCause name.
        reason: &'static str,
    },
    /// A power-down request reached the guest.
    Powerdown,
    /// The guest entered S3.
    Suspend,
    /// The guest left S3.
    Wakeup,
    /// The guest set its RTC: seconds relative to the host's UTC clock.
    RtcChange {
        /// Guest RTC minus host time.
        offset: i64,
    },
    /// The balloon driver changed the balloon's size.
    BalloonChange {
        /// The guest's memory in bytes, balloon deducted (as `query-balloon` reports it).
        actual: i64,
    },
    /// A disk request failed on the host.
    BlockIoError(petrel_devices::virtio::block::IoErrorReport),
    /// A guest changed a NIC's receive filter (sent once until `query-rx-filter` re-arms it).
    NicRxFilterChanged {
        /// The NIC's device id, when it has one.
        name: Option<String>,
        /// The NIC's QOM path.
        path: String,
    },
    /// A dump ended (DUMP_COMPLETED).
    DumpCompleted {
        /// Its final progress.
        result: dump::DumpProgress,
        /// Why it failed.
        error: Option<String>,
    },
    /// A write went past a node's write threshold.
    BlockWriteThreshold {
        /// The node.
        node_name: String,
        /// Bytes past the threshold.
        amount_exceeded: u64,
        /// The threshold, now disarmed.
        threshold: u64,
    },
}

/// Where the VMM reports [`VmEvent`]s; called from the control thread and vCPU threads.
pub trait EventSink: Send + Sync {
    /// Reports one event.
    fn emit(&self, event: VmEvent);
}

/// An [`EventSink`] for when no front end listens.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: VmEvent) {}
}

/// One request.
pub struct ApiRequest {
    /// What to do.
    pub action: VmmAction,
    /// Where the answer goes.
    pub reply: ReplyFn,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// The front ends' handle: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ApiSender {
    tx: Sender<ApiRequest>,
    evt: Arc<EventFd>,
}

impl ApiSender {
    /// Queues `action`; `reply` runs on the VMM thread with the result. If the VMM is gone,
    /// `reply` runs here with an error.
    pub fn send(&self, action: VmmAction, reply: ReplyFn) {
        if let Err(e) = self.tx.send(ApiRequest { action, reply }) {
            (e.0.reply)(Err(ApiError::Failed("the VMM is shutting down".into())));
            return;
        }
        // A saturated counter still reads as readable, so a failed write loses nothing.
        let _ = self.evt.write(1);
    }
}

/// The VMM's end.
pub struct ApiReceiver {
    rx: Receiver<ApiRequest>,
    /// Readable when requests are queued.
    pub evt: Arc<EventFd>,
}

impl ApiReceiver {
    /// Takes every queued request.
    pub fn drain(&self) -> Vec<ApiRequest> {
        let _ = self.evt.read();
        self.rx.try_iter().collect()
    }
}

/// A connected sender/receiver pair.
pub fn channel_pair() -> std::io::Result<(ApiSender, ApiReceiver)> {
    let evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
    let (tx, rx) = channel();
    Ok((
        ApiSender {
            tx,
            evt: evt.clone(),
        },
        ApiReceiver { rx, evt },
    ))
}
