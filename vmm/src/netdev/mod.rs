//! The network layer: netdevs (host backends) by id, the NICs on them, and what QMP asks of
//! both. Net clients are named as in QEMU: a netdev by its id, a NIC by its device id or,
//! without one, `virtio-net-pci.N`.

pub mod attach;
mod open;
mod serve;
mod usernet;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use petrel_devices::virtio::net::DEFAULT_MAC;
use petrel_net::{InfoText, NetBackend, NetError, UserControl};

pub use open::open_backend;

/// Errors of the network layer, worded as QEMU words them.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// `netdev_add` with an id in use.
    #[error("Duplicate ID '{0}'")]
    DuplicateId(String),
    /// No net client has this name (QMP `DeviceNotFound`).
    #[error("Device '{0}' not found")]
    NotFound(String),
    /// `query-rx-filter` named a netdev.
    #[error("net client({0}) isn't a NIC")]
    NotNic(String),
    /// `query-rx-filter` named nothing known.
    #[error("invalid net client name: {0}")]
    InvalidName(String),
    /// A netdev type petrel does not build.
    #[error("network backend '{0}' is not compiled into this binary")]
    NotCompiled(String),
    /// The netdev's JSON does not fit `Netdev`.
    #[error("{0}")]
    Invalid(String),
    /// An option petrel's backends do not implement.
    #[error("{0}")]
    Unsupported(String),
    /// `fd=` named a descriptor the monitor does not hold.
    #[error("File descriptor named '{0}' has not been found")]
    FdNotFound(String),
    /// The backend could not be created. Its text is the whole message (QEMU's): the
    /// error is not chained as a source, which would repeat it.
    #[error("{0}")]
    Backend(NetError),
}

impl From<NetError> for NetdevError {
    fn from(e: NetError) -> NetdevError {
        NetdevError::Backend(e)
    }
}

impl NetdevError {
    /// Whether QMP reports it as `DeviceNotFound`.
    pub fn is_device_not_found(&self) -> bool {
        matches!(self, NetdevError::NotFound(_))
    }
}

/// What the network layer needs of a NIC model.
pub trait NicControl: Send + Sync {
    /// Raises or drops the link the guest sees.
    fn set_link(&self, up: bool);
    /// Connects the NIC to a backend, or (with `None`) leaves it without a peer.
    fn set_backend(&self, backend: Option<Box<dyn NetBackend>>);
    /// The receive filter as QAPI `RxFilterInfo` without `name`.
    fn rx_filter(&self) -> serde_json::Value;
    /// The NIC's MAC address now (the guest may have changed it).
    fn mac(&self) -> [u8; 6];
}

/// A netdev's backend as opened, with the handles the monitor keeps on it.
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn NetBackend>,
    /// A user netdev's requests (`hostfwd_add`, `hostfwd_remove`, `info usernet`).
    pub user: Option<UserControl>,
}

impl Opened {
    /// A backend the monitor has no handle on.
    fn plain(backend: impl NetBackend + 'static) -> Self {
        Opened {
            backend: Box::new(backend),
            user: None,
        }
    }
}

/// A netdev.
struct Netdev {
    id: String,
    kind: &'static str,
    /// The backend's `info network` text, live: the backend may change it.
    info: InfoText,
    /// The backend, until a NIC takes it.
    backend: Option<Box<dyn NetBackend>>,
    /// A user netdev's requests, which outlive the backend's move to a NIC.
    user: Option<UserControl>,
    /// The NIC it serves, as an index into [`NetLayer::nics`].
    nic: Option<usize>,
    /// Its place in QEMU's list of net clients (creation order), for `info network`.
    seq: u64,
}

impl Netdev {
    fn line(&self) -> String {
        format!(
            "{}: index=0,type={},{}",
            self.id,
            self.kind,
            self.info.get()
        )
    }
}

/// A NIC.
pub struct Nic {
    /// Its net client name.
    pub name: String,
    /// Its device id.
    pub id: Option<String>,
    /// Its PCI device and function.
    pub devfn: u8,
    /// The device model.
    pub control: Arc<dyn NicControl>,
    /// NIC_RX_FILTER_CHANGED may be sent (until it is, then again after a query).
    pub filter_event_armed: Arc<AtomicBool>,
    /// The `info network` line of a peer deleted with `netdev_del` while in use: QEMU keeps
    /// showing it under the NIC, whose link stays down.
    deleted_peer: Option<String>,
    /// Its place in QEMU's list of net clients; [`NetLayer::add_nic`] sets it.
    seq: u64,
}

/// The netdevs and NICs of the machine.
#[derive(Default)]
pub struct NetLayer {
    netdevs: Vec<Netdev>,
    nics: Vec<Nic>,
    /// The next net client's place in creation order: QEMU's `info network` lists net
    /// clients in the order they were created (the command line's netdevs, then the NICs,
    /// then netdevs added at run time), not NICs first.
    next_seq: u64,
}

impl NetLayer {
    /// Adds a netdev around `opened`.
    pub fn add(&mut self, id: &str, opened: Opened) -> Result<(), NetdevError> {
        if self.netdevs.iter().any(|n| n.id == id) {
            return Err(NetdevError::DuplicateId(id.to_string()));
        }
        let Opened { backend, user } = opened;
        let seq = self.next_seq();
        self.netdevs.push(Netdev {
            id: id.to_string(),
            kind: backend.kind(),
            info: backend.info(),
            backend: Some(backend),
            user,
            nic: None,
            seq,
        });
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Hands netdev `id`'s backend to the next NIC, which [`NetLayer::add_nic`] records.
    pub fn take_backend(&mut self, id: &str) -> Option<Box<dyn NetBackend>> {
        let index = self.nics.len();
        let netdev = self.netdevs.iter_mut().find(|n| n.id == id)?;
        netdev.nic = Some(index);
        netdev.backend.take()
    }

    /// Records a NIC.
    pub fn add_nic(&mut self, mut nic: Nic) {
        nic.seq = self.next_seq();
        self.nics.push(nic);
    }

    /// The NICs.
    pub fn nics(&self) -> &[Nic] {
        &self.nics
    }

    /// The QEMU default MAC of the `n`th NIC without `mac=`.
    pub fn default_mac(n: usize) -> [u8; 6] {
        let mut mac = DEFAULT_MAC;
        mac[5] = mac[5].wrapping_add(n as u8);
        mac
    }

    /// NIC_RX_FILTER_CHANGED for NIC `index` is due: true once, until a query re-arms it.
    pub fn filter_event_due(armed: &AtomicBool) -> bool {
        armed.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests;
