//! What the VMM and a disk's I/O thread share at run time: the error policy, the I/O status
//! QMP reports, and the way back to the VMM when a request fails.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::policy::{ErrorOutcome, ErrorPolicy};

/// QAPI `BlockDeviceIoStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// No error since the last resume.
    Ok,
    /// A request failed and stopped the VM.
    Failed,
    /// A request failed for lack of space and stopped the VM.
    NoSpace,
}

impl IoStatus {
    /// QAPI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IoStatus::Ok => "ok",
            IoStatus::Failed => "failed",
            IoStatus::NoSpace => "nospace",
        }
    }
}

/// A failed host request, as BLOCK_IO_ERROR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoErrorReport {
    /// The backend's name (the drive id, empty for `-blockdev` disks).
    pub device: String,
    /// The root node.
    pub node_name: String,
    /// A write (or flush, discard), not a read.
    pub write: bool,
    /// What the policy did.
    pub action: ErrorOutcome,
    /// The host ran out of space.
    pub nospace: bool,
    /// The host's error, as text.
    pub reason: String,
}

/// Where a disk reports failed requests; the VMM emits the event and, for
/// [`ErrorOutcome::Stop`], stops the VM.
pub trait DiskEvents: Send + Sync {
    /// Called on the I/O thread for every failed request.
    fn io_error(&self, report: IoErrorReport);
}

/// A [`DiskEvents`] that only logs.
struct LogOnly;

impl DiskEvents for LogOnly {
    fn io_error(&self, report: IoErrorReport) {
        log::warn!(
            "virtio-blk {}: {} error ({}): {}",
            report.device,
            if report.write { "write" } else { "read" },
            report.action.as_str(),
            report.reason
        );
    }
}

/// The run-time controls of one disk.
pub struct DiskControl {
    policy: Mutex<ErrorPolicy>,
    status: AtomicU8,
    resume: EventFd,
    events: Arc<dyn DiskEvents>,
}

impl std::fmt::Debug for DiskControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskControl")
            .field("policy", &self.policy())
            .field("status", &self.io_status())
            .finish_non_exhaustive()
    }
}

impl DiskControl {
    /// Controls with `policy`, reporting to `events`.
    pub fn new(policy: ErrorPolicy, events: Arc<dyn DiskEvents>) -> std::io::Result<Self> {
        Ok(DiskControl {
            policy: Mutex::new(policy),
            status: AtomicU8::new(0),
            resume: EventFd::new(EFD_NONBLOCK)?,
            events,
        })
    }

    /// Controls with the default policy that only log.
    pub fn logging() -> std::io::Result<Self> {
        Self::new(ErrorPolicy::default(), Arc::new(LogOnly))
    }

    /// The error policy.
    pub fn policy(&self) -> ErrorPolicy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The I/O status.
    pub fn io_status(&self) -> IoStatus {
        match self.status.load(Ordering::Acquire) {
            1 => IoStatus::Failed,
            2 => IoStatus::NoSpace,
            _ => IoStatus::Ok,
        }
    }

    /// The VM resumed: clears the I/O status and lets a held request retry.
    pub fn resume(&self) {
        self.status.store(0, Ordering::Release);
        // A saturated counter still wakes the thread, so a failed write loses nothing.
        let _ = self.resume.write(1);
    }

    /// Reports a failed request; the policy has decided `action`.
    pub(super) fn report(&self, report: IoErrorReport) {
        if report.action == ErrorOutcome::Stop {
            let status = if report.nospace { 2 } else { 1 };
            self.status.store(status, Ordering::Release);
            // A resume from before this stop must not release the retry early.
            let _ = self.resume.read();
        }
        self.events.io_error(report);
    }

    /// Waits until [`Self::resume`] or `stop` is signalled; true if resumed.
    pub(super) fn wait_resume(&self, stop: &EventFd) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.resume.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            if fds[1].revents != 0 {
                return false;
            }
            if fds[0].revents != 0 {
                let _ = self.resume.read();
                return true;
            }
        }
    }

    /// Waits `timeout` unless `stop` is signalled first; true if the time passed.
    pub(super) fn sleep(stop: &EventFd, timeout: std::time::Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: `fd` is a valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        n == 0 || (n < 0 && fd.revents == 0)
    }
}
