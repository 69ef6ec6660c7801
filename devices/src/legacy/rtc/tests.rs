//! Guest-visible behaviour of the RTC through its ports.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use vm_device::bus::PioAddress;
use vm_device::MutDevicePio;

use super::*;

/// 2023-11-14T22:13:20Z, a Tuesday.
const T0: i64 = 1_700_000_000;
const NS: i64 = 1_000_000_000;

#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    fn set(&self, ns: i64) {
        self.0.store(ns, Ordering::SeqCst);
    }
    fn advance(&self, ns: i64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl WallClock for FakeClock {
    fn now_ns(&self) -> i128 {
        i128::from(self.0.load(Ordering::SeqCst))
    }
}

fn rtc_at(ns: i64) -> (Rtc, FakeClock) {
    let clock = FakeClock(Arc::new(AtomicI64::new(ns)));
    (Rtc::with_clock(Box::new(clock.clone())), clock)
}

fn read(rtc: &mut Rtc, index: u8) -> u8 {
    rtc.pio_write(PioAddress(RTC_PORT_BASE), 0, &[index]);
    let mut b = [0];
    rtc.pio_read(PioAddress(RTC_PORT_BASE), 1, &mut b);
    b[0]
}

fn write(rtc: &mut Rtc, index: u8, value: u8) {
    rtc.pio_write(PioAddress(RTC_PORT_BASE), 0, &[index]);
    rtc.pio_write(PioAddress(RTC_PORT_BASE), 1, &[value]);
}

fn time(rtc: &mut Rtc) -> [u8; 8] {
    [0x32, 0x09, 0x08, 0x07, 0x06, 0x04, 0x02, 0x00].map(|i| read(rtc, i))
}

#[test]
fn defaults_to_bcd_24h() {
    let (mut rtc, _clock) = rtc_at(T0 * NS + NS / 2);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);
    assert_eq!(read(&mut rtc, 0x0b), 0x02);
    assert_eq!(read(&mut rtc, 0x0d), 0x80);
    // century, year, month, day, weekday, hour, minute, second
    assert_eq!(
        time(&mut rtc),
        [0x20, 0x23, 0x11, 0x14, 0x03, 0x22, 0x13, 0x20]
    );
}

#[test]
fn binary_mode() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x0b, 0x06);
    assert_eq!(time(&mut rtc), [20, 23, 11, 14, 3, 22, 13, 20]);
}

#[test]
fn twelve_hour_mode() {
    let (mut rtc, clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x0b, 0x00);
    assert_eq!(read(&mut rtc, 0x04), 0x90);
    write(&mut rtc, 0x0b, 0x04);
    assert_eq!(read(&mut rtc, 0x04), 0x8a);
    // Two hours later it is midnight: 12 AM.
    clock.advance((2 * 3600 - 13 * 60 - 20) * NS);
    write(&mut rtc, 0x0b, 0x00);
    assert_eq!(read(&mut rtc, 0x04), 0x12);
}

#[test]
fn guest_set_time_keeps_running_from_guest_value() {
    let (mut rtc, clock) = rtc_at(T0 * NS + 123_456_789);
    write(&mut rtc, 0x0b, 0x82);
    for (index, value) in [
        (0x00, 0x58),
        (0x02, 0x59),
        (0x04, 0x23),
        (0x07, 0x31),
        (0x08, 0x12),
        (0x09, 0x99),
        (0x32, 0x19),
    ] {
        write(&mut rtc, index, value);
    }
    // Halted: the registers hold what the guest wrote, time stands still.
    clock.advance(5 * NS);
    assert_eq!(read(&mut rtc, 0x00), 0x58);
    assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0);

    write(&mut rtc, 0x0b, 0x02);
    clock.advance(NS + 1);
    // 1999-12-31 23:59:58 + 1 s; a Friday.
    assert_eq!(
        time(&mut rtc),
        [0x19, 0x99, 0x12, 0x31, 0x06, 0x23, 0x59, 0x59]
    );
    clock.advance(61 * NS);
    assert_eq!(
        time(&mut rtc),
        [0x20, 0x00, 0x01, 0x01, 0x07, 0x00, 0x01, 0x00]
    );

    // The offset survives a restore onto an RTC with the same clock.
    let state = rtc.save_state();
    let mut other = Rtc::with_clock(Box::new(clock.clone()));
    other.restore_state(state).unwrap();
    assert_eq!(time(&mut other), time(&mut rtc));
}

#[test]
fn setting_uses_guest_format() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    // Binary, 12-hour, halted: 3 PM.
    write(&mut rtc, 0x0b, 0x84);
    write(&mut rtc, 0x04, 0x83);
    write(&mut rtc, 0x0b, 0x04);
    assert_eq!(read(&mut rtc, 0x04), 0x83);
    write(&mut rtc, 0x0b, 0x06);
    assert_eq!(read(&mut rtc, 0x04), 15);
}

#[test]
fn write_while_running_applies_immediately() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x02, 0x45);
    assert_eq!(read(&mut rtc, 0x02), 0x45);
    assert_eq!(read(&mut rtc, 0x04), 0x22);
    assert_eq!(read(&mut rtc, 0x00), 0x20);
}

#[test]
fn invalid_time_is_ignored() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x0b, 0x82);
    write(&mut rtc, 0x08, 0x13);
    write(&mut rtc, 0x00, 0xff);
    write(&mut rtc, 0x0b, 0x02);
    assert_eq!(
        time(&mut rtc),
        [0x20, 0x23, 0x11, 0x14, 0x03, 0x22, 0x13, 0x20]
    );
}

#[test]
fn uip_is_set_just_before_each_second() {
    let (mut rtc, clock) = rtc_at(T0 * NS);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);
    clock.set(T0 * NS + 999_700_000);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);
    clock.set(T0 * NS + 999_800_000);
    assert_eq!(read(&mut rtc, 0x0a), 0xa6);
    clock.set(T0 * NS + 999_999_999);
    assert_eq!(read(&mut rtc, 0x0a), 0xa6);
    clock.set((T0 + 1) * NS);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);

    // A guest spinning on UIP sees it clear within a second of host time.
    clock.set(T0 * NS + 999_800_000);
    let mut spins = 0;
    while read(&mut rtc, 0x0a) & 0x80 != 0 {
        clock.advance(10_000);
        spins += 1;
        assert!(spins < 100);
    }

    // Never set while the clock is halted.
    clock.set(T0 * NS + 999_900_000);
    write(&mut rtc, 0x0b, 0x82);
    assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0);
    // Setting the time restarts the second: no update is close.
    write(&mut rtc, 0x0b, 0x02);
    assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0);
}

#[test]
fn uip_is_not_writable() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x0a, 0xa6);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);
}

#[test]
fn status_registers() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    assert_eq!(read(&mut rtc, 0x0c), 0);
    write(&mut rtc, 0x0c, 0xff);
    write(&mut rtc, 0x0d, 0x00);
    assert_eq!(read(&mut rtc, 0x0c), 0);
    assert_eq!(read(&mut rtc, 0x0d), 0x80);
    // SET clears UIE.
    write(&mut rtc, 0x0b, 0x92);
    assert_eq!(read(&mut rtc, 0x0b), 0x82);
}

#[test]
fn nvram_persists_across_reset() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x40, 0xab);
    write(&mut rtc, 0x7f, 0xcd);
    write(&mut rtc, 0x0e, 0x01);
    write(&mut rtc, 0x02, 0x45);
    write(&mut rtc, 0x0a, 0x70);
    write(&mut rtc, 0x0b, 0x06);
    rtc.reset();
    assert_eq!(read(&mut rtc, 0x40), 0xab);
    assert_eq!(read(&mut rtc, 0x7f), 0xcd);
    assert_eq!(read(&mut rtc, 0x0e), 0x01);
    assert_eq!(read(&mut rtc, 0x0a), 0x26);
    assert_eq!(read(&mut rtc, 0x0b), 0x02);
    // The clock is battery-backed too.
    assert_eq!(read(&mut rtc, 0x02), 0x45);
}

#[test]
fn index_ignores_nmi_mask_and_reads_ones() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x50, 0x12);
    assert_eq!(read(&mut rtc, 0x80 | 0x50), 0x12);
    let mut b = [0];
    rtc.pio_read(PioAddress(RTC_PORT_BASE), 0, &mut b);
    assert_eq!(b, [0xff]);
}

#[test]
fn word_access_selects_and_writes() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    rtc.pio_write(PioAddress(RTC_PORT_BASE), 0, &[0x60, 0x5a]);
    assert_eq!(read(&mut rtc, 0x60), 0x5a);
}

#[test]
fn memory_size_is_visible() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    rtc.set_memory_size(512 << 20, 0);
    assert_eq!(read(&mut rtc, 0x15), 0x80);
    assert_eq!(read(&mut rtc, 0x16), 0x02);
    assert_eq!(read(&mut rtc, 0x35), 0x1f);
}

#[test]
fn restore_validates_and_round_trips() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    write(&mut rtc, 0x20, 0x99);
    write(&mut rtc, 0x02, 0x01);
    let state = rtc.save_state();
    assert!(state.offset_secs < 0);

    let (mut other, _c) = rtc_at(T0 * NS);
    other.restore_state(state.clone()).unwrap();
    assert_eq!(other.save_state(), state);
    assert_eq!(read(&mut other, 0x20), 0x99);

    let bad = RtcState {
        cmos: vec![0; 64],
        ..state
    };
    assert!(matches!(
        other.restore_state(bad),
        Err(RtcError::CmosSize(64))
    ));
    assert_eq!(read(&mut other, 0x20), 0x99);
}

#[test]
fn setting_the_clock_reports_the_new_offset() {
    let (mut rtc, _clock) = rtc_at(T0 * NS);
    let seen = Arc::new(AtomicI64::new(i64::MIN));
    let s = seen.clone();
    rtc.set_change_notifier(Box::new(move |offset| s.store(offset, Ordering::SeqCst)));
    // Reading or a SET without a new time changes nothing.
    let _ = time(&mut rtc);
    assert_eq!(seen.load(Ordering::SeqCst), i64::MIN);
    // One hour ahead: 2023-11-14 23:13:20 in BCD.
    write(&mut rtc, 0x0b, 0x82);
    write(&mut rtc, 0x04, 0x23);
    write(&mut rtc, 0x0b, 0x02);
    assert_eq!(seen.load(Ordering::SeqCst), 3600);
}
