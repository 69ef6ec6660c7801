//! Backend errors and how QEMU's error policies and `BLOCK_IO_ERROR` see them.

use std::io;

use crate::node::NodeError;

/// Errors of backend I/O.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend is read-only.
    #[error("Block node is read-only")]
    ReadOnly,
    /// The request reaches past the end of the disk.
    #[error("Request {offset}+{len} is beyond the end of the disk ({size})")]
    OutOfRange {
        /// Request start.
        offset: u64,
        /// Request length.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// A smaller size was asked of `resize`.
    #[error("Cannot shrink the disk from {size} to {new_size}")]
    Shrink {
        /// Current size.
        size: u64,
        /// Requested size.
        new_size: u64,
    },
    /// The node cannot serve the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The image driver failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// `ENOSPC`, the error `werror=enospc` stops on.
const ENOSPC: i32 = 28;
/// `EDQUOT`, which QEMU's error policies do not count as "no space".
const EDQUOT: i32 = 122;

/// The errno a host error stands for: its own, or one matching its kind when imago
/// re-wrapped it without one.
fn io_errno(e: &io::Error) -> i32 {
    if let Some(errno) = e.raw_os_error() {
        return errno;
    }
    match e.kind() {
        io::ErrorKind::StorageFull => ENOSPC,
        io::ErrorKind::QuotaExceeded => EDQUOT,
        io::ErrorKind::PermissionDenied => 13,
        io::ErrorKind::ReadOnlyFilesystem => 30,
        io::ErrorKind::FileTooLarge => 27,
        io::ErrorKind::InvalidInput => 22,
        io::ErrorKind::Unsupported => 95,
        io::ErrorKind::OutOfMemory => 12,
        _ => 5,
    }
}

impl BackendError {
    /// The (positive) errno QEMU would see for this error: the host's for I/O errors,
    /// `EPERM` for a write to a read-only node, `EIO` for a request beyond the end,
    /// `ENOMEDIUM` for a node without an image.
    pub fn errno(&self) -> i32 {
        match self {
            BackendError::ReadOnly => 1,
            BackendError::OutOfRange { .. } => 5,
            BackendError::Shrink { .. } => 22,
            BackendError::Node(NodeError::NoImage(_)) => 123,
            BackendError::Node(NodeError::Shared(_)) => 1,
            BackendError::Node(_) => 5,
            BackendError::Io(e) => io_errno(e),
        }
    }

    /// Whether the host ran out of space (`ENOSPC`): what `werror=enospc` stops on and
    /// `BLOCK_IO_ERROR`'s `nospace` says.
    pub fn is_no_space(&self) -> bool {
        self.errno() == ENOSPC
    }

    /// `BLOCK_IO_ERROR`'s `reason`: `strerror` of the errno, e.g. "No space left on device".
    pub fn reason(&self) -> String {
        strerror(self.errno())
    }
}

/// The C library's text for `errno`.
pub(crate) fn strerror(errno: i32) -> String {
    // std formats OS errors as "<strerror text> (os error N)"; keep the text.
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_strerror_texts() {
        let nospace = BackendError::Io(io::Error::from_raw_os_error(ENOSPC));
        assert!(nospace.is_no_space());
        assert_eq!(nospace.reason(), "No space left on device");
        // imago may re-wrap an error: the kind still tells.
        let wrapped = BackendError::Io(io::Error::new(io::ErrorKind::StorageFull, "allocating"));
        assert!(wrapped.is_no_space());
        assert_eq!(wrapped.errno(), ENOSPC);
        let quota = BackendError::Io(io::Error::from_raw_os_error(EDQUOT));
        assert!(!quota.is_no_space());
        assert_eq!(quota.reason(), "Disk quota exceeded");
        assert_eq!(BackendError::ReadOnly.reason(), "Operation not permitted");
        let eio = BackendError::OutOfRange {
            offset: 0,
            len: 1,
            size: 0,
        };
        assert_eq!(
            (eio.errno(), eio.reason().as_str()),
            (5, "Input/output error")
        );
        let other = BackendError::Io(io::Error::other("corrupt L2 table"));
        assert_eq!(other.reason(), "Input/output error");
        assert!(!other.is_no_space());
    }
}
