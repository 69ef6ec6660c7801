//! The balloon function: created from `-device virtio-balloon-pci` and placed on PCI bus 0
//! before the first boot, its `actual` changes reported as BALLOON_CHANGE.

use std::sync::{Arc, Mutex};

use petrel_arch::GuestMemoryMmap;
use petrel_devices::virtio::balloon::{BalloonEvents, BalloonParams, VirtioBalloon};
use petrel_devices::virtio::VirtioPciDevice;

use super::{memory_left, AttachedBalloon, BalloonLayer};
use crate::api::{EventSink, VmEvent};
use crate::cli::config::{Config, DeviceConfig, VirtioBalloonConfig};
use crate::vm::devices::{DeviceError, DeviceManager};

/// MSI-X vectors of the function: one per queue (inflate, deflate, stats) and one for
/// configuration changes.
const VECTORS: u16 = 4;

/// Errors creating the balloon function.
#[derive(Debug, thiserror::Error)]
pub enum BalloonAttachError {
    /// A second `-device virtio-balloon-pci` (QEMU's words).
    #[error("-device virtio-balloon-pci: Only one balloon device is supported")]
    OnlyOne,
    /// The device model or its transport could not be created.
    #[error("virtio-balloon-pci: {0}")]
    Device(String),
    /// The function could not be placed.
    #[error(transparent)]
    Pci(#[from] DeviceError),
}

/// Turns the driver's `actual` into BALLOON_CHANGE (rate-limited by the QMP server, as
/// QEMU's monitor limits it).
struct VmBalloonEvents {
    events: Arc<dyn EventSink>,
    ram_size: u64,
}

impl BalloonEvents for VmBalloonEvents {
    fn actual_changed(&self, actual: u32) {
        self.events.emit(VmEvent::BalloonChange {
            actual: memory_left(self.ram_size, actual),
        });
    }
}

/// Creates and places the balloon `cfg` asks for, if any.
pub fn build_balloon(
    cfg: &Config,
    devices: &mut DeviceManager,
    mem: &Arc<GuestMemoryMmap>,
    events: Arc<dyn EventSink>,
) -> Result<BalloonLayer, BalloonAttachError> {
    let mut wanted = cfg.devices.iter().filter_map(|d| match d {
        DeviceConfig::Balloon(b) => Some(b),
        _ => None,
    });
    let Some(dev) = wanted.next() else {
        return Ok(BalloonLayer::new(mem.clone(), None));
    };
    if wanted.next().is_some() {
        return Err(BalloonAttachError::OnlyOne);
    }
    let mut layer = BalloonLayer::new(mem.clone(), None);
    let attached = attach(devices, mem, dev, events, layer.ram_size())?;
    layer.device = Some(attached);
    Ok(layer)
}

fn attach(
    devices: &mut DeviceManager,
    mem: &Arc<GuestMemoryMmap>,
    dev: &VirtioBalloonConfig,
    events: Arc<dyn EventSink>,
    ram_size: u64,
) -> Result<AttachedBalloon, BalloonAttachError> {
    let name = dev.id.clone().unwrap_or_else(|| "balloon".to_string());
    let params = BalloonParams {
        deflate_on_oom: dev.deflate_on_oom,
        page_poison: dev.page_poison,
    };
    let reporter: Arc<dyn BalloonEvents> = Arc::new(VmBalloonEvents { events, ram_size });
    let model = VirtioBalloon::new(name.clone(), params, Some(reporter))
        .map_err(|e| BalloonAttachError::Device(e.to_string()))?;
    let vectors = devices.msi_vectors(VECTORS)?;
    let pci = VirtioPciDevice::new(name, Box::new(model), mem.clone(), vectors, None)
        .map_err(|e| BalloonAttachError::Device(e.to_string()))?;
    let pci = Arc::new(Mutex::new(pci));
    let placement = devices.add_pci_device(pci.clone(), dev.slot)?;
    Ok(AttachedBalloon {
        id: dev.id.clone(),
        devfn: placement.devfn,
        pci,
    })
}
