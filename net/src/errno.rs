//! System errors worded as QEMU's `error_setg_errno` words them: the message, a colon and
//! the C library's `strerror` text, without Rust's " (os error N)" suffix.

use std::io;

/// The C library's text for a system error, e.g. "Bad file descriptor"; errors that carry
/// no errno keep their own text.
pub fn text(err: &io::Error) -> String {
    let full = match err.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => return err.to_string(),
    };
    match full.rfind(" (os error ") {
        Some(cut) => full[..cut].to_owned(),
        None => full,
    }
}

/// The last system error of this thread.
pub fn last() -> io::Error {
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_text_without_suffix() {
        assert_eq!(
            text(&io::Error::from_raw_os_error(libc::EBADF)),
            "Bad file descriptor"
        );
        assert_eq!(
            text(&io::Error::from_raw_os_error(libc::ENOTTY)),
            "Inappropriate ioctl for device"
        );
        assert_eq!(text(&io::Error::other("plain")), "plain");
    }
}
