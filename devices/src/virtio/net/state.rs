//! What a migration or snapshot saves of a network device (the queues are
//! the transport's; a frame in flight is lost, as QEMU loses it).

use serde::{Deserialize, Serialize};

use super::filter::RxFilter;

/// The guest-visible state of a [`super::VirtioNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioNetState {
    /// Features offered.
    pub avail_features: u64,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The receive filter, with the MAC address the driver may have set.
    pub filter: RxFilter,
    /// The link is up.
    pub link_up: bool,
    /// An announcement waits for the driver's acknowledgement.
    pub announce: bool,
    /// The guest offloads in force (feature bits).
    pub guest_offloads: u64,
}
