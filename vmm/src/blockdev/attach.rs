//! Guest disks: a virtio-blk-pci function for each `-device virtio-blk-pci` and each
//! `-drive if=virtio`, placed on PCI bus 0 before the first boot.

use std::sync::{Arc, Mutex};

use petrel_arch::GuestMemoryMmap;
use petrel_devices::virtio::block::{BlockParams, CacheMode, VirtioBlock};
use petrel_devices::virtio::VirtioPciDevice;

use super::{AttachedDevice, BlockLayer, BlockdevError};
use crate::api::{ApiSender, EventSink, VmEvent, VmmAction};
use crate::cli::config::{Config, DeviceConfig, DriveInterface, VirtioBlkConfig};
use crate::vm::devices::{DeviceError, DeviceManager};

/// Errors creating a disk's device.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The drive could not be found or opened.
    #[error(transparent)]
    Block(#[from] BlockdevError),
    /// The device model refused its properties.
    #[error("virtio-blk-pci: {0}")]
    Device(String),
    /// The function could not be placed.
    #[error(transparent)]
    Pci(#[from] DeviceError),
}

/// Turns a disk's failed requests into BLOCK_IO_ERROR and, when the policy says so, a VM
/// stop.
pub struct VmDiskEvents {
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// The way to the control loop.
    pub api: ApiSender,
}

impl petrel_devices::virtio::block::DiskEvents for VmDiskEvents {
    fn io_error(&self, report: petrel_devices::virtio::block::IoErrorReport) {
        let stop = report.action == petrel_devices::virtio::block::ErrorOutcome::Stop;
        self.events.emit(VmEvent::BlockIoError(report));
        if stop {
            self.api.send(VmmAction::IoErrorStop, Box::new(|_| {}));
        }
    }
}

/// Opens every `-drive` and `-blockdev` of `cfg` into `block`, then creates and places the
/// devices.
pub fn build_disks(
    cfg: &Config,
    block: &mut BlockLayer,
    devices: &mut DeviceManager,
    mem: &Arc<GuestMemoryMmap>,
) -> Result<(), AttachError> {
    for d in &cfg.drives {
        block.open_drive(d)?;
    }
    for b in &cfg.blockdevs {
        let opts =
            serde_json::from_value(b.clone()).map_err(|e| BlockdevError::Other(e.to_string()))?;
        block.add_blockdev(&opts)?;
    }
    // As in QEMU, `-drive if=virtio` devices are created after every `-device`.
    let mut wanted: Vec<VirtioBlkConfig> = cfg
        .devices
        .iter()
        .filter_map(|d| match d {
            DeviceConfig::VirtioBlk(b) => Some(b.clone()),
            DeviceConfig::VirtioNet(_) | DeviceConfig::Balloon(_) => None,
        })
        .collect();
    wanted.extend(
        cfg.drives
            .iter()
            .filter(|d| d.interface == DriveInterface::Virtio)
            .map(|d| VirtioBlkConfig {
                id: None,
                drive: d.id.clone(),
                serial: None,
                num_queues: 1,
                queue_size: petrel_devices::virtio::block::DEFAULT_QUEUE_SIZE,
                slot: None,
            }),
    );
    let mut anonymous = 0;
    for dev in &wanted {
        let qom_path = match &dev.id {
            Some(id) => format!("/machine/peripheral/{id}"),
            None => {
                anonymous += 1;
                format!("/machine/peripheral-anon/device[{}]", anonymous - 1)
            }
        };
        attach(block, devices, mem, dev, qom_path)?;
    }
    Ok(())
}

fn attach(
    block: &mut BlockLayer,
    devices: &mut DeviceManager,
    mem: &Arc<GuestMemoryMmap>,
    dev: &VirtioBlkConfig,
    qom_path: String,
) -> Result<(), AttachError> {
    let index = block.backend_for_device(&dev.drive)?;
    let disk = block.disk(index);
    let params = BlockParams {
        serial: dev.serial.clone().or_else(|| disk.serial.clone()),
        num_queues: dev.num_queues,
        queue_size: dev.queue_size,
        cache: CacheMode {
            writeback: disk.cache.writeback,
            ignore_flush: disk.cache.no_flush,
            discard: disk.discard,
        },
    };
    let name = dev.id.clone().unwrap_or_else(|| dev.drive.clone());
    let mut model = VirtioBlock::new(name.clone(), disk.backend.clone(), &params)
        .map_err(|e| AttachError::Device(e.to_string()))?;
    model.set_control(disk.control.clone());
    // One vector per queue and one for configuration changes; VirtioBlock::new checked the
    // queue count, and the transport refuses more queues than it has vectors for.
    let vectors = dev.num_queues.checked_add(1).ok_or_else(|| {
        AttachError::Device(format!("num-queues {} is too large", dev.num_queues))
    })?;
    let vectors = devices.msi_vectors(vectors)?;
    let pci = VirtioPciDevice::new(name, Box::new(model), mem.clone(), vectors, None)
        .map_err(|e| AttachError::Device(e.to_string()))?;
    let pci = Arc::new(Mutex::new(pci));
    let placement = devices.add_pci_device(pci.clone(), dev.slot)?;
    block.attach(
        index,
        AttachedDevice {
            id: dev.id.clone(),
            qom_path,
            devfn: placement.devfn,
            pci,
        },
    );
    Ok(())
}
