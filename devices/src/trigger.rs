//! An eventfd-backed interrupt or event line.

use std::io;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Errors from creating or duplicating a trigger.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// `eventfd(2)` failed.
    #[error("create eventfd: {0}")]
    Create(#[source] io::Error),
    /// Duplicating the file descriptor failed.
    #[error("clone eventfd: {0}")]
    Clone(#[source] io::Error),
}

/// An [`EventFd`] that devices signal to raise an interrupt or report an event
/// (reset, shutdown).
///
/// The VMM registers the inner fd as a KVM irqfd for interrupt lines, or polls
/// it in its event loop for machine events.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Creates a trigger on a new non-blocking eventfd.
    pub fn new() -> Result<Self, TriggerError> {
        EventFd::new(EFD_NONBLOCK)
            .map(Self)
            .map_err(TriggerError::Create)
    }

    /// Returns a trigger signalling the same eventfd.
    pub fn try_clone(&self) -> Result<Self, TriggerError> {
        self.0.try_clone().map(Self).map_err(TriggerError::Clone)
    }

    /// The eventfd to hand to KVM or to an event loop.
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl From<EventFd> for EventFdTrigger {
    fn from(fd: EventFd) -> Self {
        Self(fd)
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match self.0.write(1) {
            // The counter is saturated, so an event is already pending and
            // the consumer will see it: nothing is lost.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_writes_one() {
        let t = EventFdTrigger::new().unwrap();
        t.trigger().unwrap();
        t.trigger().unwrap();
        assert_eq!(t.event_fd().read().unwrap(), 2);
    }

    #[test]
    fn clone_signals_same_fd() {
        let t = EventFdTrigger::new().unwrap();
        let c = t.try_clone().unwrap();
        c.trigger().unwrap();
        assert_eq!(t.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn saturated_counter_is_not_an_error() {
        let t = EventFdTrigger::new().unwrap();
        t.event_fd().write(u64::MAX - 1).unwrap();
        assert!(t.trigger().is_ok());
    }
}
