//! Descriptors handed to a backend by number (`fd=`), as QEMU takes them: made
//! non-blocking first, which is also how a number that is not an open descriptor shows.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::errno;

/// Makes `fd` non-blocking and takes ownership of it. Fails (leaving the number alone)
/// when it is not an open descriptor.
///
/// The caller hands `fd` over: nothing else may use or close it afterwards.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFL reads the descriptor's status flags and touches no memory; a number
    // that is not an open descriptor only makes it fail with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(errno::last());
    }
    // SAFETY: F_SETFL changes the status flags of the descriptor just found open.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(errno::last());
    }
    // SAFETY: fcntl() just succeeded on `fd`, so it is open, and the caller hands it over
    // (this function's contract).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
