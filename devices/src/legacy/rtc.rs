//! MC146818 CMOS real-time clock and NVRAM.
//!
//! The VMM registers it at [`RTC_PORT_BASE`] with length [`RTC_PORT_LEN`]:
//! offset 0 (port 0x70) selects a CMOS byte, offset 1 (port 0x71) reads or
//! writes it. Bit 7 of the index is the chipset's NMI mask, which has no
//! meaning here and is dropped.
//!
//! Time registers are not stored: they are computed at read time from a wall
//! clock (the host's, UTC) plus the offset the guest established the last
//! time it set the clock, so guest time keeps running from what it set.
//! Registers A-D control the clock; bytes 0x0e-0x7f are battery-backed NVRAM
//! that survives [`Reset::reset`].
//!
//! Not emulated: periodic, alarm and update-ended interrupts. The enable bits
//! in register B (PIE, AIE, UIE) are stored, but IRQ 8 is never raised and
//! register C always reads 0. The divider bits of register A are stored but
//! do not stop the clock, and daylight saving (DSE) is ignored.

mod calendar;
mod clock;
mod encoding;
mod memory_size;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

pub use clock::{HostClock, WallClock};

use crate::{Reset, Stateful};
use calendar::DateTime;
use encoding::Format;

/// I/O port base of the RTC index register.
pub const RTC_PORT_BASE: u16 = 0x70;
/// Ports decoded from the base: index and data.
pub const RTC_PORT_LEN: u16 = 2;
/// Size of the CMOS RAM, clock registers included.
pub const CMOS_SIZE: usize = 128;

const INDEX_OFFSET: u64 = 0;
const DATA_OFFSET: u64 = 1;
const INDEX_MASK: u8 = 0x7f;

const REG_SECONDS: usize = 0x00;
const REG_MINUTES: usize = 0x02;
const REG_HOURS: usize = 0x04;
const REG_WEEKDAY: usize = 0x06;
const REG_DAY: usize = 0x07;
const REG_MONTH: usize = 0x08;
const REG_YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;

const TIME_REGISTERS: [usize; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_WEEKDAY,
    REG_DAY,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

const REG_A_UIP: u8 = 1 << 7;
/// 32.768 kHz time base, divide-by-1024 periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
const REG_B_SET: u8 = 1 << 7;
const REG_B_UIE: u8 = 1 << 4;
/// BCD, 24-hour mode, every interrupt disabled.
const REG_B_DEFAULT: u8 = 0x02;
const REG_D_VRT: u8 = 1 << 7;

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// UIP rises this long before each second boundary: 8 cycles of the
/// 32.768 kHz time base (244.140625 us), as on the real part.
const UIP_LEAD_NS: i128 = 244_141;

/// Errors from the RTC.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// A saved CMOS image does not have [`CMOS_SIZE`] bytes.
    #[error("cmos image has {0} bytes, expected 128")]
    CmosSize(usize),
}

/// Saved state of the RTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    /// The CMOS RAM. Time registers hold the guest's values only while the
    /// clock is halted for setting (register B SET); otherwise they are
    /// recomputed on each read.
    pub cmos: Vec<u8>,
    /// The selected CMOS index.
    pub index: u8,
    /// Guest time minus wall-clock time: whole seconds (rounded down).
    pub offset_secs: i64,
    /// Guest time minus wall-clock time: nanoseconds on top of `offset_secs`.
    pub offset_nanos: u32,
}

/// The CMOS RTC.
pub struct Rtc {
    cmos: [u8; CMOS_SIZE],
    index: u8,
    /// Guest time minus wall-clock time, in nanoseconds.
    offset_ns: i128,
    clock: Box<dyn WallClock>,
    on_change: Option<Box<dyn Fn(i64) + Send>>,
}

impl Rtc {
    /// Creates an RTC following the host clock in UTC.
    pub fn new() -> Self {
        Self::with_clock(Box::new(HostClock))
    }

    /// Creates an RTC following `clock`.
    pub fn with_clock(clock: Box<dyn WallClock>) -> Self {
        let mut rtc = Self {
            cmos: [0; CMOS_SIZE],
            index: 0,
            offset_ns: 0,
            clock,
            on_change: None,
        };
        rtc.reset_control_registers();
        rtc
    }

    /// Calls `notify` with the new offset in seconds (guest time minus host time, rounded
    /// down) each time the guest sets the clock: the VMM's RTC_CHANGE event.
    pub fn set_change_notifier(&mut self, notify: Box<dyn Fn(i64) + Send>) {
        self.on_change = Some(notify);
    }

    /// Records the guest's RAM size in the CMOS bytes firmware reads:
    /// `below_4g` bytes of RAM under 4 GiB and `above_4g` bytes above it.
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        for (index, value) in memory_size::memory_size_bytes(below_4g, above_4g) {
            self.cmos[index] = value;
        }
    }

    fn reset_control_registers(&mut self) {
        self.cmos[REG_A] = REG_A_DEFAULT;
        self.cmos[REG_B] = REG_B_DEFAULT;
        self.cmos[REG_C] = 0;
        self.cmos[REG_D] = REG_D_VRT;
    }

    fn format(&self) -> Format {
        Format::from_reg_b(self.cmos[REG_B])
    }

    fn halted(&self) -> bool {
        self.cmos[REG_B] & REG_B_SET != 0
    }

    fn guest_now_ns(&self) -> i128 {
        self.clock.now_ns() + self.offset_ns
    }

    fn update_in_progress(&self) -> bool {
        !self.halted()
            && self.guest_now_ns().rem_euclid(NANOS_PER_SEC) >= NANOS_PER_SEC - UIP_LEAD_NS
    }

    fn guest_now(&self) -> DateTime {
        let secs = self.guest_now_ns().div_euclid(NANOS_PER_SEC);
        DateTime::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    fn time_register(&self, index: usize, now: DateTime) -> u8 {
        let format = self.format();
        match index {
            REG_SECONDS => format.encode(now.second),
            REG_MINUTES => format.encode(now.minute),
            REG_HOURS => format.encode_hour(now.hour),
            REG_WEEKDAY => format.encode(now.weekday()),
            REG_DAY => format.encode(now.day),
            REG_MONTH => format.encode(now.month),
            REG_YEAR => format.encode(now.year.rem_euclid(100) as u8),
            // Clamped to what the register can show (years 0-9999).
            _ => format.encode(now.year.div_euclid(100).clamp(0, 99) as u8),
        }
    }

    /// Copies the running time into the CMOS time registers.
    fn latch_time(&mut self) {
        let now = self.guest_now();
        for index in TIME_REGISTERS {
            self.cmos[index] = self.time_register(index, now);
        }
    }

    /// Decodes the CMOS time registers in the current format.
    fn latched_time(&self) -> Option<DateTime> {
        let format = self.format();
        let decode = |index: usize, max: u8| format.decode(self.cmos[index]).filter(|v| *v <= max);
        let month = decode(REG_MONTH, 12).filter(|m| *m >= 1)?;
        let day = decode(REG_DAY, 31).filter(|d| *d >= 1)?;
        let year = decode(REG_YEAR, 99)?;
        let century = decode(REG_CENTURY, 99)?;
        Some(DateTime {
            year: i64::from(century) * 100 + i64::from(year),
            month,
            day,
            hour: format.decode_hour(self.cmos[REG_HOURS])?,
            minute: decode(REG_MINUTES, 59)?,
            second: decode(REG_SECONDS, 59)?,
        })
    }

    /// Restarts the clock from the time in the CMOS time registers, at the
    /// start of that second (the divider chain restarts on the real part).
    fn apply_latched_time(&mut self) {
        match self.latched_time() {
            Some(time) => {
                self.offset_ns = i128::from(time.to_unix()) * NANOS_PER_SEC - self.clock.now_ns();
                if let Some(notify) = &self.on_change {
                    notify(self.offset_ns.div_euclid(NANOS_PER_SEC) as i64);
                }
            }
            None => log::debug!("rtc: guest set an invalid time, clock unchanged"),
        }
    }

    fn write_reg_b(&mut self, mut value: u8) {
        let was_halted = self.halted();
        // Setting SET clears UIE on the real part.
        if value & REG_B_SET != 0 {
            value &= !REG_B_UIE;
        }
        match (was_halted, value & REG_B_SET != 0) {
            (false, true) => {
                // Latch in the format the guest is switching to, which is the
                // one it will read and write the registers in.
                self.cmos[REG_B] = value;
                self.latch_time();
            }
            (true, false) => {
                self.cmos[REG_B] = value;
                self.apply_latched_time();
            }
            _ => self.cmos[REG_B] = value,
        }
    }

    fn read_data(&mut self) -> u8 {
        let index = usize::from(self.index);
        match index {
            _ if TIME_REGISTERS.contains(&index) => {
                if self.halted() {
                    self.cmos[index]
                } else {
                    self.time_register(index, self.guest_now())
                }
            }
            REG_A => {
                let uip = if self.update_in_progress() {
                    REG_A_UIP
                } else {
                    0
                };
                self.cmos[REG_A] | uip
            }
            // Reading C acknowledges the flags it reports.
            REG_C => std::mem::take(&mut self.cmos[REG_C]),
            _ => self.cmos[index],
        }
    }

    fn write_data(&mut self, value: u8) {
        let index = usize::from(self.index);
        match index {
            _ if TIME_REGISTERS.contains(&index) => {
                if self.halted() {
                    self.cmos[index] = value;
                } else {
                    // A running clock takes the new field at once, keeping the
                    // others at their current values.
                    self.latch_time();
                    self.cmos[index] = value;
                    self.apply_latched_time();
                }
            }
            REG_A => self.cmos[REG_A] = value & !REG_A_UIP,
            REG_B => self.write_reg_b(value),
            REG_C | REG_D => {
                log::debug!("rtc: write of {value:#04x} to read-only register {index:#x}")
            }
            _ => self.cmos[index] = value,
        }
    }

    fn read_port(&mut self, offset: u64) -> u8 {
        match offset {
            DATA_OFFSET => self.read_data(),
            // The index register is write-only.
            INDEX_OFFSET => 0xff,
            _ => {
                log::debug!("rtc: read of unknown offset {offset:#x}");
                0xff
            }
        }
    }

    fn write_port(&mut self, offset: u64, value: u8) {
        match offset {
            INDEX_OFFSET => self.index = value & INDEX_MASK,
            DATA_OFFSET => self.write_data(value),
            _ => log::debug!("rtc: write of {value:#04x} to unknown offset {offset:#x}"),
        }
    }
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("offset_ns", &self.offset_ns)
            .finish_non_exhaustive()
    }
}

impl MutDevicePio for Rtc {
    // A word access (`out 0x70, ax`, used by some firmware to select and
    // write in one go) is a byte to each port in turn.
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_port(u64::from(offset) + i as u64);
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            self.write_port(u64::from(offset) + i as u64, *byte);
        }
    }
}

impl Stateful for Rtc {
    type State = RtcState;
    type Error = RtcError;

    fn save_state(&self) -> RtcState {
        let secs = self.offset_ns.div_euclid(NANOS_PER_SEC);
        RtcState {
            cmos: self.cmos.to_vec(),
            index: self.index,
            offset_secs: i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
            // Below one billion, so it fits.
            offset_nanos: self.offset_ns.rem_euclid(NANOS_PER_SEC) as u32,
        }
    }

    fn restore_state(&mut self, state: RtcState) -> Result<(), RtcError> {
        let cmos = <[u8; CMOS_SIZE]>::try_from(state.cmos.as_slice())
            .map_err(|_| RtcError::CmosSize(state.cmos.len()))?;
        self.cmos = cmos;
        self.index = state.index & INDEX_MASK;
        self.offset_ns = i128::from(state.offset_secs) * NANOS_PER_SEC
            + i128::from(state.offset_nanos).min(NANOS_PER_SEC - 1);
        Ok(())
    }
}

impl Reset for Rtc {
    // The clock and NVRAM are battery-backed: only the control registers
    // return to their power-on values.
    fn reset(&mut self) {
        self.reset_control_registers();
    }
}
