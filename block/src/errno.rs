//! The Linux errno values the block layer reports, and their C library texts.
//!
//! QEMU reports errors as negative errnos and words them with `strerror`; petrel keeps
//! the same numbers so `BLOCK_IO_ERROR` and error messages read the same.

use std::io;

/// Operation not permitted.
pub const EPERM: i32 = 1;
/// Input/output error.
pub const EIO: i32 = 5;
/// Out of memory.
pub const ENOMEM: i32 = 12;
/// Permission denied.
pub const EACCES: i32 = 13;
/// Invalid argument.
pub const EINVAL: i32 = 22;
/// File too large.
pub const EFBIG: i32 = 27;
/// No space left on device.
pub const ENOSPC: i32 = 28;
/// Read-only file system.
pub const EROFS: i32 = 30;
/// Operation not supported.
pub const EOPNOTSUPP: i32 = 95;
/// Disk quota exceeded.
pub const EDQUOT: i32 = 122;
/// No medium found.
pub const ENOMEDIUM: i32 = 123;

/// The errno `e` stands for: its own, or one matching its kind when it has none (imago
/// re-wraps some host errors), else `EIO`.
pub fn of_io(e: &io::Error) -> i32 {
    if let Some(errno) = e.raw_os_error() {
        return errno;
    }
    match e.kind() {
        io::ErrorKind::StorageFull => ENOSPC,
        io::ErrorKind::QuotaExceeded => EDQUOT,
        io::ErrorKind::PermissionDenied => EACCES,
        io::ErrorKind::ReadOnlyFilesystem => EROFS,
        io::ErrorKind::FileTooLarge => EFBIG,
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::Unsupported => EOPNOTSUPP,
        io::ErrorKind::OutOfMemory => ENOMEM,
        _ => EIO,
    }
}

/// The C library's text for `errno`, e.g. "No space left on device".
pub fn strerror(errno: i32) -> String {
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
    fn texts_and_kinds() {
        assert_eq!(strerror(ENOSPC), "No space left on device");
        assert_eq!(strerror(EINVAL), "Invalid argument");
        assert_eq!(strerror(ENOMEDIUM), "No medium found");
        assert_eq!(of_io(&io::Error::from_raw_os_error(EDQUOT)), EDQUOT);
        let wrapped = io::Error::new(io::ErrorKind::StorageFull, "allocating a cluster");
        assert_eq!(of_io(&wrapped), ENOSPC);
        assert_eq!(of_io(&io::Error::other("corrupt L2 table")), EIO);
    }
}
