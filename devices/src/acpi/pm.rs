//! ACPI PM1 register block and PM timer (fixed hardware, as on PIIX4/ICH9).
//!
//! One PIO device of [`PM_BLOCK_LEN`] ports, registered at a base the VMM
//! chooses ([`PM_PORT_BASE`] by default) and described in the FADT:
//! PM1a_EVT_BLK = base + [`PM1_STS_OFFSET`] (length [`PM1_EVT_LEN`]),
//! PM1a_CNT_BLK = base + [`PM1_CNT_OFFSET`] (length [`PM1_CNT_LEN`]),
//! PM_TMR_BLK = base + [`PM_TMR_OFFSET`] (length [`PM_TMR_LEN`], 24-bit).
//!
//! SCI_EN starts set: the FADT has no SMI_CMD port, so the OS finds the
//! machine already in ACPI mode and never asks firmware to switch.
//!
//! The SCI (IRQ [`SCI_IRQ`], level) is asserted while SCI_EN is set and an
//! enabled status bit is set. The `sci` trigger fires on each rising edge of
//! that level; [`AcpiPm::sci_level`] gives the level itself for a VMM that
//! resamples. TMR_STS is never set (no timer-carry interrupt).

use std::io;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::Trigger;

use crate::{EventFdTrigger, Reset, Stateful};

/// Default I/O port base of the PM1 block.
pub const PM_PORT_BASE: u16 = 0x600;
/// Ports decoded from the base.
pub const PM_BLOCK_LEN: u16 = 0x10;
/// Offset of PM1a_STS (16 bits, write 1 to clear).
pub const PM1_STS_OFFSET: u16 = 0;
/// Offset of PM1a_EN (16 bits).
pub const PM1_EN_OFFSET: u16 = 2;
/// Offset of PM1a_CNT (16 bits).
pub const PM1_CNT_OFFSET: u16 = 4;
/// Offset of PM_TMR (32-bit read, 24 bits of count).
pub const PM_TMR_OFFSET: u16 = 8;
/// FADT PM1_EVT_LEN: status plus enable.
pub const PM1_EVT_LEN: u8 = 4;
/// FADT PM1_CNT_LEN.
pub const PM1_CNT_LEN: u8 = 2;
/// FADT PM_TMR_LEN.
pub const PM_TMR_LEN: u8 = 4;
/// ISA interrupt of the SCI.
pub const SCI_IRQ: u32 = 9;
/// The PM timer's frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SLP_TYP value of the S5 (soft off) state; the DSDT's `_S5` package must
/// carry the same value.
pub const S5_SLP_TYP: u8 = 5;
/// The SLP_TYP value for S3 (suspend to RAM); the DSDT's `_S3_` package must use it.
pub const S3_SLP_TYP: u8 = 1;
/// PM1_STS: WAK_STS, set when the platform wakes from a sleep state.
pub const PM1_WAK: u16 = 1 << 15;

/// PM1_STS/PM1_EN: power button pressed / power button event enabled.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1_CNT: SCI_EN, events raise the SCI.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1_CNT: SLP_EN, write-only, enter the state in SLP_TYP.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// PM1_CNT: shift of the 3-bit SLP_TYP field.
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;

// TMR, BM, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE, WAK.
const STS_BITS: u16 = 0xc731;
// TMR, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE_DIS.
const EN_BITS: u16 = 0x4721;
// Status bits that raise the SCI when enabled (same position in PM1_EN).
const SCI_SOURCES: u16 = 0x0721;
// SCI_EN, BM_RLD, SLP_TYP; GBL_RLS and SLP_EN are write-only.
const CNT_STORED_BITS: u16 = 0x1c03;
const SLP_TYP_MASK: u16 = 0x7;
const TIMER_MASK: u32 = 0x00ff_ffff;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Errors from the PM block.
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    /// Signalling the SCI failed.
    #[error("raise sci: {0}")]
    Sci(#[source] io::Error),
}

/// Saved state of the PM1 block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmState {
    /// PM1_STS.
    pub status: u16,
    /// PM1_EN.
    pub enable: u16,
    /// PM1_CNT (without the write-only bits).
    pub control: u16,
    /// PM_TMR value when saved; the timer continues from it.
    pub timer: u32,
}

/// The PM1 event and control registers and the PM timer.
#[derive(Debug)]
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    sci_asserted: bool,
    timer_start: Instant,
    /// Added to the ticks counted since `timer_start`, so a restored timer
    /// continues from its saved value.
    timer_offset: u32,
    sci: EventFdTrigger,
    shutdown: EventFdTrigger,
    suspend: Option<EventFdTrigger>,
}

impl AcpiPm {
    /// Creates the block. `sci` is the SCI line (IRQ 9); `shutdown` fires when
    /// the guest enters S5.
    pub fn new(sci: EventFdTrigger, shutdown: EventFdTrigger) -> Self {
        Self {
            status: 0,
            enable: 0,
            control: PM1_CNT_SCI_EN,
            sci_asserted: false,
            timer_start: Instant::now(),
            timer_offset: 0,
            sci,
            shutdown,
            suspend: None,
        }
    }

    /// Supports S3: `suspend` fires when the guest enters it. Without this, S3 requests are
    /// ignored (and the DSDT must not offer `_S3_`).
    pub fn set_suspend_trigger(&mut self, suspend: EventFdTrigger) {
        self.suspend = Some(suspend);
    }

    /// The platform woke from S3: WAK_STS tells the guest's resume path so.
    pub fn wake(&mut self) {
        self.status |= PM1_WAK;
    }

    /// Presses the power button: sets PWRBTN_STS and raises the SCI if the
    /// guest enabled power button events.
    ///
    /// Returns whether the guest had them enabled, i.e. whether it will
    /// notice; a VMM can fall back to a hard stop when it will not.
    pub fn press_power_button(&mut self) -> Result<bool, PmError> {
        self.status |= PM1_PWRBTN;
        self.update_sci().map_err(PmError::Sci)?;
        Ok(self.enable & PM1_PWRBTN != 0 && self.control & PM1_CNT_SCI_EN != 0)
    }

    /// Whether the SCI is asserted now.
    pub fn sci_level(&self) -> bool {
        self.control & PM1_CNT_SCI_EN != 0 && self.status & self.enable & SCI_SOURCES != 0
    }

    /// Current PM timer count.
    pub fn timer(&self) -> u32 {
        let ticks = self.timer_start.elapsed().as_nanos() * u128::from(PM_TIMER_HZ) / NANOS_PER_SEC;
        // Only the low 24 bits are kept, so truncating first is harmless.
        (ticks as u32).wrapping_add(self.timer_offset) & TIMER_MASK
    }

    fn update_sci(&mut self) -> io::Result<()> {
        let level = self.sci_level();
        let rising = level && !self.sci_asserted;
        self.sci_asserted = level;
        if rising {
            self.sci.trigger()?;
        }
        Ok(())
    }

    fn sleep(&mut self) {
        let slp_typ = (self.control >> PM1_CNT_SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if slp_typ == u16::from(S5_SLP_TYP) {
            log::info!("acpi: guest entered S5");
            if let Err(e) = self.shutdown.trigger() {
                log::error!("acpi: signalling shutdown failed: {e}");
            }
        } else if let (true, Some(suspend)) = (slp_typ == u16::from(S3_SLP_TYP), &self.suspend) {
            log::info!("acpi: guest entered S3");
            if let Err(e) = suspend.trigger() {
                log::error!("acpi: signalling suspend failed: {e}");
            }
        } else {
            log::info!("acpi: guest asked for unsupported sleep type {slp_typ}");
        }
    }

    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        let shift = 8 * (offset % 2);
        match offset {
            0..=1 => (self.status >> shift) as u8,
            2..=3 => (self.enable >> shift) as u8,
            4..=5 => (self.control >> shift) as u8,
            8..=11 => (timer >> (8 * (offset - 8))) as u8,
            _ => {
                log::debug!("acpi pm: read of unknown offset {offset:#x}");
                0xff
            }
        }
    }

    /// Applies one byte; returns whether it requested a sleep transition.
    fn write_byte(&mut self, offset: u64, value: u8) -> bool {
        let shift = 8 * (offset % 2);
        let bits = u16::from(value) << shift;
        let lane = 0xffu16 << shift;
        match offset {
            0..=1 => self.status &= !(bits & STS_BITS),
            2..=3 => self.enable = (self.enable & !lane) | (bits & EN_BITS),
            4..=5 => {
                self.control =
                    (self.control & !(lane & CNT_STORED_BITS)) | (bits & CNT_STORED_BITS);
                return bits & PM1_CNT_SLP_EN != 0;
            }
            _ => log::debug!("acpi pm: write of {value:#04x} to offset {offset:#x} ignored"),
        }
        false
    }
}

impl MutDevicePio for AcpiPm {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        // One timer sample per access so a 32-bit read cannot tear.
        let timer = self.timer();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_byte(u64::from(offset) + i as u64, timer);
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let mut sleep = false;
        for (i, byte) in data.iter().enumerate() {
            sleep |= self.write_byte(u64::from(offset) + i as u64, *byte);
        }
        if let Err(e) = self.update_sci() {
            log::error!("acpi pm: raising sci failed: {e}");
        }
        // After the whole access, so SLP_TYP written alongside SLP_EN counts.
        if sleep {
            self.sleep();
        }
    }
}

impl Stateful for AcpiPm {
    type State = PmState;
    type Error = PmError;

    fn save_state(&self) -> PmState {
        PmState {
            status: self.status,
            enable: self.enable,
            control: self.control,
            timer: self.timer(),
        }
    }

    fn restore_state(&mut self, state: PmState) -> Result<(), PmError> {
        self.status = state.status & STS_BITS;
        self.enable = state.enable & EN_BITS;
        self.control = state.control & CNT_STORED_BITS;
        // The interrupt controller's saved state already holds any SCI that
        // was pending, so restoring must not raise it again.
        self.sci_asserted = self.sci_level();
        self.timer_offset = 0;
        self.timer_offset = (state.timer & TIMER_MASK).wrapping_sub(self.timer());
        Ok(())
    }
}

impl Reset for AcpiPm {
    // The timer is free-running and not affected.
    fn reset(&mut self) {
        self.status = 0;
        self.enable = 0;
        self.control = PM1_CNT_SCI_EN;
        self.sci_asserted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BASE: PioAddress = PioAddress(PM_PORT_BASE);

    struct Fixture {
        pm: AcpiPm,
        sci: EventFdTrigger,
        shutdown: EventFdTrigger,
    }

    fn fixture() -> Fixture {
        let sci = EventFdTrigger::new().unwrap();
        let shutdown = EventFdTrigger::new().unwrap();
        let pm = AcpiPm::new(sci.try_clone().unwrap(), shutdown.try_clone().unwrap());
        Fixture { pm, sci, shutdown }
    }

    fn read16(pm: &mut AcpiPm, offset: u16) -> u16 {
        let mut b = [0; 2];
        pm.pio_read(BASE, offset, &mut b);
        u16::from_le_bytes(b)
    }

    fn write16(pm: &mut AcpiPm, offset: u16, v: u16) {
        pm.pio_write(BASE, offset, &v.to_le_bytes());
    }

    fn read32(pm: &mut AcpiPm, offset: u16) -> u32 {
        let mut b = [0; 4];
        pm.pio_read(BASE, offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn s5_fires_shutdown() {
        let mut f = fixture();
        let slp = u16::from(S5_SLP_TYP) << PM1_CNT_SLP_TYP_SHIFT;
        write16(&mut f.pm, PM1_CNT_OFFSET, PM1_CNT_SCI_EN | slp);
        assert!(f.shutdown.event_fd().read().is_err());
        write16(
            &mut f.pm,
            PM1_CNT_OFFSET,
            PM1_CNT_SCI_EN | slp | PM1_CNT_SLP_EN,
        );
        assert_eq!(f.shutdown.event_fd().read().unwrap(), 1);
        // SLP_EN is write-only.
        assert_eq!(read16(&mut f.pm, PM1_CNT_OFFSET), PM1_CNT_SCI_EN | slp);
    }

    #[test]
    fn s5_by_byte_write() {
        let mut f = fixture();
        let high = ((u16::from(S5_SLP_TYP) << PM1_CNT_SLP_TYP_SHIFT) | PM1_CNT_SLP_EN) >> 8;
        f.pm.pio_write(BASE, PM1_CNT_OFFSET + 1, &[high as u8]);
        assert_eq!(f.shutdown.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn other_sleep_types_do_not_shut_down() {
        let mut f = fixture();
        write16(
            &mut f.pm,
            PM1_CNT_OFFSET,
            (1 << PM1_CNT_SLP_TYP_SHIFT) | PM1_CNT_SLP_EN,
        );
        assert!(f.shutdown.event_fd().read().is_err());
    }

    #[test]
    fn s3_fires_suspend_and_wake_sets_wak_sts() {
        let mut f = fixture();
        let suspend = EventFdTrigger::new().unwrap();
        f.pm.set_suspend_trigger(suspend.try_clone().unwrap());
        let slp = u16::from(S3_SLP_TYP) << PM1_CNT_SLP_TYP_SHIFT;
        write16(
            &mut f.pm,
            PM1_CNT_OFFSET,
            PM1_CNT_SCI_EN | slp | PM1_CNT_SLP_EN,
        );
        assert_eq!(suspend.event_fd().read().unwrap(), 1);
        assert!(f.shutdown.event_fd().read().is_err());
        f.pm.wake();
        assert_eq!(read16(&mut f.pm, PM1_STS_OFFSET) & PM1_WAK, PM1_WAK);
        write16(&mut f.pm, PM1_STS_OFFSET, PM1_WAK);
        assert_eq!(read16(&mut f.pm, PM1_STS_OFFSET) & PM1_WAK, 0);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled() {
        let mut f = fixture();
        assert!(!f.pm.press_power_button().unwrap());
        assert!(f.sci.event_fd().read().is_err());
        assert_eq!(read16(&mut f.pm, PM1_STS_OFFSET), PM1_PWRBTN);

        // Enabling with the status pending asserts the SCI at once.
        write16(&mut f.pm, PM1_EN_OFFSET, PM1_PWRBTN);
        assert_eq!(f.sci.event_fd().read().unwrap(), 1);
        assert!(f.pm.sci_level());

        // Write 1 to clear.
        write16(&mut f.pm, PM1_STS_OFFSET, PM1_PWRBTN);
        assert_eq!(read16(&mut f.pm, PM1_STS_OFFSET), 0);
        assert!(!f.pm.sci_level());

        assert!(f.pm.press_power_button().unwrap());
        assert_eq!(f.sci.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn status_ignores_zero_writes() {
        let mut f = fixture();
        f.pm.press_power_button().unwrap();
        write16(&mut f.pm, PM1_STS_OFFSET, 0);
        assert_eq!(read16(&mut f.pm, PM1_STS_OFFSET), PM1_PWRBTN);
    }

    #[test]
    fn timer_counts_at_pm_frequency() {
        let mut f = fixture();
        let t0 = read32(&mut f.pm, PM_TMR_OFFSET);
        assert_eq!(t0 & !TIMER_MASK, 0);
        std::thread::sleep(Duration::from_millis(20));
        let t1 = read32(&mut f.pm, PM_TMR_OFFSET);
        let ticks = t1.wrapping_sub(t0) & TIMER_MASK;
        // At least 20 ms worth, and well under a second's worth.
        assert!(ticks >= 71_590, "{ticks}");
        assert!(ticks < 3_579_545, "{ticks}");
        // Writes are ignored.
        f.pm.pio_write(BASE, PM_TMR_OFFSET, &[0, 0, 0, 0]);
        assert!(read32(&mut f.pm, PM_TMR_OFFSET).wrapping_sub(t1) & TIMER_MASK < 3_579_545);
    }

    #[test]
    fn unknown_offsets_read_ones() {
        let mut f = fixture();
        assert_eq!(read16(&mut f.pm, 6), 0xffff);
        assert_eq!(read32(&mut f.pm, 12), 0xffff_ffff);
    }

    #[test]
    fn state_round_trip_and_reset() {
        let mut f = fixture();
        write16(&mut f.pm, PM1_EN_OFFSET, PM1_PWRBTN);
        f.pm.press_power_button().unwrap();
        let state = f.pm.save_state();

        let mut g = fixture();
        g.pm.restore_state(state).unwrap();
        assert!(g.sci.event_fd().read().is_err());
        assert!(g.pm.sci_level());
        assert_eq!(read16(&mut g.pm, PM1_EN_OFFSET), PM1_PWRBTN);
        let t = g.pm.timer();
        assert!(t.wrapping_sub(state.timer) & TIMER_MASK < 3_579_545);

        g.pm.reset();
        assert_eq!(read16(&mut g.pm, PM1_STS_OFFSET), 0);
        assert_eq!(read16(&mut g.pm, PM1_EN_OFFSET), 0);
        assert_eq!(read16(&mut g.pm, PM1_CNT_OFFSET), PM1_CNT_SCI_EN);
    }
}
