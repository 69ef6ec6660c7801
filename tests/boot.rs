//! Boot the test guest and check what it found: CPUs, memory, ACPI, PCI, RTC.

use petrel_tests::{field, number, PetrelBuilder, DEFAULT_TIMEOUT};

fn petrel() -> PetrelBuilder {
    PetrelBuilder::new(env!("CARGO_BIN_EXE_petrel"))
}

#[test]
fn boots_to_the_marker_and_powers_off_cleanly() {
    let mut p = petrel().args(["-m", "256M"]).spawn();
    p.wait_for_line("petrel-guest: hello", DEFAULT_TIMEOUT);
    let (status, _) = p.wait_for_line("status: ", DEFAULT_TIMEOUT);
    assert_eq!(
        status,
        "status: 0",
        "guest self-checks failed:\n{}",
        p.console()
    );
    p.wait_for_line("poweroff: acpi", DEFAULT_TIMEOUT);
    p.expect_exit_code(0);
}

fn check_cpus(n: u32) {
    let mut p = petrel()
        .args(["-smp", &n.to_string(), "-m", "128M"])
        .spawn();
    let (line, _) = p.wait_for_line("smp: online=", DEFAULT_TIMEOUT);
    assert_eq!(
        line,
        format!("smp: online={n} expected={n}"),
        "console:\n{}",
        p.console()
    );
    let (madt, _) = p.wait_for_line("acpi: madt-cpus=", DEFAULT_TIMEOUT);
    assert_eq!(madt, format!("acpi: madt-cpus={n}"));
    p.expect_exit_code(0);
}

#[test]
fn one_vcpu_online() {
    check_cpus(1);
}

#[test]
fn two_vcpus_online() {
    check_cpus(2);
}

#[test]
fn eight_vcpus_online() {
    check_cpus(8);
}

/// Returns (usable bytes, top of usable RAM) the guest read from e820.
fn guest_memory(m: &str) -> (u64, u64, petrel_tests::Petrel) {
    let mut p = petrel().args(["-m", m]).spawn();
    let (line, _) = p.wait_for_line("e820: usable=", DEFAULT_TIMEOUT);
    let usable = number(field(&line, "usable").expect("usable field"));
    let top = number(field(&line, "top").expect("top field"));
    let (probe, _) = p.wait_for_line("mem: probe", DEFAULT_TIMEOUT);
    assert!(
        probe.starts_with("mem: probe ok"),
        "{probe}\n{}",
        p.console()
    );
    p.expect_exit_code(0);
    (usable, top, p)
}

/// Usable RAM is all of -m except the legacy hole between 640 KiB and 1 MiB (EBDA, BIOS area).
fn assert_usable(usable: u64, size: u64) {
    let hole = 0x10_0000 - 0x9_fc00;
    assert_eq!(usable, size - hole, "usable {usable:#x} for -m {size:#x}");
}

#[test]
fn memory_128m_seen_by_guest() {
    let (usable, top, _) = guest_memory("128M");
    assert_usable(usable, 128 << 20);
    assert_eq!(top, 128 << 20);
}

#[test]
fn memory_512m_seen_by_guest() {
    let (usable, top, _) = guest_memory("512M");
    assert_usable(usable, 512 << 20);
    assert_eq!(top, 512 << 20);
}

#[test]
fn memory_5g_reaches_above_4g() {
    let (usable, top, p) = guest_memory("5G");
    assert_usable(usable, 5 << 30);
    // 3 GiB below the PCI hole, the remaining 2 GiB from 4 GiB up.
    assert_eq!(top, (4 << 30) + (2 << 30));
    let regions = p.lines_with("e820: 0x");
    assert!(
        regions
            .iter()
            .any(|l| l.starts_with("e820: 0x100000000-") && l.ends_with("type=1")),
        "no usable region at 4 GiB: {regions:?}"
    );
}

#[test]
fn acpi_tables_and_pci_host_bridge_are_found() {
    let mut p = petrel().spawn();
    let (acpi, _) = p.wait_for_line("acpi: rsdp=", DEFAULT_TIMEOUT);
    for sig in ["FACP", "APIC", "MCFG"] {
        assert!(acpi.contains(sig), "{sig} missing from {acpi}");
    }
    let (regs, _) = p.wait_for_line("acpi: pm1a_cnt=", DEFAULT_TIMEOUT);
    assert_eq!(field(&regs, "pm1a_cnt"), Some("0x604"));
    assert_eq!(field(&regs, "hw_reduced"), Some("0"));
    let (s5, _) = p.wait_for_line("acpi: s5=", DEFAULT_TIMEOUT);
    assert_eq!(s5, "acpi: s5=5");
    let (mcfg, _) = p.wait_for_line("acpi: mcfg=", DEFAULT_TIMEOUT);
    assert!(mcfg.starts_with("acpi: mcfg=0xe0000000"), "{mcfg}");
    let (bridge, _) = p.wait_for_line("pci: 00:00.0", DEFAULT_TIMEOUT);
    assert!(bridge.contains("1b36:0008"), "{bridge}");
    let (count, _) = p.wait_for_line("pci: devices=", DEFAULT_TIMEOUT);
    assert_eq!(count, "pci: devices=1");
    p.expect_exit_code(0);
}

#[test]
fn rtc_gives_the_host_time() {
    let mut p = petrel().spawn();
    let (line, _) = p.wait_for_line("rtc: ", DEFAULT_TIMEOUT);
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest = number(field(&line, "epoch").expect("epoch field")) as i64;
    assert!(
        (guest - host).abs() <= 2,
        "guest {guest} host {host}: {line}"
    );
    p.expect_exit_code(0);
}

#[test]
fn kernel_command_line_reaches_the_guest() {
    let mut p = petrel().append("petrel.test=boot hello=world").spawn();
    let (line, _) = p.wait_for_line("cmdline: ", DEFAULT_TIMEOUT);
    assert_eq!(line, "cmdline: petrel.test=boot hello=world");
    p.expect_exit_code(0);
}
