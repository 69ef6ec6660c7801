//! The QMP server: every monitor of the process, served by one thread named `qmp`.
//!
//! # Using it from the VMM
//!
//! ```no_run
//! # use petrel_qmp::{Registry, server::{Server, ServerConfig}};
//! # fn main() -> std::io::Result<()> {
//! let mut registry = Registry::new();
//! // registry.register::<SomeCommand, _>(|ctx, args, reply| ...);   the VMM's commands
//! let (mut server, handle) = Server::new(registry, ServerConfig::default())?;
//! server.add_unix_listener("/run/vm/qmp.sock", false)?; // -qmp unix:/run/vm/qmp.sock,server=on,wait=off
//! server.add_tcp_listener("127.0.0.1:4444", true)?;      // -qmp tcp:127.0.0.1:4444,server=on (wait=on)
//! // server.connect_unix(path)?;  -chardev socket,path=P (petrel connects to a listening client)
//! // server.add_fd(fd, wait)?;    -chardev socket,fd=N   (connected or listening: SO_ACCEPTCONN decides)
//! // server.add_stdio()?;         -qmp stdio
//! server.start()?;              // spawns the `qmp` thread
//! handle.wait_for_clients();    // wait=on: block until each such listener has had a client
//! // ... run the guest; from any thread:
//! handle.emit_raw("STOP", None);
//! // handle.emit(&SomeEvent { .. });
//! handle.shutdown();            // stops the thread, closes everything, removes socket files
//! # Ok(())
//! # }
//! ```
//!
//! - [`Server::new`] takes the [`Registry`] with the VMM's handlers and registers, replacing
//!   any of the VMM's, the commands that are about the protocol or the monitor itself:
//!   `qmp_capabilities`, `query-commands`, `query-qmp-schema`, `query-version`,
//!   `query-events`, `getfd`, `closefd` and `add_client`. The registry then belongs to the
//!   server. Handlers are called on the `qmp` thread and may answer later from any thread.
//! - [`ServerHandle`] is `Clone + Send + Sync`: events, waiting for `wait=on` clients, and
//!   shutdown.
//!
//! # Behaviour (QEMU 7.2's unless said otherwise)
//!
//! - **Endpoints.** A listener serves one client at a time, as a QEMU socket chardev does:
//!   further clients wait in the listen backlog until the current one disconnects. A client
//!   connection made by petrel (`connect_unix`, a connected `fd=N`) or added with
//!   `add_client` serves that one connection; when it ends, that monitor is gone. Unix socket
//!   files: a stale *socket* at the path is replaced (QEMU unlinks whatever is there; petrel
//!   refuses to remove anything that is not a socket), and the file is removed at shutdown if
//!   it is still the one petrel created. Every connection is a monitor of its own: a new
//!   [`CallContext::monitor`](crate::CallContext) id, negotiation state and `getfd` store.
//!   `add_client` with protocol `qmp` makes the named descriptor (a connected stream socket
//!   received with `getfd`) a new monitor; any other protocol is "protocol 'X' is invalid"
//!   (QEMU takes `vnc`, `spice` or a chardev id there; petrel has none of them). Stdio reads fd 0 and writes fd 1 through two helper
//!   threads with blocking I/O, so the file status flags of the standard streams, which are
//!   shared with other processes, are never changed; the terminal mode is not touched either.
//! - **Greeting** on connect, with the version and package of [`ServerConfig`]; capability
//!   `oob` is offered on sockets, not on stdio (QEMU offers it where the monitor runs in its
//!   I/O thread, which stdio does not).
//! - **Negotiation.** Until `qmp_capabilities` succeeds only it runs: anything else is
//!   `CommandNotFound`, "Expecting capabilities negotiation with 'qmp_capabilities'"; no
//!   events are sent. Requesting a capability that was not offered is "Capability oob not
//!   available". Afterwards `qmp_capabilities` is `CommandNotFound`, "Capabilities
//!   negotiation is already complete, command ignored". The monitor enters command mode at the
//!   moment its `{"return": {}}` is written, so no event can precede that reply.
//! - **In-band commands** run one at a time per monitor, in order. Without `oob` the monitor
//!   stops reading after each request until it has been answered; with `oob` up to 8 requests
//!   wait in a queue (parse errors take a place too, to keep replies in order) and reading
//!   stops while it is full. A slow command never delays other monitors: replies come back
//!   through a queue that wakes the `qmp` thread.
//! - **`exec-oob`** requests are taken out of the stream as soon as they are parsed and run at
//!   once, even while an in-band command is pending. Without negotiated `oob` they fail with
//!   "QMP input member 'exec-oob' is unexpected"; a command without `allow-oob` fails with
//!   "The command X does not support OOB". As in QEMU 7.2, `id` is not mandatory.
//! - **File descriptors** (unix sockets) are received with every read (up to 16 per read)
//!   and belong to the first request that *starts* at or after the beginning of the read that
//!   brought them: the request sent in the same `sendmsg`, or the next one for clients that
//!   send a descriptor with a single byte before the command (Python's `send_fd_scm`). A
//!   request that does not use them closes them.
//! - **Events** ([`ServerHandle::emit`], [`ServerHandle::emit_raw`]) are timestamped when
//!   emitted, with host wall-clock time, and go to every monitor in command mode, in the order
//!   they were emitted relative to replies (an event emitted before a handler answers is sent
//!   before the answer). `data` is left out for events without data in the schema. RTC_CHANGE,
//!   BALLOON_CHANGE, WATCHDOG, QUORUM_FAILURE, QUORUM_REPORT_BAD (per `node-name`),
//!   VSERPORT_CHANGE (per `id`) and MEMORY_DEVICE_SIZE_CHANGE (per `qom-path`) are limited to
//!   one per second: the first is sent at once, later ones within the second replace each
//!   other and the last is sent when the second is over (keeping its own timestamp), which
//!   opens a new second.
//! - **Output** is buffered per connection and written without blocking. A client that does
//!   not read while more than [`ServerConfig::max_output`] bytes (16 MiB by default) wait for
//!   it is disconnected, with a warning in the log (QEMU buffers without a bound).
//! - **Disconnection** drops the monitor's queue, its named descriptors and any descriptors
//!   not yet used; replies of commands still running are discarded when they come. At end of
//!   input (the client shut down its sending side) the requests already read are still
//!   answered, then the connection is closed (QEMU, reading byte by byte, behaves the same in
//!   practice).
//! - **Shutdown** ([`ServerHandle::shutdown`]) writes what can be written without blocking,
//!   closes every connection and listener and removes the socket files petrel created.

mod builtins;
mod core;
mod sys;

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::dispatch::Registry;
use crate::schema::Event;
use crate::wire;

use self::core::{Core, Msg, Shared};

/// What the server says about itself, and its bounds.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The QEMU version petrel claims (greeting and `query-version`): major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Micro.
    pub micro: u64,
    /// The `package` string, e.g. `petrel-0.1.0`.
    pub package: String,
    /// Bounds of one incoming message.
    pub limits: wire::Limits,
    /// Bytes of output that may wait for a client before it is disconnected.
    pub max_output: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            major: 7,
            minor: 2,
            micro: 0,
            package: format!("petrel-{}", env!("CARGO_PKG_VERSION")),
            limits: wire::Limits::default(),
            max_output: 16 << 20,
        }
    }
}

/// The server before it runs: where the monitors are. See the module documentation.
pub struct Server {
    core: Core,
}

/// Events, waiting and shutdown, from any thread.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// A server for `registry`, to which it adds its built-in commands. Fails only if the
    /// host refuses an epoll instance or an eventfd (out of file descriptors).
    pub fn new(mut registry: Registry, config: ServerConfig) -> io::Result<(Server, ServerHandle)> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), core::WAKER)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Default::default()),
            waker,
            monitors: Mutex::new(Default::default()),
            config,
            waiting: Mutex::new(core::Waiting::default()),
            waiting_cv: Condvar::new(),
            thread: Mutex::new(None),
            command_names: Default::default(),
            schema: Default::default(),
            server_thread: Default::default(),
        });
        builtins::register(&mut registry, &shared);
        let _ = shared.command_names.set(registry.names());
        let core = Core::new(Arc::new(registry), shared.clone(), poll);
        Ok((Server { core }, ServerHandle { shared }))
    }

    /// Listens on a unix socket (`-qmp unix:PATH,server=on,wait=...`). With `wait`, the VMM
    /// should call [`ServerHandle::wait_for_clients`] before starting the guest.
    pub fn add_unix_listener(&mut self, path: impl AsRef<Path>, wait: bool) -> io::Result<()> {
        let path = path.as_ref();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        // bind() creates the file before listen() runs, and a client connecting in between
        // is refused; binding a private name and renaming it into place makes the socket
        // appear only once it listens.
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!(".{}.tmp", std::process::id()));
        let staging = PathBuf::from(staging);
        let _ = std::fs::remove_file(&staging);
        let listener = match UnixListener::bind(&staging) {
            Ok(l) => {
                if let Err(e) = std::fs::rename(&staging, path) {
                    let _ = std::fs::remove_file(&staging);
                    return Err(e);
                }
                l
            }
            // The longer name can exceed sun_path where the real one fits.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => UnixListener::bind(path)?,
            Err(e) => return Err(e),
        };
        let meta = std::fs::metadata(path)?;
        let owned = (PathBuf::from(path), meta.dev(), meta.ino());
        let desc = format!("disconnected:unix:{},server=on", path.display());
        self.core
            .add_listener(OwnedFd::from(listener), Some(owned), wait, desc)
    }

    /// Listens on TCP (`-qmp tcp:HOST:PORT,server=on,wait=...`): the first of the resolved
    /// addresses that can be bound. Returns the bound address (useful with port 0).
    pub fn add_tcp_listener(
        &mut self,
        addr: impl ToSocketAddrs,
        wait: bool,
    ) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let desc = format!("disconnected:tcp:{local},server=on");
        self.core
            .add_listener(OwnedFd::from(listener), None, wait, desc)?;
        Ok(local)
    }

    /// Connects to a client listening on a unix socket (`-chardev socket,path=PATH` without
    /// `server`), now, and serves that connection.
    pub fn connect_unix(&mut self, path: impl AsRef<Path>) -> io::Result<()> {
        let stream = UnixStream::connect(path)?;
        self.core.add_connection(OwnedFd::from(stream))
    }

    /// Serves an inherited socket (`-chardev socket,fd=N`): a listening socket is a listener
    /// (`wait` as for the others), a connected one is served as it is.
    pub fn add_fd(&mut self, fd: OwnedFd, wait: bool) -> io::Result<()> {
        match sys::socket_type(fd.as_fd())? {
            Some(libc::SOCK_STREAM) => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a stream socket",
                ))
            }
            None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket")),
        }
        sys::set_cloexec(fd.as_fd())?;
        if sys::is_listening(fd.as_fd())? {
            self.core
                .add_listener(fd, None, wait, "disconnected:fd,server=on".into())
        } else {
            self.core.add_connection(fd)
        }
    }

    /// Serves standard input and output (`-qmp stdio`), from [`Server::start`] on.
    pub fn add_stdio(&mut self) -> io::Result<()> {
        self.core.add_stdio()
    }

    /// Spawns the `qmp` thread.
    pub fn start(self) -> io::Result<()> {
        let shared = self.core.shared().clone();
        let mut core = self.core;
        let thread = std::thread::Builder::new()
            .name("qmp".into())
            .spawn(move || core.run())?;
        *shared.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }
}

impl ServerHandle {
    /// Sends event `E` to every monitor in command mode (rate-limited where QEMU limits it).
    /// `data` is left out for events the schema gives no data ([`Event::HAS_DATA`]).
    pub fn emit<E: Event>(&self, event: &E) {
        if !E::HAS_DATA {
            return self.emit_raw(E::NAME, None);
        }
        match serde_json::to_value(event) {
            Ok(v) => self.emit_raw(E::NAME, Some(v)),
            Err(e) => log::error!("QMP event {} cannot be encoded: {e}", E::NAME),
        }
    }

    /// Sends event `name` with `data` (absent when `None`).
    pub fn emit_raw(&self, name: &str, data: Option<Value>) {
        let (seconds, microseconds) = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_micros())),
            Err(_) => (-1, -1),
        };
        let throttle = core::throttle_key(name, data.as_ref());
        let bytes = wire::event(name, data.as_ref(), seconds, microseconds);
        self.shared.push(Msg::Event {
            name: name.to_string(),
            throttle,
            bytes,
        });
    }

    /// Every command clients can call: the VMM's and the server's built-ins, sorted.
    pub fn command_names(&self) -> Vec<&'static str> {
        self.shared.command_names.get().cloned().unwrap_or_default()
    }

    /// Blocks until every listener added with `wait` has accepted its first client, or the
    /// server stopped.
    pub fn wait_for_clients(&self) {
        let mut w = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while w.pending > 0 && !w.stopped {
            w = self
                .shared
                .waiting_cv
                .wait(w)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops the server thread and waits for it: replies given before the call are written if
    /// that can be done without blocking, every connection and listener is closed and the
    /// unix socket files created by petrel are removed. Idempotent.
    ///
    /// Called on the `qmp` thread itself (from a handler) it returns at once and the thread
    /// stops after the handler. A `quit` handler should therefore reply, then let another
    /// thread call `shutdown` and exit the process: the reply is written before the server
    /// stops (as in QEMU, a client may still see the connection close first if the write
    /// would block).
    pub fn shutdown(&self) {
        self.shared.push(Msg::Shutdown);
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread {
            if t.thread().id() == std::thread::current().id() {
                return;
            }
            let _ = t.join();
        }
    }
}
