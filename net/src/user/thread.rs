//! The thread that owns a user netdev's libslirp instance: it sleeps in `poll(2)` on
//! libslirp's sockets, the queue of frames from the guest and a wake-up eventfd (control
//! requests, stopping), with the timeout libslirp and its timers ask for.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::EventFd;

use super::config::Settings;
use super::hostfwd::{HostFwd, HostFwdKey};
use super::queue::FrameQueue;
use super::stack::Stack;
use super::UserError;

/// What the backend and its control handles share with the thread.
#[derive(Debug)]
pub struct Shared {
    /// Frames from the guest.
    pub tx: FrameQueue,
    /// Frames for the guest.
    pub rx: Arc<FrameQueue>,
    /// Written to make the thread look at `stop` and its requests.
    pub wake: EventFd,
    /// Set when the backend is dropped.
    pub stop: AtomicBool,
}

/// A request to the thread.
pub enum Request {
    /// Add a forwarding rule; the answer is whether libslirp took it.
    AddHostfwd(HostFwd, Sender<bool>),
    /// Remove a forwarding rule; the answer is whether there was one.
    RemoveHostfwd(HostFwdKey, Sender<bool>),
    /// The connection table.
    ConnectionInfo(Sender<String>),
}

/// Starts the thread: creates the instance, adds the `hostfwd=` rules (each with the rule
/// text for its error), and returns once that worked.
pub fn spawn(
    id: &str,
    settings: Settings,
    hostfwds: Vec<(String, HostFwd)>,
    shared: Arc<Shared>,
    requests: Receiver<Request>,
) -> Result<JoinHandle<()>, UserError> {
    let (ready, started) = mpsc::channel();
    let name = id.to_owned();
    let handle = thread::Builder::new()
        .name(format!("slirp {id}"))
        .spawn(move || {
            let Some(mut stack) = Stack::new(&settings, shared.rx.clone(), &name) else {
                let _ = ready.send(Err(UserError::Create));
                return;
            };
            for (rule, fwd) in &hostfwds {
                if !stack.add_hostfwd(fwd) {
                    let _ = ready.send(Err(UserError::HostfwdSetup(rule.clone())));
                    return;
                }
            }
            let _ = ready.send(Ok(()));
            drop(ready);
            run(&mut stack, &shared, &requests);
        })
        .map_err(UserError::Thread)?;
    let result = started.recv().unwrap_or(Err(UserError::Stopped));
    match result {
        Ok(()) => Ok(handle),
        Err(e) => {
            let _ = handle.join();
            Err(e)
        }
    }
}

fn run(stack: &mut Stack, shared: &Shared, requests: &Receiver<Request>) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    // Frames from the guest, taken from the queue all at once (which makes room for the
    // sender at once too); the buffers go back to the queue once libslirp has them.
    let mut batch = VecDeque::new();
    while !shared.stop.load(Ordering::Acquire) {
        fds.clear();
        for fd in [shared.wake.as_raw_fd(), shared.tx.fd()] {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let mut timeout = u32::MAX;
        stack.fill(&mut fds, &mut timeout);
        let timeout = timeout.min(stack.next_timer_ms()).min(i32::MAX as u32) as i32;
        // SAFETY: `fds` is a vector of initialised pollfds, valid for the call.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        stack.poll(&mut fds, ret < 0);
        if fds[0].revents & libc::POLLIN != 0 {
            let _ = shared.wake.read();
        }
        while let Ok(request) = requests.try_recv() {
            serve(stack, request);
        }
        shared.tx.take_all(&mut batch);
        stack.input_all(&batch);
        shared.tx.recycle(&mut batch);
        stack.run_timers();
    }
}

fn serve(stack: &mut Stack, request: Request) {
    // A requester that went away no longer needs the answer.
    match request {
        Request::AddHostfwd(fwd, answer) => {
            let _ = answer.send(stack.add_hostfwd(&fwd));
        }
        Request::RemoveHostfwd(key, answer) => {
            let _ = answer.send(stack.remove_hostfwd(&key));
        }
        Request::ConnectionInfo(answer) => {
            let _ = answer.send(stack.connection_info());
        }
    }
}
