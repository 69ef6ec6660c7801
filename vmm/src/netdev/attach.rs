//! Guest NICs: the netdevs of the command line, and a virtio-net-pci function for each
//! `-device virtio-net-pci` and `-nic`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use petrel_arch::GuestMemoryMmap;
use petrel_devices::virtio::net::{NetControl, NetParams, VirtioNet};
use petrel_devices::virtio::VirtioPciDevice;
use petrel_net::NetBackend;

use super::{NetLayer, NetdevError, Nic, NicControl};
use crate::api::{EventSink, VmEvent};
use crate::cli::config::{Config, DeviceConfig, VirtioNetConfig};
use crate::vm::devices::{DeviceError, DeviceManager};

/// Errors creating a netdev or a NIC.
#[derive(Debug, thiserror::Error)]
pub enum NicAttachError {
    /// A `-netdev` could not be opened. The cause is part of the message, not a chained
    /// source (which would print it twice).
    #[error("-netdev {id}: {error}")]
    Netdev {
        /// The netdev.
        id: String,
        /// Why.
        error: NetdevError,
    },
    /// The device model refused its properties.
    #[error("virtio-net-pci: {0}")]
    Device(String),
    /// The function could not be placed.
    #[error(transparent)]
    Pci(#[from] DeviceError),
}

impl NicControl for NetControl {
    fn set_link(&self, up: bool) {
        NetControl::set_link(self, up);
    }

    fn set_backend(&self, backend: Option<Box<dyn NetBackend>>) {
        NetControl::set_backend(self, backend);
    }

    fn rx_filter(&self) -> serde_json::Value {
        serde_json::to_value(self.query_rx_filter()).unwrap_or_default()
    }

    fn mac(&self) -> [u8; 6] {
        NetControl::mac(self)
    }
}

/// What a NIC is attached with besides its configuration.
pub struct NicEnv<'a> {
    /// PCI placement and MSI vectors.
    pub devices: &'a mut DeviceManager,
    /// Guest RAM for DMA.
    pub mem: &'a Arc<GuestMemoryMmap>,
    /// Where NIC_RX_FILTER_CHANGED goes.
    pub events: Arc<dyn EventSink>,
    /// Anonymous devices created before the NICs (their `device[N]` numbers are taken).
    pub anonymous_before: usize,
}

/// Opens every netdev of `cfg` into `net`, then creates and places the NICs.
pub fn build_nics(cfg: &Config, net: &mut NetLayer, env: NicEnv) -> Result<(), NicAttachError> {
    for netdev in &cfg.netdevs {
        let id = netdev["id"].as_str().unwrap_or_default().to_string();
        let backend =
            super::open_backend(netdev, None).map_err(|error| NicAttachError::Netdev {
                id: id.clone(),
                error,
            })?;
        net.add(&id, backend)
            .map_err(|error| NicAttachError::Netdev { id, error })?;
    }
    let NicEnv {
        devices,
        mem,
        events,
        anonymous_before,
    } = env;
    let mut anonymous = anonymous_before;
    let mut default_macs = 0;
    for dev in &cfg.devices {
        let DeviceConfig::VirtioNet(nic) = dev else {
            continue;
        };
        let (name, qom_path) = match &nic.id {
            Some(id) => (id.clone(), format!("/machine/peripheral/{id}")),
            None => {
                anonymous += 1;
                // QEMU numbers an unnamed NIC by the NICs of its model before it, named
                // ones included (`nic0`, then `virtio-net-pci.1`).
                (
                    format!("virtio-net-pci.{}", net.nics().len()),
                    format!("/machine/peripheral-anon/device[{}]", anonymous - 1),
                )
            }
        };
        let mac = nic.mac.unwrap_or_else(|| {
            default_macs += 1;
            NetLayer::default_mac(default_macs - 1)
        });
        attach(net, devices, mem, &events, nic, name, qom_path, mac)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attach(
    net: &mut NetLayer,
    devices: &mut DeviceManager,
    mem: &Arc<GuestMemoryMmap>,
    events: &Arc<dyn EventSink>,
    nic: &VirtioNetConfig,
    name: String,
    qom_path: String,
    mac: [u8; 6],
) -> Result<(), NicAttachError> {
    let backend = nic.netdev.as_deref().and_then(|id| net.take_backend(id));
    let params = NetParams {
        mac,
        rx_queue_size: nic.rx_queue_size,
        tx_queue_size: nic.tx_queue_size,
        host_mtu: nic.host_mtu,
    };
    let model = VirtioNet::new(name.clone(), backend, &params)
        .map_err(|e| NicAttachError::Device(e.to_string()))?;
    let control = model.control();
    // QEMU sends NIC_RX_FILTER_CHANGED for the first change, then not again until a
    // query-rx-filter for the NIC re-arms it.
    let armed = Arc::new(AtomicBool::new(true));
    let listener_armed = armed.clone();
    let listener_events = events.clone();
    let event_name = nic.id.clone();
    // QEMU names the virtio-net device inside the PCI proxy, as query-block's `qdev` does.
    let event_path = format!("{qom_path}/virtio-backend");
    control.set_filter_listener(Some(Arc::new(move || {
        if NetLayer::filter_event_due(&listener_armed) {
            listener_events.emit(VmEvent::NicRxFilterChanged {
                name: event_name.clone(),
                path: event_path.clone(),
            });
        }
    })));
    // Three queues (rx, tx, control) and the configuration vector.
    let vectors = devices.msi_vectors(4)?;
    let pci = VirtioPciDevice::new(name.clone(), Box::new(model), mem.clone(), vectors, None)
        .map_err(|e| NicAttachError::Device(e.to_string()))?;
    let placement = devices.add_pci_device(Arc::new(Mutex::new(pci)), nic.slot)?;
    net.add_nic(Nic {
        name,
        id: nic.id.clone(),
        devfn: placement.devfn,
        control: Arc::new(control),
        filter_event_armed: armed,
        deleted_peer: None,
        seq: 0,
    });
    Ok(())
}
