//! One libslirp instance and the callbacks it makes, driven by the one thread that owns it.
//!
//! libslirp keeps some state in globals (its notion of the current time among them), and
//! QEMU calls every instance from its main thread. Here each netdev has a thread, so all
//! calls into the library, of every instance, are made under one process-wide lock, and
//! all instances share one clock.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::IoSlice;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use libslirp_sys as sys;

use super::config::Settings;
use super::hostfwd::{HostFwd, HostFwdKey};
use super::queue::FrameQueue;

/// The `SlirpConfig` version whose fields the bindings describe and whose callbacks
/// (`timer_new`, not the version-4 `timer_new_opaque`) `SlirpCb` has.
const CONFIG_VERSION: u32 = 3;

extern "C" {
    /// glib's allocator's free, for the strings libslirp returns.
    fn g_free(mem: *mut c_void);
}

/// Serialises calls into libslirp across instances.
fn library_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nanoseconds on the clock every instance shares.
fn now_ns() -> i64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let nanos = BASE.get_or_init(Instant::now).elapsed().as_nanos();
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// A timer libslirp created (`timer_new`); it fires at `expire_ms` on [`now_ns`]'s clock
/// in milliseconds, as QEMU's `SCALE_MS` timers do.
struct Timer {
    cb: sys::SlirpTimerCb,
    cb_opaque: *mut c_void,
    expire_ms: Cell<Option<i64>>,
}

/// What the callbacks reach through libslirp's opaque pointer.
struct Context {
    /// Frames for the guest.
    rx: Arc<FrameQueue>,
    /// The live timers, owned here (created with `Box::into_raw`).
    timers: RefCell<Vec<*mut Timer>>,
    /// The netdev's id, for messages.
    id: String,
}

/// The callbacks; libslirp keeps a pointer to them for the instance's life.
static CALLBACKS: sys::SlirpCb = sys::SlirpCb {
    send_packet: Some(send_packet),
    guest_error: Some(guest_error),
    clock_get_ns: Some(clock_get_ns),
    timer_new: Some(timer_new),
    timer_free: Some(timer_free),
    timer_mod: Some(timer_mod),
    register_poll_fd: Some(register_poll_fd),
    unregister_poll_fd: Some(unregister_poll_fd),
    notify: Some(notify),
};

/// # Safety
/// `opaque` is the `Context` of a live [`Stack`].
unsafe fn context<'a>(opaque: *mut c_void) -> &'a Context {
    // SAFETY: the caller's contract.
    unsafe { &*(opaque as *const Context) }
}

/// A frame for the guest: queued for the NIC, or dropped when the queue is full.
unsafe extern "C" fn send_packet(buf: *const c_void, len: usize, opaque: *mut c_void) -> isize {
    // SAFETY: libslirp passes the opaque pointer the stack was created with.
    let ctx = unsafe { context(opaque) };
    // SAFETY: libslirp passes a frame of `len` bytes, valid for the call.
    let frame = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    if !ctx.rx.push(&[IoSlice::new(frame)]) {
        log::trace!("{}: frame for the guest dropped, queue full", ctx.id);
    }
    len as isize
}

unsafe extern "C" fn guest_error(msg: *const c_char, opaque: *mut c_void) {
    // SAFETY: libslirp passes the opaque pointer the stack was created with.
    let ctx = unsafe { context(opaque) };
    // SAFETY: libslirp passes a NUL-terminated message.
    let msg = unsafe { CStr::from_ptr(msg) };
    log::warn!("{}: guest error: {}", ctx.id, msg.to_string_lossy());
}

unsafe extern "C" fn clock_get_ns(_opaque: *mut c_void) -> i64 {
    now_ns()
}

unsafe extern "C" fn timer_new(
    cb: sys::SlirpTimerCb,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes the opaque pointer the stack was created with.
    let ctx = unsafe { context(opaque) };
    let timer = Box::into_raw(Box::new(Timer {
        cb,
        cb_opaque,
        expire_ms: Cell::new(None),
    }));
    ctx.timers.borrow_mut().push(timer);
    timer as *mut c_void
}

unsafe extern "C" fn timer_free(timer: *mut c_void, opaque: *mut c_void) {
    // SAFETY: libslirp passes the opaque pointer the stack was created with.
    let ctx = unsafe { context(opaque) };
    let timer = timer as *mut Timer;
    let mut timers = ctx.timers.borrow_mut();
    if let Some(i) = timers.iter().position(|&t| t == timer) {
        timers.swap_remove(i);
        // SAFETY: `timer` came from Box::into_raw in timer_new and was still listed, so
        // it is freed exactly once.
        drop(unsafe { Box::from_raw(timer) });
    }
}

unsafe extern "C" fn timer_mod(timer: *mut c_void, expire_time: i64, _opaque: *mut c_void) {
    // SAFETY: libslirp passes a timer timer_new made and has not freed.
    let timer = unsafe { &*(timer as *const Timer) };
    timer.expire_ms.set(Some(expire_time));
}

unsafe extern "C" fn register_poll_fd(_fd: c_int, _opaque: *mut c_void) {
    // Only Windows needs to know: every descriptor is polled through add_poll.
}

unsafe extern "C" fn unregister_poll_fd(_fd: c_int, _opaque: *mut c_void) {}

unsafe extern "C" fn notify(_opaque: *mut c_void) {
    // The poll loop fills its descriptor set again after every call into libslirp.
}

/// `SLIRP_POLL_*` to `poll(2)` events, and back.
const POLL_MAP: [(c_int, i16); 5] = [
    (sys::SLIRP_POLL_IN, libc::POLLIN),
    (sys::SLIRP_POLL_OUT, libc::POLLOUT),
    (sys::SLIRP_POLL_PRI, libc::POLLPRI),
    (sys::SLIRP_POLL_ERR, libc::POLLERR),
    (sys::SLIRP_POLL_HUP, libc::POLLHUP),
];

unsafe extern "C" fn add_poll(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the pollfd vector `Stack::fill` passes, borrowed for the call.
    let fds = unsafe { &mut *(opaque as *mut Vec<libc::pollfd>) };
    let events = POLL_MAP
        .iter()
        .filter(|(s, _)| events & s != 0)
        .fold(0, |acc, (_, p)| acc | p);
    fds.push(libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    (fds.len() - 1) as c_int
}

unsafe extern "C" fn get_revents(idx: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the pollfd vector `Stack::poll` passes, borrowed for the call.
    let fds = unsafe { &*(opaque as *const Vec<libc::pollfd>) };
    let revents = usize::try_from(idx)
        .ok()
        .and_then(|i| fds.get(i))
        .map_or(0, |p| p.revents);
    POLL_MAP
        .iter()
        .filter(|(_, p)| revents & p != 0)
        .fold(0, |acc, (s, _)| acc | s)
}

/// A libslirp instance.
pub struct Stack {
    slirp: *mut sys::Slirp,
    /// Referenced by libslirp through its opaque pointer; dropped after the instance.
    ctx: Box<Context>,
}

impl Stack {
    /// Creates the instance; `None` if libslirp refuses the configuration.
    pub fn new(settings: &Settings, rx: Arc<FrameQueue>, id: &str) -> Option<Self> {
        let ctx = Box::new(Context {
            rx,
            timers: RefCell::new(Vec::new()),
            id: id.to_owned(),
        });
        let cfg = sys::SlirpConfig {
            version: CONFIG_VERSION,
            restricted: c_int::from(settings.restricted),
            in_enabled: settings.ipv4,
            vnetwork: settings.net.into(),
            vnetmask: settings.mask.into(),
            vhost: settings.host.into(),
            in6_enabled: settings.ipv6,
            vprefix_addr6: settings.prefix6.into(),
            vprefix_len: settings.prefix6_len,
            vhost6: settings.host6.into(),
            vhostname: settings
                .hostname
                .as_ref()
                .map_or(ptr::null(), |h| h.as_ptr()),
            tftp_server_name: ptr::null(),
            tftp_path: ptr::null(),
            bootfile: ptr::null(),
            vdhcp_start: settings.dhcp.into(),
            vnameserver: settings.dns.into(),
            vnameserver6: settings.dns6.into(),
            vdnssearch: ptr::null_mut(),
            vdomainname: ptr::null(),
            if_mtu: 0,
            if_mru: 0,
            disable_host_loopback: false,
            enable_emu: false,
            outbound_addr: ptr::null(),
            outbound_addr6: ptr::null(),
            disable_dns: false,
            disable_dhcp: false,
        };
        let opaque = &*ctx as *const Context as *mut c_void;
        let _lock = library_lock();
        // SAFETY: `cfg` is a complete version-3 configuration whose strings live for the
        // call (libslirp copies them); CALLBACKS is static; `opaque` points at `ctx`,
        // which the Stack keeps until after slirp_cleanup.
        let slirp = unsafe { sys::slirp_new(&cfg, &CALLBACKS, opaque) };
        (!slirp.is_null()).then_some(Stack { slirp, ctx })
    }

    /// Hands frames from the guest to the stack, in order.
    pub fn input_all<'f>(&mut self, frames: impl IntoIterator<Item = &'f Vec<u8>>) {
        let mut frames = frames.into_iter().peekable();
        if frames.peek().is_none() {
            return;
        }
        let _lock = library_lock();
        for frame in frames {
            let Ok(len) = c_int::try_from(frame.len()) else {
                continue;
            };
            // SAFETY: `frame` is valid for `len` bytes during the call; the instance is
            // live.
            unsafe { sys::slirp_input(self.slirp, frame.as_ptr(), len) };
        }
    }

    /// Adds libslirp's descriptors to `fds` and lowers `timeout_ms` to what its timers
    /// need.
    pub fn fill(&mut self, fds: &mut Vec<libc::pollfd>, timeout_ms: &mut u32) {
        let _lock = library_lock();
        // SAFETY: add_poll receives `fds` as its opaque pointer only during this call.
        unsafe {
            sys::slirp_pollfds_fill(
                self.slirp,
                timeout_ms,
                Some(add_poll),
                fds as *mut Vec<libc::pollfd> as *mut c_void,
            )
        };
    }

    /// Lets the stack handle what `poll(2)` reported in `fds` (the set [`Stack::fill`]
    /// made), or only its timeouts after a failed poll.
    pub fn poll(&mut self, fds: &mut Vec<libc::pollfd>, poll_failed: bool) {
        let _lock = library_lock();
        // SAFETY: get_revents receives `fds` as its opaque pointer only during this call.
        unsafe {
            sys::slirp_pollfds_poll(
                self.slirp,
                c_int::from(poll_failed),
                Some(get_revents),
                fds as *mut Vec<libc::pollfd> as *mut c_void,
            )
        };
    }

    /// Milliseconds until the next timer is due (`u32::MAX` with none armed).
    pub fn next_timer_ms(&self) -> u32 {
        let now = now_ns() / 1_000_000;
        self.ctx
            .timers
            .borrow()
            .iter()
            .filter_map(|&t| {
                // SAFETY: listed timers are live until timer_free unlists them.
                unsafe { &*t }.expire_ms.get()
            })
            .map(|at| u32::try_from((at - now).max(0)).unwrap_or(u32::MAX))
            .min()
            .unwrap_or(u32::MAX)
    }

    /// Fires the timers that are due.
    pub fn run_timers(&mut self) {
        let now = now_ns() / 1_000_000;
        let due: Vec<_> = self
            .ctx
            .timers
            .borrow()
            .iter()
            .filter_map(|&t| {
                // SAFETY: listed timers are live until timer_free unlists them.
                let timer = unsafe { &*t };
                match timer.expire_ms.get() {
                    Some(at) if at <= now => {
                        timer.expire_ms.set(None);
                        Some((timer.cb, timer.cb_opaque))
                    }
                    _ => None,
                }
            })
            .collect();
        // The list is not borrowed while callbacks run: they may arm or free timers.
        for (cb, cb_opaque) in due {
            if let Some(cb) = cb {
                let _lock = library_lock();
                // SAFETY: libslirp's timer callback with the opaque it registered, on the
                // instance's own thread.
                unsafe { cb(cb_opaque) };
            }
        }
    }

    /// Adds a forwarding rule; false when libslirp refuses it (e.g. the port is taken).
    pub fn add_hostfwd(&mut self, fwd: &HostFwd) -> bool {
        let _lock = library_lock();
        // SAFETY: plain values into a live instance.
        let ret = unsafe {
            sys::slirp_add_hostfwd(
                self.slirp,
                c_int::from(fwd.udp),
                fwd.host_addr.into(),
                c_int::from(fwd.host_port),
                fwd.guest_addr.into(),
                c_int::from(fwd.guest_port),
            )
        };
        ret >= 0
    }

    /// Removes a forwarding rule; false when there was none.
    pub fn remove_hostfwd(&mut self, key: &HostFwdKey) -> bool {
        let _lock = library_lock();
        // SAFETY: plain values into a live instance.
        let ret = unsafe {
            sys::slirp_remove_hostfwd(
                self.slirp,
                c_int::from(key.udp),
                key.host_addr.into(),
                c_int::from(key.host_port),
            )
        };
        ret == 0
    }

    /// libslirp's connection table (HMP `info usernet`).
    pub fn connection_info(&mut self) -> String {
        let _lock = library_lock();
        // SAFETY: a live instance; the result is a g_malloc'ed string or NULL.
        let text = unsafe { sys::slirp_connection_info(self.slirp) };
        if text.is_null() {
            return String::new();
        }
        // SAFETY: libslirp returns a NUL-terminated string.
        let info = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the string is ours to free, with glib's allocator, once.
        unsafe { g_free(text as *mut c_void) };
        info
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        {
            let _lock = library_lock();
            // SAFETY: the instance is live and never used after this; libslirp frees its
            // timers through timer_free while `ctx` still exists.
            unsafe { sys::slirp_cleanup(self.slirp) };
        }
        for timer in self.ctx.timers.take() {
            // SAFETY: timers libslirp did not free are still ours, freed once here.
            drop(unsafe { Box::from_raw(timer) });
        }
    }
}
