//! What a PCI function implements to sit on the root bus.

use crate::Reset;

/// A PCI function as the root bus sees it: a configuration space reached by
/// dword index.
///
/// Functions typically keep a [`super::PciConfiguration`] and forward to it,
/// adding their own side effects (moving BAR mappings, enabling MSI-X).
/// [`Reset::reset`] is called when the machine resets.
pub trait PciDevice: Reset + Send {
    /// A short name for logs, e.g. `"host-bridge"`.
    fn id(&self) -> &str;

    /// Reads dword `reg_idx` of the configuration space; all-ones past its
    /// end.
    fn config_read(&mut self, reg_idx: usize) -> u32;

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` within dword
    /// `reg_idx`. The access never crosses the dword.
    fn config_write(&mut self, reg_idx: usize, offset: u64, data: &[u8]);
}
