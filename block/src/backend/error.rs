//! Backend errors and how QEMU's error policies and `BLOCK_IO_ERROR` see them.

use std::io;

use crate::errno::{self, EIO, ENOMEDIUM, ENOSPC, EOPNOTSUPP, EPERM};
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
    /// `resize` of a qcow2 version 2 image with internal snapshots, whose snapshot table
    /// does not record the size each snapshot had.
    #[error("Can't resize a v2 image which has snapshots")]
    V2Snapshots,
    /// The node cannot serve the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The image driver failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl BackendError {
    /// The (positive) errno QEMU would see for this error: the host's for I/O errors,
    /// `EPERM` for a write to a read-only node, `EIO` for a request beyond the end,
    /// `ENOMEDIUM` for a node without an image.
    pub fn errno(&self) -> i32 {
        match self {
            BackendError::ReadOnly => EPERM,
            BackendError::OutOfRange { .. } => EIO,
            BackendError::V2Snapshots => EOPNOTSUPP,
            BackendError::Node(NodeError::NoImage(_)) => ENOMEDIUM,
            BackendError::Node(NodeError::Shared(_)) => EPERM,
            BackendError::Node(_) => EIO,
            BackendError::Io(e) => errno::of_io(e),
        }
    }

    /// Whether the host ran out of space (`ENOSPC`): what `werror=enospc` stops on and
    /// `BLOCK_IO_ERROR`'s `nospace` says.
    pub fn is_no_space(&self) -> bool {
        self.errno() == ENOSPC
    }

    /// `BLOCK_IO_ERROR`'s `reason`: `strerror` of the errno, e.g. "No space left on device".
    pub fn reason(&self) -> String {
        errno::strerror(self.errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::EDQUOT;

    #[test]
    fn reasons_are_strerror_texts() {
        let nospace = BackendError::Io(io::Error::from_raw_os_error(ENOSPC));
        assert!(nospace.is_no_space());
        assert_eq!(nospace.reason(), "No space left on device");
        // imago may re-wrap an error: the kind still tells.
        let wrapped = BackendError::Io(io::Error::new(io::ErrorKind::StorageFull, "allocating"));
        assert!(wrapped.is_no_space());
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
