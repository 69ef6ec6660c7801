//! Petrel's debug port: where guests report boot progress and their status.
//!
//! The VMM registers it at [`DEBUG_PORT_BASE`] with length
//! [`DEBUG_PORT_LEN`]. A byte written to offset 0 (port 0x402) is a progress
//! code, timestamped relative to the instant the VMM started; a byte written
//! to offset 1 (port 0x403) is the guest's status (an exit code, say).
//!
//! Reads return 0xff. Firmware that looks for QEMU's debugcon on 0x402
//! (SeaBIOS, OVMF) expects to read 0xe9 back, so it does not mistake this
//! port for a console and flood it with log text.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::{Reset, Stateful};

/// I/O port base of the debug port.
pub const DEBUG_PORT_BASE: u16 = 0x402;
/// Ports decoded from the base: progress code and guest status.
pub const DEBUG_PORT_LEN: u16 = 2;
/// Progress codes kept; older ones are dropped first.
pub const PROGRESS_HISTORY: usize = 256;

const PROGRESS_OFFSET: u64 = 0;
const STATUS_OFFSET: u64 = 1;

/// Errors from the debug port.
#[derive(Debug, thiserror::Error)]
pub enum DebugPortError {
    /// A saved history is longer than [`PROGRESS_HISTORY`].
    #[error("saved history has {0} codes, limit is 256")]
    HistoryTooLong(usize),
}

/// A progress code and when it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressCode {
    /// The byte the guest wrote.
    pub code: u8,
    /// Microseconds from the VMM's start to the write.
    pub micros: u64,
}

/// Saved state of the debug port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugPortState {
    /// Recorded progress codes, oldest first.
    pub progress: Vec<ProgressCode>,
    /// Last status the guest reported.
    pub guest_status: Option<u8>,
}

/// The debug port.
#[derive(Debug)]
pub struct DebugPort {
    start: Instant,
    progress: VecDeque<ProgressCode>,
    guest_status: Option<u8>,
}

impl DebugPort {
    /// Creates the port; progress timestamps count from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            progress: VecDeque::new(),
            guest_status: None,
        }
    }

    /// Recorded progress codes, oldest first.
    pub fn progress_codes(&self) -> impl Iterator<Item = &ProgressCode> + '_ {
        self.progress.iter()
    }

    /// The most recent progress code.
    pub fn last_progress_code(&self) -> Option<ProgressCode> {
        self.progress.back().copied()
    }

    /// The last status the guest reported, if any.
    pub fn guest_status(&self) -> Option<u8> {
        self.guest_status
    }

    fn record_progress(&mut self, code: u8) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        log::info!("debug port: code {code:#04x} at {micros} us");
        if self.progress.len() == PROGRESS_HISTORY {
            self.progress.pop_front();
        }
        self.progress.push_back(ProgressCode { code, micros });
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            PROGRESS_OFFSET => self.record_progress(value),
            STATUS_OFFSET => {
                log::info!("debug port: guest status {value:#04x}");
                self.guest_status = Some(value);
            }
            _ => log::debug!("debug port: write of {value:#04x} to unknown offset {offset:#x}"),
        }
    }
}

impl MutDevicePio for DebugPort {
    fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            self.write_byte(u64::from(offset) + i as u64, *byte);
        }
    }
}

impl Stateful for DebugPort {
    type State = DebugPortState;
    type Error = DebugPortError;

    fn save_state(&self) -> DebugPortState {
        DebugPortState {
            progress: self.progress.iter().copied().collect(),
            guest_status: self.guest_status,
        }
    }

    fn restore_state(&mut self, state: DebugPortState) -> Result<(), DebugPortError> {
        if state.progress.len() > PROGRESS_HISTORY {
            return Err(DebugPortError::HistoryTooLong(state.progress.len()));
        }
        self.progress = state.progress.into();
        self.guest_status = state.guest_status;
        Ok(())
    }
}

impl Reset for DebugPort {
    // The history is the VMM's timeline across reboots and is kept; the
    // status belongs to the boot that reported it.
    fn reset(&mut self) {
        self.guest_status = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BASE: PioAddress = PioAddress(DEBUG_PORT_BASE);

    #[test]
    fn records_codes_with_timestamps() {
        let start = Instant::now() - Duration::from_millis(5);
        let mut port = DebugPort::new(start);
        port.pio_write(BASE, 0, &[0x10]);
        port.pio_write(BASE, 0, &[0x20]);
        let codes: Vec<_> = port.progress_codes().copied().collect();
        assert_eq!(codes.len(), 2);
        assert_eq!(codes[0].code, 0x10);
        assert!(codes[0].micros >= 5_000);
        assert!(codes[1].micros >= codes[0].micros);
        assert_eq!(port.last_progress_code().unwrap().code, 0x20);
    }

    #[test]
    fn records_status() {
        let mut port = DebugPort::new(Instant::now());
        assert_eq!(port.guest_status(), None);
        port.pio_write(BASE, 1, &[0]);
        assert_eq!(port.guest_status(), Some(0));
        // A word write is a code then a status.
        port.pio_write(BASE, 0, &[0x33, 0x01]);
        assert_eq!(port.guest_status(), Some(1));
        assert_eq!(port.last_progress_code().unwrap().code, 0x33);
    }

    #[test]
    fn history_is_bounded() {
        let mut port = DebugPort::new(Instant::now());
        for i in 0..(PROGRESS_HISTORY + 10) {
            port.pio_write(BASE, 0, &[i as u8]);
        }
        assert_eq!(port.progress_codes().count(), PROGRESS_HISTORY);
        assert_eq!(port.progress_codes().next().unwrap().code, 10);
    }

    #[test]
    fn reads_return_ones() {
        let mut port = DebugPort::new(Instant::now());
        let mut b = [0; 2];
        port.pio_read(BASE, 0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }

    #[test]
    fn state_and_reset() {
        let mut port = DebugPort::new(Instant::now());
        port.pio_write(BASE, 0, &[0x42, 0x07]);
        let state = port.save_state();
        port.reset();
        assert_eq!(port.guest_status(), None);
        assert_eq!(port.progress_codes().count(), 1);

        let mut other = DebugPort::new(Instant::now());
        other.restore_state(state.clone()).unwrap();
        assert_eq!(other.save_state(), state);

        let long = DebugPortState {
            progress: vec![ProgressCode { code: 0, micros: 0 }; PROGRESS_HISTORY + 1],
            guest_status: None,
        };
        assert!(matches!(
            other.restore_state(long),
            Err(DebugPortError::HistoryTooLong(257))
        ));
    }
}
