//! Feeds a chardev's input into a serial port, holding back when the guest has not drained
//! the receive FIFO so that no byte is lost.

use std::io::Read;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use petrel_devices::legacy::serial::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::lifecycle::{post, ActionSlot, LoopAction};
use crate::chardev::{ChardevInput, StdinEvent};

const TOKEN_INPUT: u32 = 1;
const TOKEN_DRAINED: u32 = 2;

/// Moves bytes from one chardev into one serial port.
pub struct SerialInput {
    serial: Arc<Mutex<Serial>>,
    input: ChardevInput,
    drained: EventFd,
    pending: Vec<u8>,
    watched: Option<RawFd>,
    actions: ActionSlot,
}

impl SerialInput {
    /// `drained` must be the eventfd the serial port signals when its input FIFO empties.
    pub fn new(
        serial: Arc<Mutex<Serial>>,
        input: ChardevInput,
        drained: EventFd,
        actions: ActionSlot,
    ) -> SerialInput {
        SerialInput {
            serial,
            input,
            drained,
            pending: Vec::new(),
            watched: None,
            actions,
        }
    }

    fn watch(&mut self, ops: &mut EventOps) {
        let fd = self.input.fd();
        if self.watched == Some(fd) || fd < 0 {
            return;
        }
        self.unwatch(ops);
        match ops.add(Events::with_data_raw(fd, TOKEN_INPUT, EventSet::IN)) {
            Ok(()) => self.watched = Some(fd),
            // stdin redirected from a regular file or /dev/null cannot be polled; such input
            // is not interactive and is simply not forwarded.
            Err(e) => log::debug!("serial input: not polling fd {fd}: {e:?}"),
        }
    }

    fn unwatch(&mut self, ops: &mut EventOps) {
        if let Some(fd) = self.watched.take() {
            let _ = ops.remove(Events::with_data_raw(fd, TOKEN_INPUT, EventSet::IN));
        }
    }

    /// Pushes pending bytes into the FIFO; true when all went in.
    fn flush_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let taken = self
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue_input(&self.pending);
        self.pending.drain(..taken);
        self.pending.is_empty()
    }

    fn read_input(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        match &mut self.input {
            ChardevInput::Stdio(stdio) => match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => self.unwatch(ops),
                Ok(n) => match stdio.decode(&buf[..n]) {
                    StdinEvent::Data(bytes) => self.pending.extend_from_slice(&bytes),
                    StdinEvent::Quit => post(&self.actions, LoopAction::UserQuit),
                },
            },
            ChardevInput::Socket(sock) => {
                if !sock.connected() {
                    if let Err(e) = sock.accept() {
                        log::warn!("serial socket: accept failed: {e}");
                    }
                } else {
                    match sock.read(&mut buf) {
                        Ok(n) if n > 0 => self.pending.extend_from_slice(&buf[..n]),
                        // The client left; go back to listening.
                        _ => {}
                    }
                }
                self.watched_refresh(ops);
            }
        }
        if !self.flush_pending() {
            // Stop reading until the guest drains its FIFO.
            self.unwatch(ops);
        }
    }

    fn watched_refresh(&mut self, ops: &mut EventOps) {
        if self.watched != Some(self.input.fd()) {
            self.watch(ops);
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_INPUT => {
                if events
                    .event_set()
                    .intersects(EventSet::HANG_UP | EventSet::ERROR)
                    && !events.event_set().contains(EventSet::IN)
                {
                    if let ChardevInput::Stdio(_) = self.input {
                        self.unwatch(ops);
                        return;
                    }
                }
                self.read_input(ops);
            }
            TOKEN_DRAINED => {
                let _ = self.drained.read();
                if self.flush_pending() {
                    self.watch(ops);
                }
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.drained,
            TOKEN_DRAINED,
            EventSet::IN,
        )) {
            log::error!("serial input: cannot watch the drain event: {e:?}");
        }
        self.watch(ops);
    }
}
