//! The common configuration structure (virtio 1.x, 4.1.4.3): feature
//! negotiation, device status and queue setup.
//!
//! This file keeps the registers; what a device status write does to the
//! device is up to the transport, which gets it back from
//! [`CommonConfig::write`].

use serde::{Deserialize, Serialize};

use super::NO_VECTOR;
use crate::virtio::read_config_space;

/// Bytes of the structure.
pub const COMMON_CONFIG_LEN: u64 = 0x38;

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// What the driver programmed for one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Largest size the device supports.
    pub max_size: u16,
    /// Size chosen by the driver (starts at `max_size`).
    pub size: u16,
    /// Whether the driver enabled the queue.
    pub enabled: bool,
    /// MSI-X vector for used-buffer notifications.
    pub msix_vector: u16,
    /// Descriptor area address.
    pub desc: u64,
    /// Driver (available ring) area address.
    pub driver: u64,
    /// Device (used ring) area address.
    pub device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            msix_vector: NO_VECTOR,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// Saved common configuration (the configuration generation lives with the
/// interrupt state and is saved by the transport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonConfigState {
    /// Device feature bank selected.
    pub device_feature_select: u32,
    /// Driver feature bank selected.
    pub driver_feature_select: u32,
    /// Features the driver accepted so far.
    pub driver_features: u64,
    /// MSI-X vector for configuration changes.
    pub msix_config: u16,
    /// Device status.
    pub device_status: u8,
    /// Queue the queue registers refer to.
    pub queue_select: u16,
    /// Per-queue setup.
    pub queues: Vec<QueueConfig>,
}

/// Errors restoring the common configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommonConfigError {
    /// The saved queues do not match the device's.
    #[error("saved state has queues {got:?}, device has {expected:?}")]
    Queues {
        /// Maximum sizes of this device's queues.
        expected: Vec<u16>,
        /// Maximum sizes in the saved state.
        got: Vec<u16>,
    },
}

/// The common configuration registers of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonConfig {
    device_features: u64,
    msix_vectors: u16,
    state: CommonConfigState,
}

impl CommonConfig {
    /// Registers for a device offering `device_features` with queues of
    /// `queue_max_sizes`, and `msix_vectors` MSI-X vectors to assign.
    pub fn new(device_features: u64, queue_max_sizes: &[u16], msix_vectors: u16) -> Self {
        Self {
            device_features,
            msix_vectors,
            state: CommonConfigState {
                device_feature_select: 0,
                driver_feature_select: 0,
                driver_features: 0,
                msix_config: NO_VECTOR,
                device_status: 0,
                queue_select: 0,
                queues: queue_max_sizes
                    .iter()
                    .map(|&m| QueueConfig::new(m))
                    .collect(),
            },
        }
    }

    /// Features offered to the driver.
    pub fn device_features(&self) -> u64 {
        self.device_features
    }

    /// Features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.state.driver_features
    }

    /// Device status.
    pub fn status(&self) -> u8 {
        self.state.device_status
    }

    /// Sets the device status as the transport decided it.
    pub fn set_status(&mut self, status: u8) {
        self.state.device_status = status;
    }

    /// MSI-X vector for configuration changes.
    pub fn msix_config(&self) -> u16 {
        self.state.msix_config
    }

    /// Per-queue setup.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.state.queues
    }

    /// Reads `data` at `offset`; `config_generation` is the current
    /// generation. Bytes outside the structure read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8], config_generation: u8) {
        read_config_space(&self.snapshot(config_generation), offset, data);
    }

    /// Writes `data` at `offset`. Fields are written whole (64-bit
    /// addresses also as two 32-bit halves); other accesses and writes to
    /// read-only fields are dropped. Returns the value of a device status
    /// write, which the transport applies.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<u8> {
        let mut bytes = [0u8; 8];
        let len = data.len().min(8);
        bytes[..len].copy_from_slice(&data[..len]);
        let value = u64::from_le_bytes(bytes);
        let state = &mut self.state;
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => state.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => state.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) => self.write_driver_features(value as u32),
            (MSIX_CONFIG, 2) => state.msix_config = valid_vector(value as u16, self.msix_vectors),
            (DEVICE_STATUS, 1) => return Some(value as u8),
            (QUEUE_SELECT, 2) => state.queue_select = value as u16,
            (QUEUE_MSIX_VECTOR, 2) => {
                let vector = valid_vector(value as u16, self.msix_vectors);
                if let Some(q) = self.selected_queue_mut() {
                    q.msix_vector = vector;
                }
            }
            (QUEUE_SIZE, 2) => {
                let size = value as u16;
                if let Some(q) = self.selected_unenabled_queue_mut() {
                    if size.is_power_of_two() && size <= q.max_size {
                        q.size = size;
                    } else {
                        log::debug!("virtio-pci: invalid queue size {size}");
                    }
                }
            }
            (QUEUE_ENABLE, 2) => {
                if value == 1 {
                    if let Some(q) = self.selected_queue_mut() {
                        q.enabled = true;
                    }
                }
            }
            (QUEUE_DESC..=0x37, 4 | 8) if offset & 0x3 == 0 => {
                self.write_queue_address(offset, value, len)
            }
            _ => log::debug!(
                "virtio-pci: dropped {}-byte common config write at {offset:#x}",
                data.len()
            ),
        }
        None
    }

    /// Back to the state after a device reset.
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.state.queues.iter().map(|q| q.max_size).collect();
        *self = Self::new(self.device_features, &sizes, self.msix_vectors);
    }

    /// Captures the registers.
    pub fn save_state(&self) -> CommonConfigState {
        self.state.clone()
    }

    /// Restores registers saved from a device with the same queues.
    pub fn restore_state(&mut self, state: &CommonConfigState) -> Result<(), CommonConfigError> {
        let sizes = |queues: &[QueueConfig]| queues.iter().map(|q| q.max_size).collect::<Vec<_>>();
        if sizes(&state.queues) != sizes(&self.state.queues) {
            return Err(CommonConfigError::Queues {
                expected: sizes(&self.state.queues),
                got: sizes(&state.queues),
            });
        }
        self.state = state.clone();
        Ok(())
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.state.device_status & super::STATUS_FEATURES_OK != 0 {
            log::debug!("virtio-pci: driver features written after FEATURES_OK");
            return;
        }
        let shift = match self.state.driver_feature_select {
            0 => 0,
            1 => 32,
            _ => return,
        };
        let bank = 0xffff_ffffu64 << shift;
        let accepted = (u64::from(value) << shift) & self.device_features;
        self.state.driver_features = (self.state.driver_features & !bank) | accepted;
    }

    fn write_queue_address(&mut self, offset: u64, value: u64, len: usize) {
        let Some(q) = self.selected_unenabled_queue_mut() else {
            return;
        };
        let (field, base) = match offset {
            QUEUE_DESC.. if offset < QUEUE_DRIVER => (&mut q.desc, QUEUE_DESC),
            QUEUE_DRIVER.. if offset < QUEUE_DEVICE => (&mut q.driver, QUEUE_DRIVER),
            _ => (&mut q.device, QUEUE_DEVICE),
        };
        match (offset - base, len) {
            (0, 8) => *field = value,
            (0, 4) => *field = (*field & !0xffff_ffff) | (value & 0xffff_ffff),
            (4, 4) => *field = (*field & 0xffff_ffff) | (value << 32),
            _ => log::debug!("virtio-pci: dropped queue address write at {offset:#x}"),
        }
    }

    fn selected_queue_mut(&mut self) -> Option<&mut QueueConfig> {
        let index = usize::from(self.state.queue_select);
        self.state.queues.get_mut(index)
    }

    /// The selected queue if its setup may still change (it is not
    /// enabled yet).
    fn selected_unenabled_queue_mut(&mut self) -> Option<&mut QueueConfig> {
        self.selected_queue_mut().filter(|q| !q.enabled)
    }

    fn snapshot(&self, config_generation: u8) -> [u8; COMMON_CONFIG_LEN as usize] {
        let s = &self.state;
        let mut b = [0u8; COMMON_CONFIG_LEN as usize];
        let mut put = |offset: u64, bytes: &[u8]| {
            let at = offset as usize;
            b[at..at + bytes.len()].copy_from_slice(bytes);
        };
        let device_feature = match s.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        let driver_feature = match s.driver_feature_select {
            0 => s.driver_features as u32,
            1 => (s.driver_features >> 32) as u32,
            _ => 0,
        };
        // Bounded by the queue count the transport accepts.
        let num_queues = s.queues.len() as u16;
        put(
            DEVICE_FEATURE_SELECT,
            &s.device_feature_select.to_le_bytes(),
        );
        put(DEVICE_FEATURE, &device_feature.to_le_bytes());
        put(
            DRIVER_FEATURE_SELECT,
            &s.driver_feature_select.to_le_bytes(),
        );
        put(DRIVER_FEATURE, &driver_feature.to_le_bytes());
        put(MSIX_CONFIG, &s.msix_config.to_le_bytes());
        put(NUM_QUEUES, &num_queues.to_le_bytes());
        put(DEVICE_STATUS, &[s.device_status]);
        put(CONFIG_GENERATION, &[config_generation]);
        put(QUEUE_SELECT, &s.queue_select.to_le_bytes());
        // A queue index past the last reads as a queue of size 0.
        if let Some(q) = s.queues.get(usize::from(s.queue_select)) {
            put(QUEUE_SIZE, &q.size.to_le_bytes());
            put(QUEUE_MSIX_VECTOR, &q.msix_vector.to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
            // Each queue has its own notification address.
            put(QUEUE_NOTIFY_OFF, &s.queue_select.to_le_bytes());
            put(QUEUE_DESC, &q.desc.to_le_bytes());
            put(QUEUE_DRIVER, &q.driver.to_le_bytes());
            put(QUEUE_DEVICE, &q.device.to_le_bytes());
        } else {
            put(QUEUE_MSIX_VECTOR, &NO_VECTOR.to_le_bytes());
        }
        b
    }
}

/// `vector` if the function has it, else [`NO_VECTOR`] (which is how the
/// driver learns the assignment failed).
fn valid_vector(vector: u16, msix_vectors: u16) -> u16 {
    if vector < msix_vectors {
        vector
    } else {
        NO_VECTOR
    }
}
