//! The virtio 1.x PCI transport ("modern" only, no legacy I/O BAR).
//!
//! [`VirtioPciDevice`] wraps a [`VirtioDevice`] as a PCI function: vendor
//! 0x1af4, device 0x1040 + type, revision 1. Its configuration space lists
//! the virtio capabilities (common, notify, ISR, device, PCI access window)
//! and MSI-X, all pointing into BAR 0 (see [`layout`]).
//!
//! The VMM:
//! - assigns BAR 0 (e.g. with [`crate::pci::BarAllocator`]) before boot and
//!   routes MMIO on it to [`VirtioPciDevice::bar_read`] and
//!   [`VirtioPciDevice::bar_write`] (or registers the device itself, which
//!   implements [`vm_device::MutDeviceMmio`] with offsets relative to the
//!   BAR); a guest moving the BAR shows in [`VirtioPciDevice::bar_address`];
//! - optionally registers [`VirtioPciDevice::notify_addresses`] as
//!   ioeventfds on the queues' notify fds so queue kicks skip the VMM; a
//!   kick that does reach `bar_write` signals the same fd;
//! - implements [`MsiInterrupt`] to deliver MSI-X messages.

pub mod common_config;
pub mod interrupt;
pub mod layout;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::common_config::{CommonConfig, CommonConfigError, CommonConfigState};
use self::interrupt::PciInterrupt;
use self::layout::*;
use super::{
    pci_class, ActivatedQueue, GuestMemory, VirtioDevice, VirtioDeviceError, VirtioInterrupt,
    VirtioInterruptType, VIRTIO_F_VERSION_1,
};
use crate::pci::bar::BarKind;
use crate::pci::config::{
    ConfigSpaceSize, PciConfigError, PciConfiguration, PciConfigurationState, PciHeader,
};
use crate::pci::msix::{MsiInterrupt, MsixConfig, MsixError, MsixState, MSIX_CAP_ID};
use crate::pci::PciDevice;
use crate::sync::lock;
use crate::{EventFdTrigger, Reset, Stateful};

/// Red Hat, Inc. (virtio).
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Device ID of a modern virtio device of type 0; add the type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Revision of a modern-only device.
pub const VIRTIO_PCI_REVISION: u8 = 1;
/// Subsystem ID QEMU gives its virtio devices.
pub const VIRTIO_PCI_SUBSYSTEM_ID: u16 = 0x1100;
/// MSI-X vector number meaning "no vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Device status: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready to drive the device.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device hit an error and needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 0x40;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 0x80;

/// Feature bit: the driver and device use event index suppression.
const VIRTIO_RING_F_EVENT_IDX: u32 = virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Errors creating or restoring the transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// The device has no queues, or more than the notify area holds.
    #[error("invalid queue count {0}")]
    QueueCount(usize),
    /// Building the configuration space failed.
    #[error("pci configuration: {0}")]
    Config(#[from] PciConfigError),
    /// Building or restoring MSI-X failed.
    #[error("msi-x: {0}")]
    Msix(#[from] MsixError),
    /// Restoring the common configuration failed.
    #[error("common configuration: {0}")]
    CommonConfig(#[from] CommonConfigError),
    /// Creating a queue notification eventfd failed.
    #[error("create notify eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// Re-activating the device on restore failed.
    #[error("activate: {0}")]
    Activate(#[from] VirtioDeviceError),
}

/// A queue notification address: a write there kicks `queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifyAddress {
    /// Guest physical address (BAR 0 as currently programmed).
    pub address: u64,
    /// Queue index.
    pub queue: usize,
}

/// Saved state of the transport. The device model saves its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciState {
    /// PCI configuration space.
    pub config: PciConfigurationState,
    /// Common configuration registers.
    pub common: CommonConfigState,
    /// MSI-X table, PBA and control.
    pub msix: MsixState,
    /// ISR status.
    pub isr: u8,
    /// Configuration generation.
    pub config_generation: u8,
    /// Whether the device was activated.
    pub activated: bool,
}

/// Offsets of the capabilities the transport watches in configuration
/// space.
#[derive(Clone, Copy, Debug)]
struct CapOffsets {
    msix: usize,
    pci_cfg: usize,
}

/// A virtio device on the PCI transport.
pub struct VirtioPciDevice {
    id: String,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    config: PciConfiguration,
    caps: CapOffsets,
    layout: BarLayout,
    common: CommonConfig,
    interrupt: Arc<PciInterrupt>,
    notify: Vec<EventFd>,
    activated: bool,
}

impl VirtioPciDevice {
    /// Wraps `device` as a function named `id`, reaching guest memory
    /// `mem`. MSI-X gets one vector per queue plus one for configuration
    /// changes, delivered through `msi`; `intx` (INTA#) is the fallback
    /// when the driver does not enable MSI-X.
    pub fn new(
        id: impl Into<String>,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        msi: Arc<dyn MsiInterrupt>,
        intx: Option<EventFdTrigger>,
    ) -> Result<Self, VirtioPciError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        let queues = max_sizes.len();
        if queues == 0 || queues > MAX_QUEUES {
            return Err(VirtioPciError::QueueCount(queues));
        }
        // Bounded by MAX_QUEUES.
        let msix = MsixConfig::new(queues as u16 + 1, msi)?;
        let layout = BarLayout::new(msix.table_size(), msix.pba_size());

        let device_type = device.device_type();
        let (class, subclass, prog_if) = pci_class(device_type);
        let header = PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE.wrapping_add(device_type as u16),
            revision: VIRTIO_PCI_REVISION,
            class,
            subclass,
            prog_if,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: VIRTIO_PCI_SUBSYSTEM_ID,
            multifunction: false,
            interrupt_pin: u8::from(intx.is_some()),
        };
        let mut config = PciConfiguration::new(&header, ConfigSpaceSize::Pci);
        config.add_bar(
            usize::from(VIRTIO_BAR),
            layout.bar_size,
            BarKind::Mem64,
            false,
        )?;
        let caps = add_capabilities(&mut config, queues, &msix, &layout)?;

        let notify = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioPciError::EventFd)?;
        let features = device.features() | 1 << VIRTIO_F_VERSION_1;
        Ok(Self {
            id: id.into(),
            common: CommonConfig::new(features, &max_sizes, msix.vectors()),
            interrupt: Arc::new(PciInterrupt::new(msix, queues, intx)),
            device,
            mem,
            config,
            caps,
            layout,
            notify,
            activated: false,
        })
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device model, mutably.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The configuration space.
    pub fn config(&self) -> &PciConfiguration {
        &self.config
    }

    /// The configuration space, mutably (for BAR assignment before boot).
    pub fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    /// Size of BAR 0.
    pub fn bar_size(&self) -> u64 {
        self.layout.bar_size
    }

    /// Address BAR 0 is programmed with.
    pub fn bar_address(&self) -> u64 {
        self.config
            .bar(usize::from(VIRTIO_BAR))
            .map_or(0, |bar| bar.address)
    }

    /// The interrupt state (ISR, INTx line, configuration generation).
    pub fn interrupt(&self) -> &Arc<PciInterrupt> {
        &self.interrupt
    }

    /// Device status.
    pub fn status(&self) -> u8 {
        self.common.status()
    }

    /// Whether the device has been activated.
    pub fn activated(&self) -> bool {
        self.activated
    }

    /// The notification address of every queue at BAR 0's current
    /// address.
    pub fn notify_addresses(&self) -> Vec<NotifyAddress> {
        let base = self.bar_address() + NOTIFY_OFFSET;
        (0..self.notify.len())
            .map(|queue| NotifyAddress {
                address: base + queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
                queue,
            })
            .collect()
    }

    /// The eventfd signalled when the driver kicks `queue`.
    pub fn notify_event(&self, queue: usize) -> Option<&EventFd> {
        self.notify.get(queue)
    }

    /// Reads `data` at `offset` within BAR 0.
    pub fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        match Region::of(offset, &self.layout) {
            Region::Common(o) => {
                self.common
                    .read(o, data, self.interrupt.config_generation());
            }
            Region::Isr(o) => {
                data.fill(0);
                if o == 0 {
                    if let Some(first) = data.first_mut() {
                        *first = self.interrupt.take_isr();
                    }
                }
            }
            Region::Device(o) => self.device.read_config(o, data),
            Region::Notify(_) => data.fill(0),
            Region::MsixTable(o) => lock(self.interrupt.msix()).table_read(o, data),
            Region::MsixPba(o) => lock(self.interrupt.msix()).pba_read(o, data),
            Region::None => data.fill(0xff),
        }
    }

    /// Writes `data` at `offset` within BAR 0.
    pub fn bar_write(&mut self, offset: u64, data: &[u8]) {
        match Region::of(offset, &self.layout) {
            Region::Common(o) => {
                if let Some(status) = self.common.write(o, data) {
                    self.write_status(status);
                }
                self.sync_vectors();
            }
            Region::Isr(_) | Region::MsixPba(_) | Region::None => {
                log::debug!("{}: dropped write at bar offset {offset:#x}", self.id);
            }
            Region::Device(o) => self.device.write_config(o, data),
            Region::Notify(o) => self.kick(o),
            Region::MsixTable(o) => lock(self.interrupt.msix()).table_write(o, data),
        }
    }

    fn kick(&self, offset: u64) {
        let queue = (offset / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
        match self.notify.get(queue) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::warn!("{}: kicking queue {queue}: {e}", self.id);
                }
            }
            None => log::debug!("{}: kick of unknown queue {queue}", self.id),
        }
    }

    fn sync_vectors(&self) {
        let queues = self.common.queues().iter().map(|q| q.msix_vector);
        self.interrupt
            .set_vectors(self.common.msix_config(), queues);
    }

    /// Applies a device status write: 0 resets the device; `FEATURES_OK`
    /// is refused without `VIRTIO_F_VERSION_1`; `DRIVER_OK` activates.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_device();
            return;
        }
        let old = self.common.status();
        // Bits are only cleared by a reset.
        let mut new = old | value;
        let newly = new & !old;
        if newly & STATUS_FEATURES_OK != 0 {
            let features = self.common.driver_features();
            if features & (1 << VIRTIO_F_VERSION_1) == 0 {
                log::debug!("{}: driver did not accept VIRTIO_F_VERSION_1", self.id);
                new &= !STATUS_FEATURES_OK;
            } else {
                self.device.ack_features(features);
            }
        }
        self.common.set_status(new);
        let ready = new & STATUS_FEATURES_OK != 0 && new & STATUS_FAILED == 0;
        if newly & STATUS_DRIVER_OK != 0 && ready && !self.activated {
            if let Err(e) = self.activate(false) {
                log::error!("{}: activation failed: {e}", self.id);
                self.common.set_status(new | STATUS_NEEDS_RESET);
                if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config) {
                    log::warn!("{}: signalling needs-reset: {e}", self.id);
                }
            }
        }
    }

    /// Builds the enabled queues and starts the device. On restore the
    /// ring positions are picked up from the used ring in guest memory
    /// (the device completed everything in flight before it was saved).
    fn activate(&mut self, restoring: bool) -> Result<(), VirtioDeviceError> {
        let event_idx = self.common.driver_features() & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::new();
        for (index, qc) in self.common.queues().iter().enumerate() {
            if !qc.enabled {
                continue;
            }
            let invalid = || VirtioDeviceError::InvalidQueue(index);
            let mut queue = Queue::new(qc.max_size).map_err(|_| invalid())?;
            queue.set_size(qc.size);
            queue.set_desc_table_address(Some(qc.desc as u32), Some((qc.desc >> 32) as u32));
            queue.set_avail_ring_address(Some(qc.driver as u32), Some((qc.driver >> 32) as u32));
            queue.set_used_ring_address(Some(qc.device as u32), Some((qc.device >> 32) as u32));
            queue.set_event_idx(event_idx);
            queue.set_ready(true);
            if !queue.is_valid(self.mem.as_ref()) {
                return Err(invalid());
            }
            if restoring {
                let used = queue
                    .used_idx(self.mem.as_ref(), Ordering::Acquire)
                    .map_err(|_| invalid())?;
                queue.set_next_avail(used.0);
                queue.set_next_used(used.0);
            }
            let notify = self.notify[index]
                .try_clone()
                .map_err(|e| VirtioDeviceError::Backend(Box::new(e)))?;
            queues.push(ActivatedQueue {
                index,
                queue,
                notify,
            });
        }
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        self.device.activate(self.mem.clone(), queues, interrupt)?;
        self.activated = true;
        Ok(())
    }

    /// What writing 0 to the device status does: the device stops and
    /// every transport register returns to its initial value (MSI-X,
    /// which belongs to the PCI function, is kept).
    fn reset_device(&mut self) {
        if let Err(e) = self.device.reset() {
            log::error!("{}: device reset failed: {e}", self.id);
        }
        self.activated = false;
        self.common.reset();
        self.interrupt.set_isr(0);
        self.sync_vectors();
        // Drop kicks that were not consumed.
        for evt in &self.notify {
            let _ = evt.read();
        }
    }

    /// Serves a read of the PCI access window's data register.
    fn pci_cfg_read(&mut self) -> u32 {
        let cap = self.caps.pci_cfg;
        let (offset, len) = self.pci_cfg_window();
        let mut bytes = [0u8; 4];
        if let Some(len) = len {
            self.bar_read(offset, &mut bytes[..len]);
        }
        let value = u32::from_le_bytes(bytes);
        // The register is only ever read through here.
        let _ = self.config.set_reg((cap + CAP_PCI_CFG_DATA) / 4, value);
        value
    }

    /// Serves a write of the PCI access window's data register.
    fn pci_cfg_write(&mut self) {
        let (offset, len) = self.pci_cfg_window();
        let value = self
            .config
            .read_reg((self.caps.pci_cfg + CAP_PCI_CFG_DATA) / 4);
        if let Some(len) = len {
            self.bar_write(offset, &value.to_le_bytes()[..len]);
        }
    }

    /// BAR offset and access length the window is set to; no length for
    /// a window on another BAR or of a length other than 1, 2 or 4.
    fn pci_cfg_window(&self) -> (u64, Option<usize>) {
        let cap = self.caps.pci_cfg;
        let bar = self.config.read_reg((cap + CAP_BAR) / 4) & 0xff;
        let offset = self.config.read_reg((cap + CAP_OFFSET) / 4);
        let length = self.config.read_reg((cap + CAP_LENGTH) / 4);
        let valid = bar == u32::from(VIRTIO_BAR) && matches!(length, 1 | 2 | 4);
        (u64::from(offset), valid.then_some(length as usize))
    }
}

/// The structure a BAR offset falls in, and the offset within it.
enum Region {
    Common(u64),
    Isr(u64),
    Device(u64),
    Notify(u64),
    MsixTable(u64),
    MsixPba(u64),
    None,
}

impl Region {
    fn of(offset: u64, layout: &BarLayout) -> Self {
        match offset {
            o if o < ISR_OFFSET => Self::Common(o - COMMON_OFFSET),
            o if o < DEVICE_OFFSET => Self::Isr(o - ISR_OFFSET),
            o if o < NOTIFY_OFFSET => Self::Device(o - DEVICE_OFFSET),
            o if o < MSIX_TABLE_OFFSET => Self::Notify(o - NOTIFY_OFFSET),
            o if o < layout.msix_pba_offset => Self::MsixTable(o - MSIX_TABLE_OFFSET),
            o if o < layout.bar_size => Self::MsixPba(o - layout.msix_pba_offset),
            _ => Self::None,
        }
    }
}

/// Adds the virtio and MSI-X capabilities and makes their driver-written
/// fields writable.
fn add_capabilities(
    config: &mut PciConfiguration,
    queues: usize,
    msix: &MsixConfig,
    layout: &BarLayout,
) -> Result<CapOffsets, PciConfigError> {
    let page = PAGE as u32;
    // Bounded by MAX_QUEUES.
    let notify_len = queues as u32 * NOTIFY_OFF_MULTIPLIER;
    let caps: [(u8, u32, u32, Option<u32>); 4] = [
        (CFG_TYPE_COMMON, COMMON_OFFSET as u32, page, None),
        (
            CFG_TYPE_NOTIFY,
            NOTIFY_OFFSET as u32,
            notify_len,
            Some(NOTIFY_OFF_MULTIPLIER),
        ),
        (CFG_TYPE_ISR, ISR_OFFSET as u32, page, None),
        (CFG_TYPE_DEVICE, DEVICE_OFFSET as u32, page, None),
    ];
    for (cfg_type, offset, length, extra) in caps {
        config.add_capability(CAP_ID_VENDOR, &cap_body(cfg_type, offset, length, extra))?;
    }
    let pci_cfg = config.add_capability(CAP_ID_VENDOR, &cap_body(CFG_TYPE_PCI, 0, 0, Some(0)))?;
    // bar, offset, length and data are the driver's to write.
    config.set_write_mask((pci_cfg + CAP_BAR) / 4, 0xff)?;
    config.set_write_mask((pci_cfg + CAP_OFFSET) / 4, u32::MAX)?;
    config.set_write_mask((pci_cfg + CAP_LENGTH) / 4, u32::MAX)?;
    config.set_write_mask((pci_cfg + CAP_PCI_CFG_DATA) / 4, u32::MAX)?;

    let body = msix.capability_body(
        VIRTIO_BAR,
        MSIX_TABLE_OFFSET as u32,
        VIRTIO_BAR,
        layout.msix_pba_offset as u32,
    );
    let msix_cap = config.add_capability(MSIX_CAP_ID, &body)?;
    config.set_write_mask(msix_cap / 4, MsixConfig::capability_write_mask())?;
    Ok(CapOffsets {
        msix: msix_cap,
        pci_cfg,
    })
}

impl PciDevice for VirtioPciDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn config_read(&mut self, reg_idx: usize) -> u32 {
        if reg_idx == (self.caps.pci_cfg + CAP_PCI_CFG_DATA) / 4 {
            return self.pci_cfg_read();
        }
        self.config.read_reg(reg_idx)
    }

    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write_reg(reg_idx, offset, data);
        if reg_idx == self.caps.msix / 4 {
            let control = (self.config.read_reg(reg_idx) >> 16) as u16;
            lock(self.interrupt.msix()).set_message_control(control);
        } else if reg_idx == (self.caps.pci_cfg + CAP_PCI_CFG_DATA) / 4 {
            self.pci_cfg_write();
        }
    }
}

impl MutDeviceMmio for VirtioPciDevice {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.bar_read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.bar_write(offset, data);
    }
}

impl Reset for VirtioPciDevice {
    /// A machine reset: the device is reset, and the function's
    /// configuration space and MSI-X return to their power-on values.
    fn reset(&mut self) {
        self.reset_device();
        self.interrupt.set_config_generation(0);
        lock(self.interrupt.msix()).reset();
        self.config.reset();
    }
}

impl Stateful for VirtioPciDevice {
    type State = VirtioPciState;
    type Error = VirtioPciError;

    fn save_state(&self) -> VirtioPciState {
        VirtioPciState {
            config: self.config.save_state(),
            common: self.common.save_state(),
            msix: lock(self.interrupt.msix()).save_state(),
            isr: self.interrupt.isr(),
            config_generation: self.interrupt.config_generation(),
            activated: self.activated,
        }
    }

    /// Restores into a device that has not been activated; a device saved
    /// active is activated again with its queues where the used rings in
    /// guest memory say they are.
    fn restore_state(&mut self, state: VirtioPciState) -> Result<(), VirtioPciError> {
        if self.activated {
            return Err(VirtioDeviceError::AlreadyActive.into());
        }
        let mut config = self.config.clone();
        config.restore_state(&state.config)?;
        let mut common = self.common.clone();
        common.restore_state(&state.common)?;
        lock(self.interrupt.msix()).restore_state(&state.msix)?;
        self.config = config;
        self.common = common;
        self.interrupt.set_isr(state.isr);
        self.interrupt
            .set_config_generation(state.config_generation);
        self.sync_vectors();
        if state.activated {
            self.activate(true)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for VirtioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("id", &self.id)
            .field("device_type", &self.device.device_type())
            .field("status", &self.common.status())
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
