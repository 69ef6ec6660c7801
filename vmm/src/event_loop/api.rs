//! The subscriber that takes front-end requests off the API channel and hands them to the
//! control loop.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::lifecycle::{post, ActionSlot, LoopAction};
use crate::api::ApiReceiver;

/// Wakes the loop for queued API requests.
pub struct ApiSubscriber {
    rx: ApiReceiver,
    actions: ActionSlot,
}

impl ApiSubscriber {
    /// Watches `rx`, posting requests to `actions`.
    pub fn new(rx: ApiReceiver, actions: ActionSlot) -> ApiSubscriber {
        ApiSubscriber { rx, actions }
    }
}

impl MutEventSubscriber for ApiSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        for req in self.rx.drain() {
            post(&self.actions, LoopAction::Request(req));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&*self.rx.evt, EventSet::IN)) {
            log::error!("api: cannot watch the request channel: {e:?}");
        }
    }
}
