//! The PCI transport's [`VirtioInterrupt`]: MSI-X vectors, or the ISR and
//! INTx when the driver did not enable MSI-X.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Mutex;

use vm_superio::Trigger;

use super::NO_VECTOR;
use crate::pci::msix::MsixConfig;
use crate::sync::lock;
use crate::virtio::{VirtioInterrupt, VirtioInterruptType};
use crate::EventFdTrigger;

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 0x1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 0x2;

/// Interrupt state shared between the transport (which the driver
/// programs) and the device's workers (which trigger).
#[derive(Debug)]
pub struct PciInterrupt {
    msix: Mutex<MsixConfig>,
    isr: AtomicU8,
    config_generation: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    intx: Option<EventFdTrigger>,
}

impl PciInterrupt {
    /// Interrupt state for `queues` queues delivering through `msix`, with
    /// `intx` as the fallback line (none: no INTx).
    pub(super) fn new(msix: MsixConfig, queues: usize, intx: Option<EventFdTrigger>) -> Self {
        Self {
            msix: Mutex::new(msix),
            isr: AtomicU8::new(0),
            config_generation: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            intx,
        }
    }

    /// The MSI-X state.
    pub(super) fn msix(&self) -> &Mutex<MsixConfig> {
        &self.msix
    }

    /// Records the vectors the driver assigned.
    pub(super) fn set_vectors(&self, config: u16, queues: impl Iterator<Item = u16>) {
        self.config_vector.store(config, Ordering::Release);
        for (slot, vector) in self.queue_vectors.iter().zip(queues) {
            slot.store(vector, Ordering::Release);
        }
    }

    /// The ISR value without clearing it.
    pub fn isr(&self) -> u8 {
        self.isr.load(Ordering::Acquire)
    }

    /// Reads and clears the ISR, as a driver read does (which also
    /// deasserts INTx).
    pub(super) fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }

    pub(super) fn set_isr(&self, value: u8) {
        self.isr.store(value, Ordering::Release);
    }

    /// Whether INTx should be asserted: an ISR bit is set. A VMM using a
    /// level-triggered irqfd with a resample fd re-raises the line on
    /// resample while this holds.
    pub fn intx_pending(&self) -> bool {
        self.isr() != 0
    }

    /// The INTx line, if the function has one.
    pub fn intx(&self) -> Option<&EventFdTrigger> {
        self.intx.as_ref()
    }

    /// The configuration generation counter.
    pub fn config_generation(&self) -> u8 {
        self.config_generation.load(Ordering::Acquire)
    }

    pub(super) fn set_config_generation(&self, value: u8) {
        self.config_generation.store(value, Ordering::Release);
    }

    fn vector(&self, int_type: VirtioInterruptType) -> u16 {
        match int_type {
            VirtioInterruptType::Config => self.config_vector.load(Ordering::Acquire),
            VirtioInterruptType::Queue(q) => self
                .queue_vectors
                .get(usize::from(q))
                .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire)),
        }
    }
}

impl VirtioInterrupt for PciInterrupt {
    /// A configuration change also bumps the configuration generation, so
    /// a driver reading the space across the change sees it moved.
    fn trigger(&self, int_type: VirtioInterruptType) -> io::Result<()> {
        if int_type == VirtioInterruptType::Config {
            self.config_generation.fetch_add(1, Ordering::AcqRel);
        }
        {
            let mut msix = lock(&self.msix);
            if msix.enabled() {
                let vector = self.vector(int_type);
                if vector != NO_VECTOR {
                    msix.trigger(vector)?;
                }
                return Ok(());
            }
        }
        let bit = match int_type {
            VirtioInterruptType::Config => ISR_CONFIG,
            VirtioInterruptType::Queue(_) => ISR_QUEUE,
        };
        self.isr.fetch_or(bit, Ordering::AcqRel);
        match &self.intx {
            Some(intx) => intx.trigger(),
            None => Ok(()),
        }
    }
}
