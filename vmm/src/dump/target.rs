//! Where a dump goes: the `file:` or `fd:` destination QEMU's protocol names, and how to
//! write to it.

use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use petrel_block::errno::of_io;

use super::error::DumpError;
use super::writer::Sink;
use crate::api::dump::MonitorFds;

/// A dump's open destination.
pub struct Destination {
    /// Where to write.
    pub fd: OwnedFd,
    /// petrel created the file itself (`file:`): nobody else shares its status flags.
    pub created: bool,
}

/// Creates (or truncates) `path` for writing with `mode`, with QEMU's error text.
pub fn create(path: &Path, mode: u32) -> Result<OwnedFd, DumpError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| DumpError::Open {
            path: path.into(),
            errno: of_io(&e),
        })
}

/// Opens the dump's destination as QEMU does: `fd:NAME` takes the monitor's descriptor,
/// `file:PATH` creates the file (mode 0400, truncated).
pub fn open(protocol: &str, fds: &MonitorFds) -> Result<Destination, DumpError> {
    if let Some(name) = protocol.strip_prefix("fd:") {
        let fd = fds
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| DumpError::FdNotFound(name.to_string()))?;
        return Ok(Destination { fd, created: false });
    }
    if let Some(path) = protocol.strip_prefix("file:") {
        let fd = create(Path::new(path), 0o400)?;
        return Ok(Destination { fd, created: true });
    }
    Err(DumpError::InvalidParameter("protocol"))
}

/// Whether `fd`'s file lives in memory (tmpfs, ramfs), where its page cache is the file and
/// `O_DIRECT` would only add a copy.
fn in_memory(fd: &OwnedFd) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: an all-zero statfs is a valid out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out pointer; fstatfs only reads the descriptor.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}

/// How to write to `fd`: sparse into a regular file whose bytes from the current offset on
/// do not exist yet (and that does not append), else sequentially. `created`: petrel opened
/// the file itself (`file:`), so it may switch the descriptor to `O_DIRECT`.
pub fn sink_of(fd: &OwnedFd, created: bool) -> Sink {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    let Ok(file) = fd.try_clone().map(File::from) else {
        return Sink::Stream;
    };
    let (Ok(meta), Ok(base)) = (file.metadata(), (&file).stream_position()) else {
        return Sink::Stream;
    };
    if flags >= 0 && flags & libc::O_APPEND == 0 && meta.is_file() && meta.len() <= base {
        Sink::Sparse {
            base,
            direct: created && !in_memory(fd),
        }
    } else {
        Sink::Stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_for(dir: &Path, created: bool) -> Sink {
        let path = dir.join(format!("petrel-sink-{}", std::process::id()));
        let fd = OwnedFd::from(File::create(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        sink_of(&fd, created)
    }

    #[test]
    fn direct_only_for_created_files_on_disk() {
        // The test binary lives on the build's disk; /dev/shm is a tmpfs.
        let exe = std::env::current_exe().unwrap();
        let disk = exe.parent().unwrap();
        assert!(matches!(
            sink_for(disk, true),
            Sink::Sparse {
                base: 0,
                direct: true
            }
        ));
        assert!(matches!(
            sink_for(disk, false),
            Sink::Sparse { direct: false, .. }
        ));
        assert!(matches!(
            sink_for(Path::new("/dev/shm"), true),
            Sink::Sparse { direct: false, .. }
        ));
    }
}
