//! Where the transport's structures sit in BAR 0, and the vendor-specific
//! capabilities that tell the driver (virtio 1.x, 4.1.4).
//!
//! Everything lives in one 64-bit memory BAR, in 4 KiB pages like QEMU's
//! modern BAR, with the MSI-X table and PBA appended:
//!
//! | offset   | structure                                      |
//! |----------|------------------------------------------------|
//! | 0x0000   | common configuration                           |
//! | 0x1000   | ISR status                                     |
//! | 0x2000   | device configuration                           |
//! | 0x3000   | notifications, 4 bytes per queue               |
//! | 0x4000   | MSI-X table, whole pages                       |
//! | after it | MSI-X PBA, whole pages                         |
//!
//! The BAR size is that, rounded up to a power of two.

/// BAR holding every structure.
pub const VIRTIO_BAR: u8 = 0;
/// Page size of the layout.
pub const PAGE: u64 = 0x1000;
/// Offset of the common configuration.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Offset of the ISR status byte.
pub const ISR_OFFSET: u64 = 0x1000;
/// Offset of the device configuration.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Offset of the notification area.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Offset of the MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Most queues the notification page has room for.
pub const MAX_QUEUES: usize = (PAGE / NOTIFY_OFF_MULTIPLIER as u64) as usize;

/// Vendor-specific capability ID, used by every virtio structure.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// `cfg_type` of the common configuration.
pub const CFG_TYPE_COMMON: u8 = 1;
/// `cfg_type` of the notification area.
pub const CFG_TYPE_NOTIFY: u8 = 2;
/// `cfg_type` of the ISR status.
pub const CFG_TYPE_ISR: u8 = 3;
/// `cfg_type` of the device configuration.
pub const CFG_TYPE_DEVICE: u8 = 4;
/// `cfg_type` of the PCI configuration access window.
pub const CFG_TYPE_PCI: u8 = 5;

/// Offset of `bar` within a virtio capability.
pub const CAP_BAR: usize = 4;
/// Offset of `offset` within a virtio capability.
pub const CAP_OFFSET: usize = 8;
/// Offset of `length` within a virtio capability.
pub const CAP_LENGTH: usize = 12;
/// Offset of `pci_cfg_data` within the PCI configuration access
/// capability.
pub const CAP_PCI_CFG_DATA: usize = 16;

/// Where the structures of a device with a given queue and vector count
/// sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarLayout {
    /// Offset of the MSI-X PBA.
    pub msix_pba_offset: u64,
    /// Size of BAR 0.
    pub bar_size: u64,
}

impl BarLayout {
    /// Layout for `msix_table_size` bytes of table and `msix_pba_size`
    /// bytes of PBA.
    pub fn new(msix_table_size: u64, msix_pba_size: u64) -> Self {
        let msix_pba_offset = MSIX_TABLE_OFFSET + msix_table_size.next_multiple_of(PAGE);
        let end = msix_pba_offset + msix_pba_size.next_multiple_of(PAGE);
        Self {
            msix_pba_offset,
            bar_size: end.next_power_of_two(),
        }
    }
}

/// Bytes of a virtio capability after its ID and next pointer:
/// `cap_len`, `cfg_type`, `bar`, `id`, padding, `offset`, `length`, then
/// `extra` (the notify multiplier, or the PCI access window's data).
pub fn cap_body(cfg_type: u8, offset: u32, length: u32, extra: Option<u32>) -> Vec<u8> {
    let cap_len: u8 = if extra.is_some() { 20 } else { 16 };
    let mut body = vec![cap_len, cfg_type, VIRTIO_BAR, 0, 0, 0];
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    if let Some(extra) = extra {
        body.extend_from_slice(&extra.to_le_bytes());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes() {
        let small = BarLayout::new(3 * 16, 8);
        assert_eq!(small.msix_pba_offset, 0x5000);
        assert_eq!(small.bar_size, 0x8000);
        let big = BarLayout::new(1025 * 16, 17 * 8);
        assert_eq!(big.msix_pba_offset, 0x9000);
        assert_eq!(big.bar_size, 0x10000);
    }

    #[test]
    fn cap_bytes() {
        assert_eq!(
            cap_body(CFG_TYPE_NOTIFY, 0x3000, 0x1000, Some(4)),
            [20, 2, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0x10, 0, 0, 4, 0, 0, 0]
        );
        assert_eq!(cap_body(CFG_TYPE_ISR, 0x1000, 1, None).len(), 14);
    }
}
