//! How a device signals its driver.

use std::io;

/// What a device signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device configuration space changed.
    Config,
    /// Queue `n` has new used buffers.
    Queue(u16),
}

/// The transport's interrupt path, handed to a device on activation.
///
/// With MSI-X enabled it sends the vector the driver assigned to the queue
/// (or to configuration changes), nothing if it assigned none; otherwise it
/// sets the matching ISR bit and asserts INTx.
pub trait VirtioInterrupt: Send + Sync {
    /// Signals `int_type` to the driver.
    fn trigger(&self, int_type: VirtioInterruptType) -> io::Result<()>;
}
