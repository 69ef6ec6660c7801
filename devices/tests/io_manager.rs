//! The devices registered in a `vm_device` `IoManager` at their PC
//! addresses, driven through it as the VMM's exit handler would.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use petrel_devices::acpi::pm::{self, AcpiPm};
use petrel_devices::acpi::reset::{ResetControl, RESET_VALUE};
use petrel_devices::debug_port::{self, DebugPort};
use petrel_devices::legacy::{i8042, rtc, serial, Rtc, Serial, I8042};
use petrel_devices::pci::{config_io, ConfigIo, Ecam, PciRoot};
use petrel_devices::EventFdTrigger;
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};

const ECAM_BASE: u64 = 0xb000_0000;

struct Machine {
    io: IoManager,
    reset: EventFdTrigger,
    shutdown: EventFdTrigger,
    debug: Arc<Mutex<DebugPort>>,
}

fn pio(io: &mut IoManager, base: u16, len: u16, dev: Arc<dyn vm_device::DevicePio + Send + Sync>) {
    io.register_pio(PioRange::new(PioAddress(base), len).unwrap(), dev)
        .unwrap();
}

fn machine() -> Machine {
    let reset = EventFdTrigger::new().unwrap();
    let shutdown = EventFdTrigger::new().unwrap();
    let mut io = IoManager::new();

    let serial = Serial::new(EventFdTrigger::new().unwrap(), Box::new(io::sink()));
    pio(
        &mut io,
        serial::COM1_PORT_BASE,
        serial::COM_PORT_LEN,
        Arc::new(Mutex::new(serial)),
    );
    pio(
        &mut io,
        i8042::I8042_PORT_BASE,
        i8042::I8042_PORT_LEN,
        Arc::new(Mutex::new(I8042::new(reset.try_clone().unwrap()))),
    );
    pio(
        &mut io,
        rtc::RTC_PORT_BASE,
        rtc::RTC_PORT_LEN,
        Arc::new(Mutex::new(Rtc::new())),
    );
    let pm = AcpiPm::new(
        EventFdTrigger::new().unwrap(),
        shutdown.try_clone().unwrap(),
    );
    pio(
        &mut io,
        pm::PM_PORT_BASE,
        pm::PM_BLOCK_LEN,
        Arc::new(Mutex::new(pm)),
    );
    let debug = Arc::new(Mutex::new(DebugPort::new(Instant::now())));
    pio(
        &mut io,
        debug_port::DEBUG_PORT_BASE,
        debug_port::DEBUG_PORT_LEN,
        debug.clone(),
    );

    let root = Arc::new(Mutex::new(PciRoot::new()));
    let reset_control = Arc::new(Mutex::new(ResetControl::new(reset.try_clone().unwrap())));
    pio(
        &mut io,
        config_io::CONFIG_IO_PORT_BASE,
        config_io::CONFIG_IO_PORT_LEN,
        Arc::new(Mutex::new(ConfigIo::new(root.clone(), reset_control))),
    );
    let ecam = Ecam::new(root, 1).unwrap();
    io.register_mmio(
        MmioRange::new(MmioAddress(ECAM_BASE), ecam.size()).unwrap(),
        Arc::new(Mutex::new(ecam)),
    )
    .unwrap();

    Machine {
        io,
        reset,
        shutdown,
        debug,
    }
}

fn inb(io: &IoManager, port: u16) -> u8 {
    let mut b = [0];
    io.pio_read(PioAddress(port), &mut b).unwrap();
    b[0]
}

fn inl(io: &IoManager, port: u16) -> u32 {
    let mut b = [0; 4];
    io.pio_read(PioAddress(port), &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn outb(io: &IoManager, port: u16, v: u8) {
    io.pio_write(PioAddress(port), &[v]).unwrap();
}

fn outl(io: &IoManager, port: u16, v: u32) {
    io.pio_write(PioAddress(port), &v.to_le_bytes()).unwrap();
}

#[test]
fn pci_enumeration_through_both_paths() {
    let m = machine();
    outl(&m.io, 0xcf8, 0x8000_0000);
    assert_eq!(inl(&m.io, 0xcf8), 0x8000_0000);
    assert_eq!(inl(&m.io, 0xcfc), 0x0008_1b36);
    outl(&m.io, 0xcf8, 0x8000_0800);
    assert_eq!(inl(&m.io, 0xcfc), u32::MAX);

    let mut b = [0; 4];
    m.io.mmio_read(MmioAddress(ECAM_BASE), &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
}

#[test]
fn reset_paths() {
    let m = machine();
    outb(&m.io, 0xcf9, RESET_VALUE);
    assert_eq!(m.reset.event_fd().read().unwrap(), 1);
    outb(&m.io, 0x64, 0xfe);
    assert_eq!(m.reset.event_fd().read().unwrap(), 1);
}

#[test]
fn acpi_shutdown() {
    let m = machine();
    let cnt = (u16::from(pm::S5_SLP_TYP) << pm::PM1_CNT_SLP_TYP_SHIFT) | pm::PM1_CNT_SLP_EN;
    m.io.pio_write(
        PioAddress(pm::PM_PORT_BASE + pm::PM1_CNT_OFFSET),
        &cnt.to_le_bytes(),
    )
    .unwrap();
    assert_eq!(m.shutdown.event_fd().read().unwrap(), 1);
}

#[test]
fn legacy_ports() {
    let m = machine();
    // Serial scratch register.
    outb(&m.io, 0x3ff, 0x5a);
    assert_eq!(inb(&m.io, 0x3ff), 0x5a);
    // RTC register D and NVRAM.
    outb(&m.io, 0x70, 0x0d);
    assert_eq!(inb(&m.io, 0x71), 0x80);
    outb(&m.io, 0x70, 0x40);
    outb(&m.io, 0x71, 0x12);
    assert_eq!(inb(&m.io, 0x71), 0x12);
    // Between the i8042's ports.
    assert_eq!(inb(&m.io, 0x62), 0xff);
    // Debug port.
    outb(&m.io, 0x402, 0x01);
    outb(&m.io, 0x403, 0x00);
    let debug = m.debug.lock().unwrap();
    assert_eq!(debug.last_progress_code().unwrap().code, 0x01);
    assert_eq!(debug.guest_status(), Some(0));
}
