//! The subscriber that turns guest power events, vCPU failures and termination signals into a
//! decision for the control loop.

use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use super::signals::SignalFd;
use crate::vm::vcpu::{VcpuEvent, VcpuEvents};

/// What the control loop must do next.
#[derive(Debug)]
pub enum LoopAction {
    /// A front end's request.
    Request(crate::api::ApiRequest),
    /// The guest powered off (ACPI S5 or a KVM shutdown event).
    GuestShutdown,
    /// The guest asked for a reset (i8042, reset register, triple fault).
    GuestReset,
    /// The guest entered ACPI S3.
    GuestSuspend,
    /// A signal asks petrel to terminate.
    Signal(i32),
    /// The user typed the quit escape on the console.
    UserQuit,
    /// A vCPU cannot continue.
    Fatal(String),
}

/// Shared slot where subscribers post the next action.
pub type ActionSlot = Arc<Mutex<Vec<LoopAction>>>;

/// Posts an action for the loop.
pub fn post(slot: &ActionSlot, action: LoopAction) {
    slot.lock().unwrap_or_else(|e| e.into_inner()).push(action);
}

const TOKEN_SHUTDOWN: u32 = 1;
const TOKEN_RESET: u32 = 2;
const TOKEN_VCPU: u32 = 3;
const TOKEN_SIGNAL: u32 = 4;
const TOKEN_SUSPEND: u32 = 5;

/// Watches the power eventfds, the vCPU event queue and the signalfd.
pub struct Lifecycle {
    shutdown_evt: EventFd,
    reset_evt: EventFd,
    suspend_evt: EventFd,
    vcpu_events: Arc<VcpuEvents>,
    signals: SignalFd,
    actions: ActionSlot,
}

/// The guest power eventfds the lifecycle watches.
pub struct PowerEvents {
    /// ACPI S5.
    pub shutdown: EventFd,
    /// Reset requests.
    pub reset: EventFd,
    /// ACPI S3.
    pub suspend: EventFd,
}

impl Lifecycle {
    /// A subscriber over these sources, posting to `actions`.
    pub fn new(
        power: PowerEvents,
        vcpu_events: Arc<VcpuEvents>,
        signals: SignalFd,
        actions: ActionSlot,
    ) -> Lifecycle {
        Lifecycle {
            shutdown_evt: power.shutdown,
            reset_evt: power.reset,
            suspend_evt: power.suspend,
            vcpu_events,
            signals,
            actions,
        }
    }
}

impl MutEventSubscriber for Lifecycle {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_SHUTDOWN => {
                let _ = self.shutdown_evt.read();
                post(&self.actions, LoopAction::GuestShutdown);
            }
            TOKEN_RESET => {
                let _ = self.reset_evt.read();
                post(&self.actions, LoopAction::GuestReset);
            }
            TOKEN_SUSPEND => {
                let _ = self.suspend_evt.read();
                post(&self.actions, LoopAction::GuestSuspend);
            }
            TOKEN_VCPU => {
                for (index, event) in self.vcpu_events.drain() {
                    let action = match event {
                        VcpuEvent::Reset => LoopAction::GuestReset,
                        VcpuEvent::Shutdown => LoopAction::GuestShutdown,
                        VcpuEvent::Fatal(msg) => LoopAction::Fatal(format!("vCPU {index}: {msg}")),
                    };
                    post(&self.actions, action);
                }
            }
            TOKEN_SIGNAL => {
                while let Some(sig) = self.signals.read() {
                    post(&self.actions, LoopAction::Signal(sig));
                }
            }
            other => log::warn!("lifecycle: unexpected event token {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let sources = [
            (
                Events::with_data(&self.shutdown_evt, TOKEN_SHUTDOWN, EventSet::IN),
                "shutdown",
            ),
            (
                Events::with_data(&self.reset_evt, TOKEN_RESET, EventSet::IN),
                "reset",
            ),
            (
                Events::with_data(&self.suspend_evt, TOKEN_SUSPEND, EventSet::IN),
                "suspend",
            ),
            (
                Events::with_data(&self.vcpu_events.evt, TOKEN_VCPU, EventSet::IN),
                "vcpu",
            ),
            (
                Events::with_data(&self.signals, TOKEN_SIGNAL, EventSet::IN),
                "signal",
            ),
        ];
        for (ev, what) in sources {
            if let Err(e) = ops.add(ev) {
                log::error!("lifecycle: cannot watch {what} events: {e:?}");
            }
        }
    }
}
