//! The balloon's configuration space (`struct virtio_balloon_config`).

use serde::{Deserialize, Serialize};

use crate::virtio::read_config_space;

/// Length of the configuration space: up to `poison_val`, as QEMU exposes it while it
/// offers `VIRTIO_BALLOON_F_PAGE_POISON` (its default).
pub const CONFIG_LEN: usize = 16;

/// Offset of `num_pages`.
const NUM_PAGES: usize = 0;
/// Offset of `actual`.
const ACTUAL: usize = 4;
/// Offset of `free_page_hint_cmd_id`.
const FREE_PAGE_HINT_CMD_ID: usize = 8;
/// Offset of `poison_val`.
const POISON_VAL: usize = 12;

/// The configuration space, native values; [`Self::to_bytes`] gives the little-endian layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// Pages the host wants in the balloon (written by the device).
    pub num_pages: u32,
    /// Pages the driver has put in the balloon (written by the driver).
    pub actual: u32,
    /// The value the driver fills freed pages with (`VIRTIO_BALLOON_F_PAGE_POISON`).
    pub poison_val: u32,
}

impl BalloonConfig {
    /// The configuration space bytes. `free_page_hint_cmd_id` reads 0: free page hinting is
    /// not offered.
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        b[NUM_PAGES..NUM_PAGES + 4].copy_from_slice(&self.num_pages.to_le_bytes());
        b[ACTUAL..ACTUAL + 4].copy_from_slice(&self.actual.to_le_bytes());
        b[FREE_PAGE_HINT_CMD_ID..FREE_PAGE_HINT_CMD_ID + 4].copy_from_slice(&0u32.to_le_bytes());
        b[POISON_VAL..POISON_VAL + 4].copy_from_slice(&self.poison_val.to_le_bytes());
        b
    }

    /// Reads `data.len()` bytes at `offset`; bytes past the end read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.to_bytes(), offset, data);
    }

    /// Applies a driver write of `data` at `offset`, as QEMU's `virtio_balloon_set_config`
    /// does: the bytes land on the current layout, then `actual` (and, with `poison`,
    /// `poison_val`) are taken from it; writes to the device's fields change nothing.
    pub fn write(&mut self, offset: u64, data: &[u8], poison: bool) {
        let mut bytes = self.to_bytes();
        for (i, byte) in data.iter().enumerate() {
            let slot = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| bytes.get_mut(o));
            if let Some(slot) = slot {
                *slot = *byte;
            }
        }
        let word =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        self.actual = word(ACTUAL);
        self.poison_val = if poison { word(POISON_VAL) } else { 0 };
    }
}
