//! Helpers shared by the backend tests: waiting on a backend's `rx_fd`, receiving the frame
//! a test waits for, and running a test body in a network namespace of its own.
// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

pub mod frames;

use std::io::IoSlice;
use std::os::fd::RawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use petrel_net::socket::NET_BUFSIZE;
use petrel_net::{NetBackend, SendStatus, TxReady};

/// Longest frame the tests receive: QEMU's `NET_BUFSIZE`.
pub const BUF_LEN: usize = NET_BUFSIZE;

/// How long a backend may take to become ready again.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Waits until `fd` has one of `events` or `timeout` passes; true if it has.
fn wait_for(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
    ret > 0
}

/// Waits until `fd` is readable or `timeout` passes; true if readable.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    wait_for(fd, libc::POLLIN, timeout)
}

/// Waits until `fd` is writable or `timeout` passes; true if writable.
pub fn wait_writable(fd: RawFd, timeout: Duration) -> bool {
    wait_for(fd, libc::POLLOUT, timeout)
}

/// Waits for what `backend.tx_ready()` names, or `timeout`; true if it happened.
pub fn wait_tx_ready(backend: &dyn NetBackend, timeout: Duration) -> bool {
    match backend
        .tx_ready()
        .expect("a backend that refused names its readiness")
    {
        TxReady::Readable(fd) => wait_readable(fd, timeout),
        TxReady::Writable(fd) => wait_writable(fd, timeout),
    }
}

/// Offers the frame made of `parts` until the backend takes it, waiting on its readiness
/// in between, as the NIC does; returns how many times it was refused.
pub fn send_patiently(backend: &mut dyn NetBackend, parts: &[IoSlice<'_>]) -> usize {
    let mut refused = 0;
    while backend.try_send(parts).expect("try_send") == SendStatus::Busy {
        refused += 1;
        assert!(
            wait_tx_ready(backend, SEND_WAIT),
            "the backend never became ready"
        );
    }
    refused
}

/// Receives frames until `want` accepts one (returning what it returns) or `timeout`
/// passes. Other frames are passed to `other`.
pub fn recv_until<T>(
    backend: &mut dyn NetBackend,
    timeout: Duration,
    mut want: impl FnMut(&[u8]) -> Option<T>,
    mut other: impl FnMut(&mut dyn NetBackend, &[u8]),
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if !wait_readable(backend.rx_fd(), left.min(Duration::from_millis(50))) {
            continue;
        }
        while let Some(len) = backend.recv(&mut buf).expect("recv") {
            if let Some(found) = want(&buf[..len]) {
                return Some(found);
            }
            other(backend, &buf[..len]);
        }
    }
}

/// Receives the next frame, waiting up to `timeout`.
pub fn recv_one(backend: &mut dyn NetBackend, timeout: Duration) -> Option<Vec<u8>> {
    recv_until(backend, timeout, |f| Some(f.to_vec()), |_, _| {})
}

/// Sends one frame given as a single slice, waiting while the backend refuses it.
pub fn send(backend: &mut dyn NetBackend, frame: &[u8]) {
    send_patiently(backend, &[IoSlice::new(frame)]);
}

/// Runs `cmd args` and panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Says that `test` cannot run here and why: it is skipped, unless `PETREL_REQUIRE_ALL` is
/// set (tests/run.sh, so CI, sets it), where a test that cannot run fails.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("PETREL_REQUIRE_ALL").is_some() {
        panic!("{test}: cannot run: {why} (PETREL_REQUIRE_ALL is set)");
    }
    eprintln!("{test}: skipped: {why}");
}

/// Whether the tests can create interfaces (root); when not, [`skip`]s the caller.
pub fn can_create_interfaces(test: &str) -> bool {
    // SAFETY: geteuid() has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(
            test,
            "creating tap interfaces and network namespaces needs root",
        );
    }
    root
}

/// Runs `body` on a thread that first moves into a new network namespace (unshare only
/// moves the calling thread; the commands it starts inherit the namespace). The loopback
/// interface is brought up.
pub fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare() only changes this thread's namespaces.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            ret,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
