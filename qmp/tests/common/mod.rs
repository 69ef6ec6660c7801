//! Shared by the server tests: test commands, a QMP client over real sockets, and a server
//! builder.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use petrel_qmp::dispatch::Reply;
use petrel_qmp::schema::{Command, Empty};
use petrel_qmp::server::{Server, ServerConfig, ServerHandle};
use petrel_qmp::{CallContext, Registry};
use serde::Deserialize;
use serde_json::{json, Value};

/// `x-test-echo`: returns its `text`.
pub struct Echo;
#[derive(Deserialize)]
pub struct EchoArgs {
    pub text: String,
}
impl Command for Echo {
    const NAME: &'static str = "x-test-echo";
    type Args = EchoArgs;
    type Returns = String;
}

/// `x-test-slow`: answers `{}` from another thread, after `ms` milliseconds or, with `gate`,
/// once the test opens that gate (see [`open_gate`]; at most 10 s).
pub struct Slow;
#[derive(Deserialize)]
pub struct SlowArgs {
    #[serde(default)]
    pub ms: u64,
    pub gate: Option<String>,
}

static GATES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static GATE_OPENED: Condvar = Condvar::new();

/// Lets the `x-test-slow` commands waiting on `name` answer.
pub fn open_gate(name: &str) {
    GATES.lock().unwrap().insert(name.to_string());
    GATE_OPENED.notify_all();
}

fn wait_gate(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = GATES.lock().unwrap();
    while !open.contains(name) && Instant::now() < deadline {
        open = GATE_OPENED
            .wait_timeout(open, Duration::from_millis(100))
            .unwrap()
            .0;
    }
}
impl Command for Slow {
    const NAME: &'static str = "x-test-slow";
    type Args = SlowArgs;
    type Returns = Empty;
}

/// `x-test-ping`: may run out of band; returns "pong".
pub struct Ping;
impl Command for Ping {
    const NAME: &'static str = "x-test-ping";
    const ALLOW_OOB: bool = true;
    type Args = Empty;
    type Returns = String;
}

/// `x-test-fdwrite`: writes `text` into the monitor's descriptor `fdname`.
pub struct FdWrite;
#[derive(Deserialize)]
pub struct FdWriteArgs {
    pub fdname: String,
    pub text: String,
}
impl Command for FdWrite {
    const NAME: &'static str = "x-test-fdwrite";
    type Args = FdWriteArgs;
    type Returns = Empty;
}

/// A registry with the test commands.
pub fn test_registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Echo, _>(|_ctx: CallContext, args: EchoArgs, reply: Reply<String>| {
        reply.ok(args.text)
    });
    r.register::<Slow, _>(|_ctx, args: SlowArgs, reply: Reply<Empty>| {
        std::thread::spawn(move || {
            match &args.gate {
                Some(g) => wait_gate(g),
                None => std::thread::sleep(Duration::from_millis(args.ms)),
            }
            reply.ok(Empty {});
        });
    });
    r.register::<Ping, _>(|_ctx, _args, reply: Reply<String>| reply.ok("pong".into()));
    r.register::<FdWrite, _>(|ctx, args: FdWriteArgs, reply: Reply<Empty>| {
        let fds = ctx.fds.lock().unwrap();
        let Some(fd) = fds.get(&args.fdname) else {
            return reply.err(petrel_qmp::QmpError::generic("no such fd"));
        };
        let mut f = std::fs::File::from(fd.try_clone().unwrap());
        f.write_all(args.text.as_bytes()).unwrap();
        reply.ok(Empty {});
    });
    r
}

pub fn config() -> ServerConfig {
    ServerConfig {
        package: "petrel-test".into(),
        ..ServerConfig::default()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh socket path.
pub fn sock_path(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("petrel-qmp-{}-{name}-{n}.sock", std::process::id()))
}

/// A server on one unix listener with the test commands, started.
pub fn unix_server(config: ServerConfig) -> (ServerHandle, PathBuf) {
    let path = sock_path("mon");
    let (mut server, handle) = Server::new(test_registry(), config).expect("server");
    server.add_unix_listener(&path, false).unwrap();
    server.start().unwrap();
    (handle, path)
}

/// A QMP client on a byte stream.
pub struct Client<S: Read + Write + AsRawFd> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<UnixStream> {
    pub fn connect(path: &std::path::Path) -> Client<UnixStream> {
        let stream = UnixStream::connect(path).unwrap();
        Client::new(stream)
    }
}

impl<S: Read + Write + AsRawFd> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next line, CRLF-terminated, as raw text (checked to be ASCII).
    pub fn recv_line_timeout(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                assert!(line.is_ascii(), "non-ASCII output: {line:?}");
                assert!(
                    !line[..line.len() - 2].contains(&b'\n'),
                    "a message spans lines: {line:?}"
                );
                return Some(String::from_utf8(line).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            set_timeout(self.stream.as_raw_fd(), left);
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn recv_line(&mut self) -> String {
        self.recv_line_timeout(Duration::from_secs(10))
            .expect("no message from the server")
    }

    pub fn recv(&mut self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    pub fn try_recv(&mut self, timeout: Duration) -> Option<Value> {
        self.recv_line_timeout(timeout)
            .map(|l| serde_json::from_str(&l).unwrap())
    }

    /// The next message that is not an event.
    pub fn recv_reply(&mut self) -> Value {
        loop {
            let v = self.recv();
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    pub fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).unwrap();
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).unwrap();
    }

    /// Sends `s` with `fds` attached (SCM_RIGHTS).
    pub fn send_with_fds(&mut self, s: &[u8], fds: &[RawFd]) {
        send_fds(self.stream.as_raw_fd(), s, fds);
    }

    pub fn cmd(&mut self, s: &str) -> Value {
        self.send(s);
        self.recv_reply()
    }

    pub fn execute(&mut self, name: &str, args: Value) -> Value {
        self.cmd(&json!({"execute": name, "arguments": args}).to_string())
    }

    /// Reads the greeting and negotiates (with `oob` when offered).
    pub fn negotiate(&mut self) -> Value {
        let greeting = self.recv();
        let offered = greeting["QMP"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("oob"));
        let args = if offered {
            json!({"enable": ["oob"]})
        } else {
            json!({})
        };
        let r = self.execute("qmp_capabilities", args);
        assert_eq!(r, json!({"return": {}}));
        greeting
    }
}

fn set_timeout(fd: RawFd, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros().max(1) as libc::suseconds_t,
    };
    // SAFETY: `tv` is valid for reads of its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(r, 0);
}

/// sendmsg() with SCM_RIGHTS.
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) {
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of_val(fds) as u32) } as usize;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` has a control buffer large enough for one header.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    // SAFETY: `cmsg` points into `cmsg_buf`.
    let hdr = unsafe { &mut *cmsg };
    hdr.cmsg_level = libc::SOL_SOCKET;
    hdr.cmsg_type = libc::SCM_RIGHTS;
    // SAFETY: CMSG_LEN only computes a size.
    hdr.cmsg_len = unsafe { libc::CMSG_LEN(size_of_val(fds) as u32) } as _;
    // SAFETY: the data area of the header has room for `fds`.
    let data_ptr = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: inside the data area, as above.
        unsafe { data_ptr.wrapping_add(i).write_unaligned(*fd) };
    }
    // SAFETY: `msg` points at live buffers.
    let r = unsafe { libc::sendmsg(sock, &raw const msg, 0) };
    assert_eq!(
        r as usize,
        data.len(),
        "sendmsg: {}",
        std::io::Error::last_os_error()
    );
}

/// A pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (OwnedFd::from(r), OwnedFd::from(w))
}

/// Reads exactly `n` bytes from `fd`.
pub fn read_fd(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).unwrap();
    buf
}
