//! Network operations front ends may ask for.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// A file descriptor travelling with a request (one a monitor received with `getfd`).
///
/// Requests are compared and cloned as values; a descriptor can be neither, so it rides in a
/// shared slot that the VMM empties when it takes it.
#[derive(Debug, Clone)]
pub struct PassedFd(Arc<Mutex<Option<OwnedFd>>>);

impl PassedFd {
    /// Wraps `fd`.
    pub fn new(fd: OwnedFd) -> PassedFd {
        PassedFd(Arc::new(Mutex::new(Some(fd))))
    }

    /// Takes the descriptor; `None` if it was taken already.
    pub fn take(&self) -> Option<OwnedFd> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl PartialEq for PassedFd {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PassedFd {}

/// A network request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRequest {
    /// `netdev_add`: a backend, as QAPI `Netdev` JSON (already checked against the schema).
    Add {
        /// The netdev.
        netdev: serde_json::Value,
        /// The descriptor its `fd=` named, when it named one the monitor holds.
        fd: Option<PassedFd>,
    },
    /// `netdev_del`.
    Del {
        /// The netdev's id.
        id: String,
    },
    /// `set_link`: a NIC's or a netdev's link.
    SetLink {
        /// The net client's name.
        name: String,
        /// Up or down.
        up: bool,
    },
    /// `query-rx-filter`, for one NIC or all; re-arms NIC_RX_FILTER_CHANGED.
    QueryRxFilter {
        /// The NIC's name.
        name: Option<String>,
    },
    /// HMP `info network`.
    InfoNetwork,
    /// HMP `hostfwd_add`: a forwarding rule for a user netdev.
    HostfwdAdd {
        /// The netdev's id; without one, the first user netdev.
        netdev: Option<String>,
        /// `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`.
        rule: String,
    },
    /// HMP `hostfwd_remove`: a user netdev's forwarding rule goes.
    HostfwdRemove {
        /// The netdev's id; without one, the first user netdev.
        netdev: Option<String>,
        /// `[tcp|udp]:[hostaddr]:hostport`.
        rule: String,
    },
    /// HMP `info usernet`.
    InfoUsernet,
}

/// Network answers.
#[derive(Debug)]
pub enum NetData {
    /// `QueryRxFilter`: QAPI `RxFilterInfo` objects.
    RxFilters(Vec<serde_json::Value>),
    /// HMP's text: `InfoNetwork`, `HostfwdAdd`, `HostfwdRemove`, `InfoUsernet`.
    Text(String),
}
