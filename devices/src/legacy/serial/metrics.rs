//! Counters and notifications fed by the UART emulation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use vm_superio::serial::SerialEvents;
use vm_superio::Trigger;

use crate::EventFdTrigger;

/// Counters of UART activity, plus an optional notification when the guest
/// has drained the receive FIFO.
///
/// The notification is what lets the VMM feed input larger than the FIFO:
/// it enqueues what fits, keeps the rest, and enqueues more when the fd
/// fires instead of polling.
#[derive(Debug, Default)]
pub struct SerialMetrics {
    tx_bytes: AtomicU64,
    tx_lost_bytes: AtomicU64,
    rx_reads: AtomicU64,
    input_drained: OnceLock<EventFdTrigger>,
}

impl SerialMetrics {
    /// Bytes the guest transmitted that reached the output stream.
    pub fn tx_bytes(&self) -> u64 {
        self.tx_bytes.load(Ordering::Relaxed)
    }

    /// Bytes the guest transmitted that the output stream refused.
    pub fn tx_lost_bytes(&self) -> u64 {
        self.tx_lost_bytes.load(Ordering::Relaxed)
    }

    /// Reads of the receive buffer register by the guest.
    pub fn rx_reads(&self) -> u64 {
        self.rx_reads.load(Ordering::Relaxed)
    }

    /// Installs the trigger fired whenever a guest read leaves the receive
    /// FIFO empty. Only one can be installed; a second one is handed back.
    pub fn set_input_drained(&self, trigger: EventFdTrigger) -> Result<(), EventFdTrigger> {
        self.input_drained.set(trigger)
    }
}

impl SerialEvents for SerialMetrics {
    fn buffer_read(&self) {
        self.rx_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn out_byte(&self) {
        self.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.tx_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {
        if let Some(trigger) = self.input_drained.get() {
            if let Err(e) = trigger.trigger() {
                log::warn!("serial: input drained notification failed: {e}");
            }
        }
    }
}
