//! Where a dump goes: the `file:` or `fd:` destination QEMU's protocol names, and how to
//! write to it.

use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::error::{errno_of, DumpError};
use super::writer::Sink;
use crate::api::dump::MonitorFds;

/// Opens the dump's destination as QEMU does: `fd:NAME` takes the monitor's descriptor,
/// `file:PATH` creates the file (mode 0400, truncated).
pub fn open(protocol: &str, fds: &MonitorFds) -> Result<OwnedFd, DumpError> {
    if let Some(name) = protocol.strip_prefix("fd:") {
        return fds
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| DumpError::FdNotFound(name.to_string()));
    }
    if let Some(path) = protocol.strip_prefix("file:") {
        return std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(path)
            .map(OwnedFd::from)
            .map_err(|e| DumpError::Open {
                path: path.into(),
                errno: errno_of(&e),
            });
    }
    Err(DumpError::InvalidParameter("protocol"))
}

/// How to write to `fd`: sparse into a regular file whose bytes from the current offset on
/// do not exist yet (and that does not append), else sequentially.
pub fn sink_of(fd: &OwnedFd) -> Sink {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    let Ok(file) = fd.try_clone().map(File::from) else {
        return Sink::Stream;
    };
    let (Ok(meta), Ok(base)) = (file.metadata(), (&file).stream_position()) else {
        return Sink::Stream;
    };
    if flags >= 0 && flags & libc::O_APPEND == 0 && meta.is_file() && meta.len() <= base {
        Sink::Sparse { base }
    } else {
        Sink::Stream
    }
}
