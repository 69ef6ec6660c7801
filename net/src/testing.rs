//! Helpers for the crate's unit tests.

use std::os::fd::RawFd;

/// Whether `fd` is readable right now.
pub fn readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}
