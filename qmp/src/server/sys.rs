//! The few socket system calls the server needs beyond what std offers: receiving file
//! descriptors (SCM_RIGHTS), sending without SIGPIPE, and inspecting inherited sockets.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// At most this many descriptors are taken from one message (QEMU's TCP_MAX_FDS).
pub(crate) const MAX_FDS_PER_READ: usize = 16;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Sets O_NONBLOCK on `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor the caller keeps open; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL with an integer argument on a descriptor the caller keeps open.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// Sets FD_CLOEXEC on `fd` (an inherited descriptor should not leak into children).
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD on a descriptor the caller keeps open.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    // SAFETY: F_SETFD with an integer argument on a descriptor the caller keeps open.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(())
}

fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    })?;
    Ok(value)
}

/// The socket type (SOCK_STREAM, ...) of `fd`, or `None` if it is not a socket.
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the socket `fd` is listening (SO_ACCEPTCONN).
pub(crate) fn is_listening(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0)
}

/// Turns on TCP_NODELAY where it applies; errors (a unix socket) are ignored.
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>) {
    let one: libc::c_int = 1;
    // SAFETY: `one` is valid for reads of the size given.
    let _ = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Accepts a connection, non-blocking and close-on-exec.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: null address pointers are allowed; the flags are valid.
        let r = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        match cvt(r) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(new) => return Ok(unsafe { OwnedFd::from_raw_fd(new) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads from a socket, collecting the descriptors that came with the data.
pub(crate) fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // Aligned room for one SCM_RIGHTS message of MAX_FDS_PER_READ descriptors.
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(space <= size_of_val(&cmsg_buf));
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at a valid iovec over `buf` and at `cmsg_buf`, both live and
        // writable for the lengths given.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        match cvt_size(r) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: `msg` was filled in by recvmsg; the CMSG macros walk its control buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a valid header inside the control buffer, per CMSG_FIRSTHDR/NXTHDR.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN only computes a size.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (hdr.cmsg_len as usize).saturating_sub(header_len) / size_of::<RawFd>();
            // SAFETY: the data of an SCM_RIGHTS message is `count` descriptors.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                let item = data.wrapping_add(i);
                // SAFETY: `i < count`: `item` is inside the message; it may be unaligned.
                let raw = unsafe { item.read_unaligned() };
                // SAFETY: the kernel installed this descriptor for us; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `cmsg` are valid, as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    Ok(n)
}

/// Writes to a socket without raising SIGPIPE.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length.
        let r = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match cvt_size(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A blocking read from a raw descriptor (the server's standard input).
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_size(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Blocks until `fd` is readable (or hung up).
pub(crate) fn wait_readable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; an error or EINTR just means the caller reads again.
    unsafe { libc::poll(&raw mut pfd, 1, -1) };
}
