//! Guest-visible behaviour of a configuration space.

use super::*;

fn header() -> PciHeader {
    PciHeader {
        vendor_id: 0x1af4,
        device_id: 0x1041,
        revision: 1,
        class: 0x02,
        subclass: 0x00,
        prog_if: 0x00,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x1100,
        multifunction: false,
        interrupt_pin: 1,
    }
}

fn config() -> PciConfiguration {
    PciConfiguration::new(&header(), ConfigSpaceSize::Pci)
}

fn write32(c: &mut PciConfiguration, reg: usize, v: u32) {
    c.write_reg(reg, 0, &v.to_le_bytes());
}

#[test]
fn header_fields() {
    let c = config();
    assert_eq!(c.read_reg(0), 0x1041_1af4);
    assert_eq!(c.read_reg(2), 0x0200_0001);
    assert_eq!(c.read_reg(3), 0);
    assert_eq!(c.read_reg(11), 0x1100_1af4);
    assert_eq!(c.read_reg(15), 0x0000_0100);
    assert_eq!(c.read_reg(64), u32::MAX);

    let mf = PciConfiguration::new(
        &PciHeader {
            multifunction: true,
            ..header()
        },
        ConfigSpaceSize::PciExpress,
    );
    assert_eq!(mf.read_reg(3), 0x0080_0000);
    assert_eq!(mf.dwords(), 1024);
    assert_eq!(mf.read_reg(1023), 0);
}

#[test]
fn read_only_fields_ignore_writes() {
    let mut c = config();
    write32(&mut c, 0, 0xdead_beef);
    write32(&mut c, 2, 0xffff_ffff);
    c.write_reg(15, 1, &[4]);
    assert_eq!(c.read_reg(0), 0x1041_1af4);
    assert_eq!(c.read_reg(2), 0x0200_0001);
    assert_eq!(c.read_reg(15) >> 8 & 0xff, 1);
}

#[test]
fn writable_fields() {
    let mut c = config();
    c.write_reg(1, 0, &0xffffu16.to_le_bytes());
    assert_eq!(c.command(), 0x0547);
    assert!(c.io_enabled() && c.memory_enabled() && c.bus_master_enabled());
    c.write_reg(1, 0, &[0x02]);
    assert_eq!(c.command(), 0x0502);
    c.write_reg(15, 0, &[11]);
    assert_eq!(c.read_reg(15) & 0xff, 11);
    c.write_reg(3, 0, &[0x10]);
    assert_eq!(c.read_reg(3), 0x10);
}

#[test]
fn status_errors_are_write_one_to_clear() {
    let mut c = config();
    c.add_capability(0x09, &[0, 0]).unwrap();
    let status = STATUS_CAPABILITIES as u32 | 0x2000 | 0x8000;
    let reg = c.read_reg(1);
    c.set_reg(1, reg | status << 16).unwrap();

    // Writing 0 clears nothing, writing the command word leaves status alone.
    c.write_reg(1, 2, &[0, 0]);
    c.write_reg(1, 0, &[0x06, 0x00]);
    assert_eq!(c.read_reg(1) >> 16, status);

    // Writing 1 clears that bit only; the capability bit is read-only.
    c.write_reg(1, 2, &0x2010u16.to_le_bytes());
    assert_eq!(c.read_reg(1) >> 16, status & !0x2000);
    // A dword write clears through the same mask.
    write32(&mut c, 1, 0xffff_0006);
    assert_eq!(c.read_reg(1), (STATUS_CAPABILITIES as u32) << 16 | 0x6);
}

#[test]
fn malformed_writes_are_dropped() {
    let mut c = config();
    c.write_reg(1, 3, &[0xff, 0xff]);
    c.write_reg(1, 0, &[0xff, 0xff, 0xff]);
    c.write_reg(1, 7, &[0xff]);
    c.write_reg(500, 0, &[0xff]);
    assert_eq!(c.command(), 0);
}

#[test]
fn bar_size_probe() {
    let mut c = config();
    c.add_bar(0, 0x1000, BarKind::Mem32, false).unwrap();
    c.add_bar(1, 0x100, BarKind::Io, false).unwrap();
    c.add_bar(2, 1 << 30, BarKind::Mem64, true).unwrap();
    c.add_bar(4, 1 << 34, BarKind::Mem64, false).unwrap();

    let before: Vec<u32> = (4..10).map(|r| c.read_reg(r)).collect();
    assert_eq!(before, [0x0, 0x1, 0xc, 0x0, 0x4, 0x0]);

    for reg in 4..10 {
        write32(&mut c, reg, u32::MAX);
    }
    let probed: Vec<u32> = (4..10).map(|r| c.read_reg(r)).collect();
    assert_eq!(
        probed,
        [
            0xffff_f000,
            0xffff_ff01,
            0xc000_000c,
            0xffff_ffff,
            0x0000_0004,
            0xffff_fffc
        ]
    );

    // Software derives the size from the probe: ~(mask & ~flags) + 1.
    assert_eq!(!(probed[0] & !0xf) + 1, 0x1000);
    assert_eq!(!(probed[1] & !0x3) + 1, 0x100);
    let mask64 = u64::from(probed[5]) << 32 | u64::from(probed[4] & !0xf);
    assert_eq!(!mask64 + 1, 1 << 34);

    // Unimplemented BAR and expansion ROM read 0 whatever is written.
    write32(&mut c, 10, u32::MAX);
    write32(&mut c, 12, u32::MAX);
    assert_eq!(c.read_reg(10), 0);
    assert_eq!(c.read_reg(12), 0);
}

#[test]
fn bar_programming() {
    let mut c = config();
    c.add_bar(0, 0x1000, BarKind::Mem32, false).unwrap();
    c.add_bar(2, 0x4000, BarKind::Mem64, true).unwrap();
    write32(&mut c, 4, 0xfebf_f123);
    write32(&mut c, 6, 0xe000_0000);
    write32(&mut c, 7, 0x80);
    assert_eq!(c.read_reg(4), 0xfebf_f000);
    let bars: Vec<PciBar> = c.bars().collect();
    assert_eq!(bars.len(), 2);
    assert_eq!(bars[0].address, 0xfebf_f000);
    assert_eq!(
        bars[1],
        PciBar {
            index: 2,
            kind: BarKind::Mem64,
            size: 0x4000,
            prefetchable: true,
            address: 0x80_e000_0000,
        }
    );
    assert!(c.bar(3).is_none());
}

#[test]
fn firmware_assignment_survives_reset() {
    let mut c = config();
    c.add_bar(0, 0x1000, BarKind::Mem32, false).unwrap();
    c.set_bar_address(0, 0xc000_0000).unwrap();
    c.set_interrupt_line(10);
    write32(&mut c, 4, 0xd000_0000);
    c.write_reg(1, 0, &[0x07]);
    c.write_reg(15, 0, &[5]);
    c.reset();
    assert_eq!(c.bar(0).unwrap().address, 0xc000_0000);
    assert_eq!(c.read_reg(15) & 0xff, 10);
    assert_eq!(c.command(), 0);
}

#[test]
fn bar_errors() {
    let mut c = config();
    assert_eq!(
        c.add_bar(6, 0x1000, BarKind::Mem32, false),
        Err(PciConfigError::BarIndex(6))
    );
    assert_eq!(
        c.add_bar(5, 0x1000, BarKind::Mem64, false),
        Err(PciConfigError::BarIndex(5))
    );
    assert_eq!(
        c.add_bar(0, 0x1800, BarKind::Mem32, false),
        Err(PciConfigError::BarSize(0x1800))
    );
    assert_eq!(
        c.add_bar(0, 0x100, BarKind::Io, true),
        Err(PciConfigError::PrefetchableIo)
    );
    c.add_bar(1, 0x1000, BarKind::Mem64, false).unwrap();
    assert_eq!(
        c.add_bar(2, 0x1000, BarKind::Mem32, false),
        Err(PciConfigError::BarInUse(2))
    );
    assert_eq!(
        c.add_bar(0, 0x1000, BarKind::Mem64, false),
        Err(PciConfigError::BarInUse(1))
    );
    assert_eq!(
        c.set_bar_address(1, 0x1800),
        Err(PciConfigError::BarAddress {
            index: 1,
            address: 0x1800
        })
    );
    assert_eq!(
        c.set_bar_address(2, 0x1000),
        Err(PciConfigError::NoSuchBar(2))
    );
}

#[test]
fn capability_chain() {
    let mut c = config();
    let first = c
        .add_capability(0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .unwrap();
    let second = c.add_capability(0x05, &[0xaa, 0xbb]).unwrap();
    assert_eq!(first, 0x40);
    assert_eq!(second, 0x4c);
    assert_eq!(c.read_reg(CAPABILITIES_POINTER / 4) & 0xff, 0x40);
    assert_eq!(c.read_reg(0x40 / 4), 0x0201_4c11);
    assert_eq!(c.read_reg(0x4c / 4), 0xbbaa_0005);
    assert_ne!(c.read_reg(1) >> 16 & u32::from(STATUS_CAPABILITIES), 0);

    // Capability fields are read-only until the device says otherwise.
    c.write_reg(0x4c / 4, 2, &[0]);
    assert_eq!(c.read_reg(0x4c / 4), 0xbbaa_0005);
    c.set_write_mask(0x4c / 4, 0x00ff_0000).unwrap();
    c.write_reg(0x4c / 4, 2, &[0, 0]);
    assert_eq!(c.read_reg(0x4c / 4), 0xbb00_0005);

    assert_eq!(
        c.add_capability(0x09, &[0; 200]),
        Err(PciConfigError::CapabilitySpace(202))
    );
    assert_eq!(c.set_write_mask(64, 0), Err(PciConfigError::Register(64)));
}

#[test]
fn state_round_trip() {
    let mut c = config();
    c.add_bar(0, 0x1000, BarKind::Mem32, false).unwrap();
    write32(&mut c, 4, 0xfebf_f000);
    c.write_reg(1, 0, &[0x02]);
    let state = c.save_state();

    let mut d = config();
    d.add_bar(0, 0x1000, BarKind::Mem32, false).unwrap();
    d.restore_state(&state).unwrap();
    assert_eq!(d.save_state(), state);
    assert!(d.memory_enabled());

    let mut e = PciConfiguration::new(&header(), ConfigSpaceSize::PciExpress);
    assert_eq!(
        e.restore_state(&state),
        Err(PciConfigError::StateSize {
            expected: 1024,
            got: 64
        })
    );
}
