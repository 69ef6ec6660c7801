//! MSI-X: the capability's message control, and the vector table and
//! pending bit array (PBA) a function exposes in one of its BARs.
//!
//! [`MsixConfig`] holds the guest-visible state. The function that owns it
//! routes accesses to its table and PBA ranges here, forwards writes to the
//! capability's message control register to
//! [`MsixConfig::set_message_control`], and calls [`MsixConfig::trigger`] to
//! raise a vector. Delivery goes through an [`MsiInterrupt`] the VMM
//! implements (KVM irq routing plus one irqfd per vector, typically).

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Capability ID of MSI-X.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Bytes of an MSI-X capability after its ID and next pointer.
pub const MSIX_CAP_BODY_LEN: usize = 10;
/// Bytes per vector table entry.
pub const MSIX_TABLE_ENTRY_SIZE: u64 = 16;
/// Most vectors a function can have.
pub const MSIX_MAX_VECTORS: u16 = 2048;

/// Message control: function mask.
pub const MSIX_CONTROL_MASKALL: u16 = 1 << 14;
/// Message control: MSI-X enable.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// Vector control: entry masked.
const ENTRY_MASKED: u32 = 1;

/// Delivery of MSI-X messages, implemented by the VMM.
pub trait MsiInterrupt: Send + Sync {
    /// Sends the message programmed in `vector` (the VMM signals the irqfd
    /// it routed to that vector).
    fn trigger(&self, vector: u16) -> io::Result<()>;

    /// Tells the VMM that `vector` now holds `address`/`data` and whether it
    /// may be delivered (`masked` covers the entry mask, the function mask
    /// and MSI-X being disabled), so it can update its irq routing.
    fn update_route(&self, vector: u16, address: u64, data: u32, masked: bool) -> io::Result<()>;
}

/// Errors building or restoring MSI-X state.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsixError {
    /// The vector count is 0 or above [`MSIX_MAX_VECTORS`].
    #[error("invalid msi-x vector count {0}")]
    VectorCount(u16),
    /// A saved table or PBA does not match this function's vector count.
    #[error("saved msi-x state has {got} vectors, expected {expected}")]
    StateSize {
        /// Vectors of this function.
        expected: usize,
        /// Vectors in the saved state.
        got: usize,
    },
}

/// One vector table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixTableEntry {
    /// Message address, low dword.
    pub address_lo: u32,
    /// Message address, high dword.
    pub address_hi: u32,
    /// Message data.
    pub data: u32,
    /// Vector control (bit 0: masked).
    pub vector_control: u32,
}

impl MsixTableEntry {
    /// The 64-bit message address.
    pub fn address(&self) -> u64 {
        u64::from(self.address_hi) << 32 | u64::from(self.address_lo)
    }

    /// Whether the entry's own mask bit is set.
    pub fn masked(&self) -> bool {
        self.vector_control & ENTRY_MASKED != 0
    }

    fn dword(&self, index: usize) -> u32 {
        match index {
            0 => self.address_lo,
            1 => self.address_hi,
            2 => self.data,
            _ => self.vector_control,
        }
    }

    fn set_dword(&mut self, index: usize, value: u32) {
        match index {
            0 => self.address_lo = value,
            1 => self.address_hi = value,
            2 => self.data = value,
            // Only the mask bit of vector control is writable.
            _ => self.vector_control = value & ENTRY_MASKED,
        }
    }
}

impl Default for MsixTableEntry {
    /// Entries come out of reset masked.
    fn default() -> Self {
        Self {
            address_lo: 0,
            address_hi: 0,
            data: 0,
            vector_control: ENTRY_MASKED,
        }
    }
}

/// Saved MSI-X state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    /// Vector table.
    pub table: Vec<MsixTableEntry>,
    /// Pending bits, 64 vectors per element.
    pub pba: Vec<u64>,
    /// MSI-X enable bit of message control.
    pub enabled: bool,
    /// Function mask bit of message control.
    pub function_masked: bool,
}

/// MSI-X state of one function.
pub struct MsixConfig {
    table: Vec<MsixTableEntry>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    interrupt: Arc<dyn MsiInterrupt>,
}

impl MsixConfig {
    /// Creates `vectors` masked, unprogrammed vectors delivering through
    /// `interrupt`.
    pub fn new(vectors: u16, interrupt: Arc<dyn MsiInterrupt>) -> Result<Self, MsixError> {
        if vectors == 0 || vectors > MSIX_MAX_VECTORS {
            return Err(MsixError::VectorCount(vectors));
        }
        let count = usize::from(vectors);
        Ok(Self {
            table: vec![MsixTableEntry::default(); count],
            pba: vec![0; count.div_ceil(64)],
            enabled: false,
            function_masked: false,
            interrupt,
        })
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        // Bounded by MSIX_MAX_VECTORS at construction.
        self.table.len() as u16
    }

    /// Bytes of BAR the table occupies.
    pub fn table_size(&self) -> u64 {
        self.table.len() as u64 * MSIX_TABLE_ENTRY_SIZE
    }

    /// Bytes of BAR the PBA occupies (whole qwords).
    pub fn pba_size(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// The capability bytes after ID and next pointer: message control (the
    /// table size, MSI-X disabled) and the table and PBA locations as BAR
    /// number and offset (offsets 8-byte aligned).
    pub fn capability_body(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> [u8; MSIX_CAP_BODY_LEN] {
        let control = self.vectors() - 1;
        let table = (table_offset & !0x7) | u32::from(table_bar & 0x7);
        let pba = (pba_offset & !0x7) | u32::from(pba_bar & 0x7);
        let mut body = [0u8; MSIX_CAP_BODY_LEN];
        body[0..2].copy_from_slice(&control.to_le_bytes());
        body[2..6].copy_from_slice(&table.to_le_bytes());
        body[6..10].copy_from_slice(&pba.to_le_bytes());
        body
    }

    /// The guest-writable bits of the capability's first dword (enable and
    /// function mask in message control).
    pub fn capability_write_mask() -> u32 {
        u32::from(MSIX_CONTROL_ENABLE | MSIX_CONTROL_MASKALL) << 16
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the function mask is set.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Vector table entry `vector`.
    pub fn entry(&self, vector: u16) -> Option<&MsixTableEntry> {
        self.table.get(usize::from(vector))
    }

    /// Whether `vector`'s pending bit is set.
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pba
            .get(v / 64)
            .is_some_and(|word| word & (1 << (v % 64)) != 0)
    }

    /// Applies the message control value the guest wrote: enable and
    /// function mask. Routes of every vector are updated when either
    /// changes, and vectors this unmasks deliver their pending message.
    pub fn set_message_control(&mut self, control: u16) {
        let enabled = control & MSIX_CONTROL_ENABLE != 0;
        let function_masked = control & MSIX_CONTROL_MASKALL != 0;
        if enabled == self.enabled && function_masked == self.function_masked {
            return;
        }
        self.enabled = enabled;
        self.function_masked = function_masked;
        for vector in 0..self.vectors() {
            self.update_route(vector);
            self.deliver_if_pending(vector);
        }
    }

    /// Raises `vector`: sends its message, or sets its pending bit while it
    /// or the function is masked. Does nothing (returns `Ok(false)`) when
    /// MSI-X is disabled or the vector does not exist, so the caller can
    /// fall back to INTx.
    pub fn trigger(&mut self, vector: u16) -> io::Result<bool> {
        let Some(entry) = self.entry(vector) else {
            return Ok(false);
        };
        if !self.enabled {
            return Ok(false);
        }
        if self.function_masked || entry.masked() {
            self.set_pending(vector, true);
            return Ok(true);
        }
        self.interrupt.trigger(vector)?;
        Ok(true)
    }

    /// Reads `data` (4 or 8 bytes, aligned) at byte `offset` of the table;
    /// all-ones for other accesses.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        let Some(index) = self.table_access(offset, data.len()) else {
            data.fill(0xff);
            return;
        };
        let entry = &self.table[index / 4];
        let low = entry.dword(index % 4);
        data[..4].copy_from_slice(&low.to_le_bytes());
        if data.len() == 8 {
            data[4..].copy_from_slice(&entry.dword(index % 4 + 1).to_le_bytes());
        }
    }

    /// Writes `data` (4 or 8 bytes, aligned) at byte `offset` of the table;
    /// other accesses are dropped. Updates the vector's route when the entry
    /// changes and delivers its pending message when it gets unmasked.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let Some(index) = self.table_access(offset, data.len()) else {
            log::debug!(
                "msi-x: dropped {}-byte table write at {offset:#x}",
                data.len()
            );
            return;
        };
        let vector = index / 4;
        let before = self.table[vector];
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let mut dword = [0u8; 4];
            dword.copy_from_slice(chunk);
            self.table[vector].set_dword(index % 4 + i, u32::from_le_bytes(dword));
        }
        if self.table[vector] != before {
            // Bounded by the vector count.
            let vector = vector as u16;
            self.update_route(vector);
            self.deliver_if_pending(vector);
        }
    }

    /// Reads `data` (4 or 8 bytes, aligned) at byte `offset` of the PBA;
    /// all-ones for other accesses. The PBA is read-only.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        let len = data.len() as u64;
        if !matches!(len, 4 | 8) || offset & (len - 1) != 0 || offset + len > self.pba_size() {
            data.fill(0xff);
            return;
        }
        let word = self.pba[(offset / 8) as usize];
        let bytes = word.to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&bytes[start..start + data.len()]);
    }

    /// Back to the power-on state: disabled, unmasked function, every entry
    /// masked and zero, nothing pending.
    pub fn reset(&mut self) {
        self.table.fill(MsixTableEntry::default());
        self.pba.fill(0);
        self.enabled = false;
        self.function_masked = false;
        for vector in 0..self.vectors() {
            self.update_route(vector);
        }
    }

    /// Captures the guest-visible state.
    pub fn save_state(&self) -> MsixState {
        MsixState {
            table: self.table.clone(),
            pba: self.pba.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Restores state saved from a function with as many vectors, and
    /// reprograms every route.
    pub fn restore_state(&mut self, state: &MsixState) -> Result<(), MsixError> {
        if state.table.len() != self.table.len() || state.pba.len() != self.pba.len() {
            return Err(MsixError::StateSize {
                expected: self.table.len(),
                got: state.table.len(),
            });
        }
        self.table.copy_from_slice(&state.table);
        self.pba.copy_from_slice(&state.pba);
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        for vector in 0..self.vectors() {
            self.update_route(vector);
        }
        Ok(())
    }

    /// Dword index into the table for an aligned 4- or 8-byte access.
    fn table_access(&self, offset: u64, len: usize) -> Option<usize> {
        let len64 = len as u64;
        if !matches!(len, 4 | 8) || offset & (len64 - 1) != 0 || offset + len64 > self.table_size()
        {
            return None;
        }
        Some((offset / 4) as usize)
    }

    fn masked(&self, vector: u16) -> bool {
        !self.enabled
            || self.function_masked
            || self.entry(vector).is_none_or(MsixTableEntry::masked)
    }

    fn update_route(&self, vector: u16) {
        let entry = self.table[usize::from(vector)];
        let masked = self.masked(vector);
        if let Err(e) = self
            .interrupt
            .update_route(vector, entry.address(), entry.data, masked)
        {
            log::warn!("msi-x: updating route of vector {vector}: {e}");
        }
    }

    fn deliver_if_pending(&mut self, vector: u16) {
        if !self.pending(vector) || self.masked(vector) {
            return;
        }
        self.set_pending(vector, false);
        if let Err(e) = self.interrupt.trigger(vector) {
            log::warn!("msi-x: delivering pending vector {vector}: {e}");
        }
    }

    fn set_pending(&mut self, vector: u16, pending: bool) {
        let v = usize::from(vector);
        let bit = 1u64 << (v % 64);
        if pending {
            self.pba[v / 64] |= bit;
        } else {
            self.pba[v / 64] &= !bit;
        }
    }
}

impl std::fmt::Debug for MsixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixConfig")
            .field("vectors", &self.table.len())
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests;
