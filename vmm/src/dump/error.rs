//! Why a dump, `memsave` or `pmemsave` failed, in QEMU 7.2's words where QEMU has them.

use std::path::PathBuf;

use petrel_block::errno::strerror;

use thiserror::Error;

/// What the dump commands answer on failure; the text is what QMP clients see.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DumpError {
    /// A dump is still being written.
    #[error("There is a dump in process, please wait.")]
    InProgress,
    /// `begin` without `length` or the reverse.
    #[error("Parameter '{0}' is missing")]
    MissingParameter(&'static str),
    /// `fd:NAME` names no descriptor of this monitor.
    #[error("File descriptor named '{0}' has not been found")]
    FdNotFound(String),
    /// The output file could not be opened.
    #[error("Could not open '{}': {}", path.display(), strerror(*errno))]
    Open {
        /// The file.
        path: PathBuf,
        /// errno.
        errno: i32,
    },
    /// A malformed argument (`protocol`, `begin`, `length`).
    #[error("Invalid parameter '{0}'")]
    InvalidParameter(&'static str),
    /// The filter leaves no RAM.
    #[error("dump: no guest memory to dump")]
    NoMemory,
    /// A vCPU did not give its registers.
    #[error("dump: cannot read the registers of vCPU {0}")]
    CpuState(u32),
    /// The guest's page tables hold more entries than a dump walks.
    #[error("dump: the guest page tables have more than {0} entries to walk")]
    TooManyMappings(u64),
    /// The process that writes the dump could not be started.
    #[error("dump: cannot start the dump writer: {}", strerror(*.0))]
    Fork(i32),
    /// Writing the dump failed: `what` went wrong, with errno when there is one.
    #[error("{what}{}", errno.map(|e| format!(": {}", strerror(e))).unwrap_or_default())]
    Write {
        /// QEMU's words for the part that failed.
        what: &'static str,
        /// errno.
        errno: Option<i32>,
    },
    /// The dump writer died without saying why.
    #[error("dump: the dump writer was killed by signal {0}")]
    WriterKilled(i32),
    /// `memsave`: no such vCPU.
    #[error("Parameter 'cpu-index' expects a CPU number")]
    CpuIndex,
    /// A negative `size` (QEMU crashes; petrel refuses before touching the file).
    #[error("Parameter 'size' expects a non-negative number")]
    NegativeSize,
    /// `memsave`: a page of the range is not mapped, or not RAM.
    #[error("Invalid addr 0x{addr:016x}/size {size} specified")]
    InvalidAddr {
        /// The address asked for.
        addr: u64,
        /// The size asked for.
        size: i64,
    },
    /// `memsave`/`pmemsave`: writing the file failed.
    #[error("An IO error has occurred")]
    Io,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_qemu_prints_them() {
        let open = DumpError::Open {
            path: "/nonexistent/x".into(),
            errno: libc::ENOENT,
        };
        assert_eq!(
            open.to_string(),
            "Could not open '/nonexistent/x': No such file or directory"
        );
        let write = DumpError::Write {
            what: "dump: failed to save memory",
            errno: Some(libc::ENOSPC),
        };
        assert_eq!(
            write.to_string(),
            "dump: failed to save memory: No space left on device"
        );
        let addr = DumpError::InvalidAddr {
            addr: 0xffff000,
            size: 8192,
        };
        assert_eq!(
            addr.to_string(),
            "Invalid addr 0x000000000ffff000/size 8192 specified"
        );
    }
}
