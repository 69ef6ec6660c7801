//! Termination signals delivered through a signalfd, so the control loop handles them like any
//! other event instead of in an async-signal context.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

const TERMINATING: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A signalfd for SIGTERM, SIGINT and SIGHUP.
pub struct SignalFd {
    file: File,
}

fn terminating_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut set = unsafe { set.assume_init() };
    for s in TERMINATING {
        // SAFETY: `set` is a valid sigset and `s` a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

impl SignalFd {
    /// Blocks the signals in the calling thread (threads spawned later inherit the mask) and
    /// opens a signalfd for them. Must run before any thread is spawned.
    pub fn new() -> io::Result<SignalFd> {
        let set = terminating_set();
        // SAFETY: `set` is a valid sigset; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new descriptor; `set` is valid.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that we own.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(SignalFd { file })
    }

    /// Reads one pending signal number, if any.
    pub fn read(&mut self) -> Option<i32> {
        let mut buf = [0u8; size_of::<libc::signalfd_siginfo>()];
        match self.file.read(&mut buf) {
            Ok(n) if n == buf.len() => {
                Some(i32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")))
            }
            _ => None,
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
