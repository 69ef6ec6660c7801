//! The dump writer process. petrel forks it while every vCPU is held: the child's private
//! copy of guest RAM is then a snapshot taken at that instant (copy-on-write), which it
//! writes out while the guest runs on in petrel. A thread of petrel waits for it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use petrel_arch::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::error::DumpError;
use super::plan::{Parts, Piece};
use super::writer::{self, errno, HostChunk, ProgressData, Sink};

/// A page shared with the writer process, holding its [`ProgressData`].
pub struct SharedProgress {
    page: NonNull<ProgressData>,
}

// SAFETY: the page holds only atomics, valid to share between threads, and lives until drop.
unsafe impl Send for SharedProgress {}
// SAFETY: as above.
unsafe impl Sync for SharedProgress {}

const PAGE_SIZE: usize = 4096;

impl SharedProgress {
    /// Maps a zeroed shared page (zero is a valid, empty ProgressData).
    pub fn new() -> Result<SharedProgress, DumpError> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DumpError::Fork(errno()));
        }
        let page = NonNull::new(p.cast::<ProgressData>()).ok_or(DumpError::Fork(libc::ENOMEM))?;
        Ok(SharedProgress { page })
    }

    /// The shared data.
    pub fn data(&self) -> &ProgressData {
        // SAFETY: the page is mapped, page aligned and zero-initialised (a valid
        // ProgressData of atomics) until drop.
        unsafe { self.page.as_ref() }
    }
}

impl Drop for SharedProgress {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in new() with this size and is unmapped once.
        unsafe { libc::munmap(self.page.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// Everything the writer process writes, prepared before the fork so that the child
/// allocates nothing.
pub struct Job {
    /// The dump's descriptor.
    pub fd: OwnedFd,
    /// How to write to it.
    pub sink: Sink,
    /// The bytes before guest memory.
    pub header: Vec<u8>,
    /// Guest memory, in file order.
    pub chunks: Vec<HostChunk>,
}

/// The host addresses of `pieces` (each lies in one RAM region, so is contiguous there).
pub fn host_chunks(mem: &GuestMemoryMmap, pieces: &[Piece]) -> Result<Vec<HostChunk>, DumpError> {
    pieces
        .iter()
        .map(|p| {
            let slice = mem
                .get_slice(GuestAddress(p.phys), p.len as usize)
                .map_err(|_| DumpError::NoMemory)?;
            Ok(HostChunk {
                ptr: slice.ptr_guard().as_ptr(),
                len: p.len as usize,
            })
        })
        .collect()
}

/// Closes every descriptor of the child but stdio and `keep`, so that the writer holds no
/// socket, KVM or device descriptor of petrel open while it runs.
fn close_others(keep: i32) {
    let close = |first: u32, last: u32| {
        if first <= last {
            // SAFETY: close_range only closes descriptors; an error leaves them open.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        }
    };
    let keep = keep as u32;
    if keep < 3 {
        close(3, u32::MAX);
    } else {
        close(3, keep - 1);
        close(keep + 1, u32::MAX);
    }
}

/// The child's whole life: write, report, exit. Never returns.
fn child(job: &Job, progress: &ProgressData, parent: libc::pid_t) -> ! {
    // SAFETY: prctl and getppid are async-signal-safe syscalls. prctl is variadic: the
    // signal goes as the full-width argument the kernel reads.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: _exit is async-signal-safe and ends only this process.
        unsafe { libc::_exit(2) };
    }
    let fd = job.fd.as_raw_fd();
    close_others(fd);
    // SAFETY: the chunks point into guest RAM, which this process's copy keeps unchanged.
    let result = unsafe { writer::write_dump(fd, job.sink, &job.header, &job.chunks, progress) };
    let code = match result {
        Ok(()) => 0,
        Err((at, e)) => {
            progress.failed_at.store(at, Ordering::Release);
            progress.errno.store(e, Ordering::Release);
            1
        }
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Forks the writer process for `job`; returns its pid.
pub fn spawn(job: &Job, progress: &SharedProgress) -> Result<libc::pid_t, DumpError> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child runs only `child`, which allocates nothing, takes no lock and ends
    // with _exit: what is safe after fork in a multi-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(DumpError::Fork(errno())),
        0 => child(job, progress.data(), parent),
        pid => Ok(pid),
    }
}

/// Kills the writer `pid` and reaps it.
pub fn kill(pid: libc::pid_t) {
    // SAFETY: pid is our child, not yet reaped, so the number still names it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: status is a valid out pointer; pid is our child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

/// Waits for the writer `pid` and tells how it ended.
pub fn wait(pid: libc::pid_t, progress: &ProgressData, parts: Parts) -> Result<(), DumpError> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer; pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(DumpError::Fork(errno()));
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    if libc::WIFSIGNALED(status) {
        return Err(DumpError::WriterKilled(libc::WTERMSIG(status)));
    }
    let at = progress.failed_at.load(Ordering::Acquire);
    let errno = progress.errno.load(Ordering::Acquire);
    let (what, with_errno) = parts.failure_at(at);
    Err(DumpError::Write {
        what,
        errno: (with_errno && errno > 0).then_some(errno),
    })
}
