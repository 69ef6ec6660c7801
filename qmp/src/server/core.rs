//! The `qmp` thread: one mio loop over every listener and connection, and the queue through
//! which replies, events and requests from other threads reach it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use super::{sys, ServerConfig};
use crate::dispatch::{CallContext, FdStore, Registry, Responder};
use crate::error::{ErrorClass, QmpError};
use crate::wire::{self, Parser};

pub(super) const WAKER: Token = Token(0);

/// In-band requests that may wait behind the one running, with `oob` (QEMU's
/// QMP_REQ_QUEUE_LEN_MAX).
const QUEUE_MAX: usize = 8;
/// Reads of one connection per turn of the loop, so that one busy client does not starve
/// the others.
const READS_PER_TURN: usize = 16;
const READ_SIZE: usize = 64 * 1024;
/// How long the server keeps polling without sleeping after serving a monitor.
const BUSY_POLL: Duration = Duration::from_micros(200);
/// Descriptors a connection may hold that no request has taken yet.
const MAX_PENDING_FDS: usize = 64;
/// How long a rate-limited event blocks the next one of its kind.
const THROTTLE: Duration = Duration::from_secs(1);

/// What other threads send the `qmp` thread.
pub(super) enum Msg {
    /// A command finished.
    Done {
        monitor: u64,
        seq: u64,
        oob: bool,
        id: Option<Value>,
        result: Result<Value, QmpError>,
    },
    /// An event, encoded; `throttle` is its rate-limiting key if it has one.
    Event {
        name: String,
        throttle: Option<Option<String>>,
        bytes: Vec<u8>,
    },
    /// `add_client`: a new monitor on this connected socket.
    AddClient(OwnedFd),
    /// Bytes read from standard input by the stdin thread.
    StdinData(u64, Vec<u8>),
    /// End of standard input (or a read error).
    StdinEof(u64),
    /// Writing to standard output failed.
    StdoutFailed(u64),
    Shutdown,
}

/// Where a monitor is in the protocol, as the built-in commands see it.
#[derive(Debug, Default)]
pub(super) struct MonitorState {
    pub negotiated: bool,
    pub oob_offered: bool,
    /// Set by a successful `qmp_capabilities`: whether it enabled `oob`. Applied by the loop
    /// when it writes the reply.
    pub accepted: Option<bool>,
}

#[derive(Default)]
pub(super) struct Waiting {
    pub pending: usize,
    pub stopped: bool,
}

/// What the server thread shares with handlers and handles.
pub(super) struct Shared {
    pub inbox: Mutex<VecDeque<Msg>>,
    pub waker: mio::Waker,
    pub monitors: Mutex<HashMap<u64, MonitorState>>,
    pub config: ServerConfig,
    pub waiting: Mutex<Waiting>,
    pub waiting_cv: Condvar,
    pub thread: Mutex<Option<JoinHandle<()>>>,
    pub command_names: OnceLock<Vec<&'static str>>,
    pub schema: OnceLock<Value>,
    /// The server thread, once it runs.
    pub server_thread: OnceLock<std::thread::ThreadId>,
}

impl Shared {
    pub fn push(&self, msg: Msg) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(msg);
        // The server thread drains the inbox at the end of every loop turn, so a message it
        // pushes itself (a handler answering at once) needs no wake-up: that saves a syscall
        // and a loop turn per synchronous command.
        if self.server_thread.get() == Some(&std::thread::current().id()) {
            return;
        }
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the QMP thread: {e}");
        }
    }

    fn monitors(&self) -> std::sync::MutexGuard<'_, HashMap<u64, MonitorState>> {
        self.monitors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Monitor ids are unique for the life of the process.
static NEXT_MONITOR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The rate-limiting key of an event: `None` if it is not limited, else the data member that
/// tells instances apart, if any (QEMU's monitor_qapi_event_conf and its hash).
pub(super) fn throttle_key(name: &str, data: Option<&Value>) -> Option<Option<String>> {
    let member = |m: &str| {
        data.and_then(|d| d.get(m))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match name {
        "RTC_CHANGE" | "WATCHDOG" | "BALLOON_CHANGE" | "QUORUM_FAILURE" => Some(None),
        "QUORUM_REPORT_BAD" => Some(member("node-name")),
        "VSERPORT_CHANGE" => Some(member("id")),
        "MEMORY_DEVICE_SIZE_CHANGE" => Some(member("qom-path")),
        _ => None,
    }
}

struct Throttle {
    until: Instant,
    pending: Option<Vec<u8>>,
}

struct Listener {
    fd: OwnedFd,
    /// A unix socket file petrel created: path, device and inode.
    path: Option<(PathBuf, u64, u64)>,
    wait: bool,
    active: Option<Token>,
}

enum Io {
    Socket(OwnedFd),
    Stdio(StdioIo),
}

struct StdioIo {
    out: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// Tells the stdin thread it may read more.
    more: mpsc::Sender<()>,
    /// The stdin thread waits for `more`.
    reader_waiting: bool,
}

enum Pending {
    Request(Value, Vec<OwnedFd>),
    Error(String),
}

struct Conn {
    monitor: u64,
    io: Io,
    listener: Option<Token>,
    parser: Parser,
    inbuf: Vec<u8>,
    inpos: usize,
    /// Descriptors received, with the stream offset of the read that brought them.
    fd_batches: VecDeque<(u64, Vec<OwnedFd>)>,
    fds: FdStore,
    negotiated: bool,
    oob_enabled: bool,
    queue: VecDeque<Pending>,
    inflight: Option<u64>,
    inflight_is_caps: bool,
    next_seq: u64,
    out: Vec<u8>,
    out_pos: usize,
    /// The client sent end-of-input.
    eof: bool,
    /// The socket may have data to read.
    want_read: bool,
}

impl Conn {
    fn suspended(&self) -> bool {
        if self.oob_enabled {
            self.queue.len() >= QUEUE_MAX
        } else {
            !self.queue.is_empty() || self.inflight.is_some()
        }
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_none() && self.inpos >= self.inbuf.len()
    }

    fn take_fds(&mut self, start: u64) -> Vec<OwnedFd> {
        let mut fds = Vec::new();
        while self
            .fd_batches
            .front()
            .is_some_and(|(off, _)| *off <= start)
        {
            if let Some((_, batch)) = self.fd_batches.pop_front() {
                fds.extend(batch);
            }
        }
        fds
    }
}

pub(super) struct Core {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    poll: Poll,
    next_token: usize,
    listeners: HashMap<Token, Listener>,
    conns: HashMap<Token, Conn>,
    by_monitor: HashMap<u64, Token>,
    throttles: HashMap<(String, Option<String>), Throttle>,
    /// Connections that still have input to read after their turn.
    again: Vec<Token>,
    stdio: bool,
    stopping: bool,
    /// One read buffer for every socket, allocated once: zeroing 64 KiB per read was a
    /// measurable part of a command's round trip.
    read_buf: Box<[u8]>,
}

impl Core {
    pub fn new(registry: Arc<Registry>, shared: Arc<Shared>, poll: Poll) -> Core {
        Core {
            shared,
            registry,
            poll,
            next_token: 1,
            read_buf: vec![0u8; READ_SIZE].into_boxed_slice(),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            by_monitor: HashMap::new(),
            throttles: HashMap::new(),
            again: Vec::new(),
            stdio: false,
            stopping: false,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    pub fn add_listener(
        &mut self,
        fd: OwnedFd,
        path: Option<(PathBuf, u64, u64)>,
        wait: bool,
        desc: String,
    ) -> io::Result<()> {
        sys::set_nonblocking(fd.as_fd())?;
        let token = self.token();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        if wait {
            log::info!("QMP waiting for connection on: {desc}");
            self.shared
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending += 1;
        }
        self.listeners.insert(
            token,
            Listener {
                fd,
                path,
                wait,
                active: None,
            },
        );
        Ok(())
    }

    pub fn add_connection(&mut self, fd: OwnedFd) -> io::Result<()> {
        sys::set_nonblocking(fd.as_fd())?;
        sys::set_nodelay(fd.as_fd());
        self.new_conn(Io::Socket(fd), None, true).map(|_| ())
    }

    pub fn add_stdio(&mut self) -> io::Result<()> {
        if self.stdio {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "stdio is already a monitor",
            ));
        }
        self.stdio = true;
        Ok(())
    }

    /// A new monitor: registered, greeted, and its input read if any is there.
    fn new_conn(
        &mut self,
        io: Io,
        listener: Option<Token>,
        oob_offered: bool,
    ) -> io::Result<Token> {
        let token = self.token();
        if let Io::Socket(fd) = &io {
            self.poll.registry().register(
                &mut SourceFd(&fd.as_raw_fd()),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        let monitor = NEXT_MONITOR.fetch_add(1, Ordering::Relaxed);
        self.shared.monitors().insert(
            monitor,
            MonitorState {
                oob_offered,
                ..Default::default()
            },
        );
        self.by_monitor.insert(monitor, token);
        self.conns.insert(
            token,
            Conn {
                monitor,
                io,
                listener,
                parser: Parser::new(self.shared.config.limits),
                inbuf: Vec::new(),
                inpos: 0,
                fd_batches: VecDeque::new(),
                fds: FdStore::default(),
                negotiated: false,
                oob_enabled: false,
                queue: VecDeque::new(),
                inflight: None,
                inflight_is_caps: false,
                next_seq: 0,
                out: Vec::new(),
                out_pos: 0,
                eof: false,
                want_read: true,
            },
        );
        log::debug!("QMP monitor {monitor} connected");
        let c = &self.shared.config;
        let caps: &[&str] = if oob_offered { &["oob"] } else { &[] };
        let greeting = wire::greeting(c.major, c.minor, c.micro, &c.package, caps);
        self.write(token, &greeting);
        Ok(token)
    }

    fn start_stdio(&mut self) {
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
        let (more_tx, more_rx) = mpsc::channel::<()>();
        let queued = Arc::new(AtomicUsize::new(0));
        let io = Io::Stdio(StdioIo {
            out: out_tx,
            queued: queued.clone(),
            more: more_tx,
            reader_waiting: false,
        });
        let token = match self.new_conn(io, None, false) {
            Ok(t) => t,
            Err(e) => return log::error!("QMP on stdio: {e}"),
        };
        let monitor = self.conns[&token].monitor;
        let shared = self.shared.clone();
        let writer = std::thread::Builder::new()
            .name("qmp-stdout".into())
            .spawn(move || {
                for bytes in out_rx {
                    let mut stdout = io::stdout().lock();
                    if stdout
                        .write_all(&bytes)
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        shared.push(Msg::StdoutFailed(monitor));
                        return;
                    }
                    queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                }
            });
        let shared = self.shared.clone();
        let reader = std::thread::Builder::new()
            .name("qmp-stdin".into())
            .spawn(move || {
                let mut buf = vec![0u8; READ_SIZE];
                loop {
                    match sys::read(0, &mut buf) {
                        Ok(n) if n > 0 => shared.push(Msg::StdinData(monitor, buf[..n].to_vec())),
                        // Someone else made the shared file description non-blocking.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            sys::wait_readable(0);
                            continue;
                        }
                        _ => return shared.push(Msg::StdinEof(monitor)),
                    }
                    if more_rx.recv().is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = writer.and(reader) {
            log::error!("QMP on stdio: cannot start its threads: {e}");
            self.close(token);
        }
    }

    pub fn run(&mut self) {
        let _ = self.shared.server_thread.set(std::thread::current().id());
        if self.stdio {
            self.start_stdio();
        }
        let mut events = Events::with_capacity(256);
        // After a monitor was served, poll without sleeping for a short while: a client that
        // sends its next command right after reading a reply then finds the server awake,
        // which saves a wake-up per round trip. Idle monitors cost nothing.
        let mut busy_until: Option<Instant> = None;
        while !self.stopping {
            let spinning = busy_until.is_some_and(|t| Instant::now() < t);
            let timeout = if !self.again.is_empty() || spinning {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("QMP poll failed: {e}");
                break;
            }
            if events.iter().any(|ev| ev.token() != WAKER) {
                busy_until = Some(Instant::now() + BUSY_POLL);
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == WAKER {
                    continue;
                }
                if self.listeners.contains_key(&token) {
                    self.accept(token);
                    continue;
                }
                if ev.is_writable() {
                    self.flush(token);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.want_read = true;
                    }
                    self.service(token);
                }
            }
            for token in std::mem::take(&mut self.again) {
                self.service(token);
            }
            self.drain_inbox();
            self.run_throttles();
        }
        self.finish();
    }

    fn drain_inbox(&mut self) {
        loop {
            let msgs =
                std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()));
            if msgs.is_empty() {
                return;
            }
            for msg in msgs {
                self.handle_msg(msg);
            }
        }
    }

    fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Done {
                monitor,
                seq,
                oob,
                id,
                result,
            } => self.done(monitor, seq, oob, id, result),
            Msg::Event {
                name,
                throttle,
                bytes,
            } => self.event(name, throttle, bytes),
            Msg::AddClient(fd) => {
                let r = sys::set_nonblocking(fd.as_fd())
                    .and_then(|()| self.new_conn(Io::Socket(fd), None, true).map(|_| ()));
                if let Err(e) = r {
                    log::warn!("QMP add_client: {e}");
                }
            }
            Msg::StdinData(monitor, data) => {
                if let Some(&token) = self.by_monitor.get(&monitor) {
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.inbuf.extend_from_slice(&data);
                        if let Io::Stdio(s) = &mut c.io {
                            s.reader_waiting = true;
                        }
                    }
                    self.service(token);
                }
            }
            Msg::StdinEof(monitor) => {
                if let Some(&token) = self.by_monitor.get(&monitor) {
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.eof = true;
                    }
                    self.service(token);
                }
            }
            Msg::StdoutFailed(monitor) => {
                if let Some(&token) = self.by_monitor.get(&monitor) {
                    self.close(token);
                }
            }
            Msg::Shutdown => self.stopping = true,
        }
    }

    fn accept(&mut self, token: Token) {
        if self.stopping {
            return;
        }
        let Some(l) = self.listeners.get_mut(&token) else {
            return;
        };
        if l.active.is_some() {
            // One client at a time, as a QEMU socket chardev: the others wait in the backlog.
            return;
        }
        let fd = match sys::accept(l.fd.as_fd()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => return log::warn!("QMP accept failed: {e}"),
        };
        sys::set_nodelay(fd.as_fd());
        let first_wait = std::mem::take(&mut l.wait);
        match self.new_conn(Io::Socket(fd), Some(token), true) {
            Ok(conn) => {
                if let Some(l) = self.listeners.get_mut(&token) {
                    l.active = Some(conn);
                }
            }
            Err(e) => log::warn!("QMP: cannot serve a new connection: {e}"),
        }
        if first_wait {
            let mut w = self
                .shared
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            w.pending = w.pending.saturating_sub(1);
            self.shared.waiting_cv.notify_all();
        }
    }

    /// Reads what can be read, parses it and runs what it can, as far as the monitor's queue
    /// allows; closes the connection at end of input once everything read is answered.
    fn service(&mut self, token: Token) {
        let mut reads = 0;
        loop {
            // Parse what is buffered.
            loop {
                let Some(c) = self.conns.get_mut(&token) else {
                    return;
                };
                if c.inpos >= c.inbuf.len() || c.suspended() {
                    break;
                }
                let (n, item) = c.parser.feed(&c.inbuf[c.inpos..]);
                c.inpos += n;
                if let Some(item) = item {
                    self.handle_item(token, item);
                }
            }
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if c.inpos >= c.inbuf.len() {
                c.inbuf.clear();
                c.inpos = 0;
                if let Io::Stdio(s) = &mut c.io {
                    if s.reader_waiting {
                        s.reader_waiting = false;
                        let _ = s.more.send(());
                    }
                }
            }
            if c.suspended() || c.eof || !c.want_read || c.inpos < c.inbuf.len() {
                break;
            }
            let Io::Socket(fd) = &c.io else { break };
            if reads == READS_PER_TURN {
                self.again.push(token);
                return;
            }
            reads += 1;
            let chunk_start = c.parser.offset();
            let buf = &mut self.read_buf;
            let mut fds = Vec::new();
            match sys::recv_with_fds(fd.as_fd(), buf, &mut fds) {
                Ok(0) => c.eof = true,
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    if !fds.is_empty() {
                        c.fd_batches.push_back((chunk_start, fds));
                        let mut total: usize = c.fd_batches.iter().map(|(_, b)| b.len()).sum();
                        while total > MAX_PENDING_FDS {
                            if let Some((_, old)) = c.fd_batches.pop_front() {
                                total -= old.len();
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.want_read = false,
                Err(e) => {
                    log::debug!("QMP monitor {}: read failed: {e}", c.monitor);
                    return self.close(token);
                }
            }
        }
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        if c.eof && c.idle() && c.out_pos >= c.out.len() {
            self.close(token);
        }
    }

    fn handle_item(&mut self, token: Token, item: wire::Parsed) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let fds = c.take_fds(item.start);
        match item.result {
            Ok(v) if wire::is_oob(&v) => {
                self.execute(token, v, fds, true);
                return;
            }
            Ok(v) => c.queue.push_back(Pending::Request(v, fds)),
            Err(desc) => c.queue.push_back(Pending::Error(desc)),
        }
        self.pump(token);
    }

    /// Runs queued in-band requests until one is left running.
    fn pump(&mut self, token: Token) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if c.inflight.is_some() {
                return;
            }
            match c.queue.pop_front() {
                None => return,
                Some(Pending::Error(desc)) => {
                    let bytes = wire::reply(None, &Err(QmpError::generic(desc)));
                    self.write(token, &bytes);
                }
                Some(Pending::Request(v, fds)) => self.execute(token, v, fds, false),
            }
        }
    }

    fn execute(&mut self, token: Token, msg: Value, fds: Vec<OwnedFd>, immediate: bool) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let req = match wire::check_request(msg, c.oob_enabled) {
            Ok(r) => r,
            Err((id, e)) => return self.write(token, &wire::reply(id.as_ref(), &Err(e))),
        };
        let refuse = if !c.negotiated && req.command != "qmp_capabilities" {
            Some(QmpError {
                class: ErrorClass::CommandNotFound,
                desc: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
            })
        } else if req.oob && !self.registry.contains(&req.command) {
            Some(QmpError::command_not_found(&req.command))
        } else if req.oob && !self.registry.allows_oob(&req.command) {
            Some(QmpError::generic(format!(
                "The command {} does not support OOB",
                req.command
            )))
        } else {
            None
        };
        if let Some(e) = refuse {
            return self.write(token, &wire::reply(req.id.as_ref(), &Err(e)));
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        if !immediate {
            c.inflight = Some(seq);
            c.inflight_is_caps = req.command == "qmp_capabilities";
        }
        let ctx = CallContext {
            monitor: c.monitor,
            fds: c.fds.clone(),
            received_fds: fds,
            oob: req.oob,
        };
        let (monitor, oob, id) = (c.monitor, req.oob, req.id);
        let shared = self.shared.clone();
        let responder = Responder::new(move |result| {
            shared.push(Msg::Done {
                monitor,
                seq,
                oob,
                id,
                result,
            })
        });
        let registry = self.registry.clone();
        registry.dispatch(ctx, &req.command, req.arguments, responder);
    }

    fn done(
        &mut self,
        monitor: u64,
        seq: u64,
        oob: bool,
        id: Option<Value>,
        result: Result<Value, QmpError>,
    ) {
        let Some(&token) = self.by_monitor.get(&monitor) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let bytes = wire::reply(id.as_ref(), &result);
        if !oob {
            if c.inflight != Some(seq) {
                return;
            }
            c.inflight = None;
            if std::mem::take(&mut c.inflight_is_caps) && result.is_ok() {
                let mut monitors = self.shared.monitors();
                if let Some(m) = monitors.get_mut(&monitor) {
                    if let Some(oob) = m.accepted.take() {
                        m.negotiated = true;
                        c.negotiated = true;
                        c.oob_enabled = oob;
                    }
                }
            }
        }
        self.write(token, &bytes);
        if !oob {
            self.pump(token);
            self.service(token);
        }
    }

    fn event(&mut self, name: String, throttle: Option<Option<String>>, bytes: Vec<u8>) {
        if let Some(key) = throttle {
            let now = Instant::now();
            let key = (name, key);
            if let Some(t) = self.throttles.get_mut(&key) {
                t.pending = Some(bytes);
                return;
            }
            self.throttles.insert(
                key,
                Throttle {
                    until: now + THROTTLE,
                    pending: None,
                },
            );
        }
        self.broadcast(&bytes);
    }

    fn broadcast(&mut self, bytes: &[u8]) {
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.negotiated)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            self.write(t, bytes);
        }
    }

    fn next_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        self.throttles
            .values()
            .map(|t| t.until.saturating_duration_since(now))
            .min()
    }

    fn run_throttles(&mut self) {
        let now = Instant::now();
        let due: Vec<_> = self
            .throttles
            .iter()
            .filter(|(_, t)| t.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let pending = self.throttles.get_mut(&key).and_then(|t| t.pending.take());
            match pending {
                Some(bytes) => {
                    if let Some(t) = self.throttles.get_mut(&key) {
                        t.until = now + THROTTLE;
                    }
                    self.broadcast(&bytes);
                }
                None => {
                    self.throttles.remove(&key);
                }
            }
        }
    }

    /// Queues output, writing what the socket takes now.
    fn write(&mut self, token: Token, bytes: &[u8]) {
        let max = self.shared.config.max_output;
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        match &mut c.io {
            Io::Stdio(s) => {
                if s.queued.load(Ordering::Relaxed) + bytes.len() > max {
                    log::warn!(
                        "QMP monitor {} (stdio) does not read its output: closing it",
                        c.monitor
                    );
                    return self.close(token);
                }
                s.queued.fetch_add(bytes.len(), Ordering::Relaxed);
                let _ = s.out.send(bytes.to_vec());
            }
            Io::Socket(_) => {
                c.out.extend_from_slice(bytes);
                self.flush(token);
                let Some(c) = self.conns.get(&token) else {
                    return;
                };
                if c.out.len() - c.out_pos > max {
                    log::warn!(
                        "QMP monitor {}: the client leaves more than {max} bytes unread: disconnecting it",
                        c.monitor
                    );
                    self.close(token);
                }
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let Io::Socket(fd) = &c.io else { return };
        while c.out_pos < c.out.len() {
            match sys::send(fd.as_fd(), &c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("QMP monitor {}: write failed: {e}", c.monitor);
                    return self.close(token);
                }
            }
        }
        if c.out_pos >= c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            if c.eof && c.idle() {
                self.close(token);
            }
        } else if c.out_pos > 1 << 20 {
            c.out.drain(..c.out_pos);
            c.out_pos = 0;
        }
    }

    fn close(&mut self, token: Token) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        if let Io::Socket(fd) = &c.io {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.by_monitor.remove(&c.monitor);
        self.shared.monitors().remove(&c.monitor);
        log::debug!("QMP monitor {} disconnected", c.monitor);
        let listener = c.listener;
        drop(c);
        if let Some(lt) = listener {
            if let Some(l) = self
                .listeners
                .get_mut(&lt)
                .filter(|l| l.active == Some(token))
            {
                l.active = None;
            }
            // The next client may already be waiting in the backlog.
            self.accept(lt);
        }
    }

    /// Best-effort last writes, then everything is closed.
    fn finish(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            self.flush(t);
            self.close(t);
        }
        self.cleanup_listeners();
        let mut w = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        w.stopped = true;
        self.shared.waiting_cv.notify_all();
    }

    fn cleanup_listeners(&mut self) {
        for (_, l) in self.listeners.drain() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&l.fd.as_raw_fd()));
            if let Some((path, dev, ino)) = &l.path {
                use std::os::unix::fs::MetadataExt;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino)
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // A server that never ran (or stopped) still removes its socket files.
        self.cleanup_listeners();
    }
}
