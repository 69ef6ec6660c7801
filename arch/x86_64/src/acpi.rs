//! ACPI tables: RSDP, XSDT, FADT (with FACS), MADT, MCFG and a DSDT describing the PCI host
//! bridge, the legacy devices and the S5 sleep state.

use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable, EISAName, Interrupt, Name, IO};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::layout::{self, MemoryLayout};
use crate::GuestMemoryMmap;

const OEM_ID: [u8; 6] = *b"PETREL";
const OEM_TABLE_ID: [u8; 8] = *b"PETRELVM";
const OEM_REVISION: u32 = 1;

/// The platform facts the tables describe; the VMM fills it from its device layout.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// APIC IDs of the vCPUs present at boot.
    pub apic_ids: Vec<u32>,
    /// APIC IDs of possible but absent vCPUs (`maxcpus`), listed disabled but online-capable.
    pub hotpluggable_apic_ids: Vec<u32>,
    /// PM1a event block I/O port (4 bytes: status then enable).
    pub pm1a_evt: u16,
    /// PM1a control block I/O port (2 bytes).
    pub pm1a_cnt: u16,
    /// PM timer I/O port (4 bytes).
    pub pm_tmr: u16,
    /// SCI interrupt (ISA IRQ, level triggered).
    pub sci_irq: u8,
    /// `SLP_TYP` value that selects S5.
    pub s5_slp_typ: u8,
    /// `SLP_TYP` value that selects S3, if the platform supports suspend to RAM.
    pub s3_slp_typ: Option<u8>,
    /// Reset register I/O port and the value to write.
    pub reset: (u16, u8),
    /// Legacy devices: (PNP id, UID, io base, io length, ISA IRQ) for the DSDT.
    pub legacy_devices: Vec<LegacyDevice>,
}

/// A legacy ISA device the DSDT announces.
#[derive(Clone, Debug)]
pub struct LegacyDevice {
    /// ACPI name, four characters.
    pub name: &'static str,
    /// EISA id such as `PNP0501`.
    pub hid: &'static str,
    /// `_UID`.
    pub uid: u32,
    /// I/O port ranges as (base, length).
    pub io: Vec<(u16, u8)>,
    /// ISA IRQ.
    pub irq: u32,
}

/// Where each table went, for tests and diagnostics.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// The RSDP, which boot protocols hand to the kernel.
    pub rsdp: GuestAddress,
    /// Every table as (signature, address, length).
    pub tables: Vec<([u8; 4], u64, usize)>,
}

/// Offset of `firmware_waking_vector` in the FACS.
const FACS_WAKING_VECTOR: u64 = 12;

impl AcpiTables {
    /// Where the table with this signature is.
    pub fn address_of(&self, signature: &[u8; 4]) -> Option<GuestAddress> {
        self.tables
            .iter()
            .find(|t| &t.0 == signature)
            .map(|t| GuestAddress(t.1))
    }

    /// The real-mode address the guest asked to resume at after S3 (the FACS
    /// `firmware_waking_vector`), if it set one.
    pub fn waking_vector(&self, mem: &GuestMemoryMmap) -> Option<u32> {
        let facs = self.address_of(b"FACS")?;
        let vector: u32 = mem
            .read_obj(GuestAddress(facs.0 + FACS_WAKING_VECTOR))
            .ok()?;
        (vector != 0).then_some(vector)
    }
}

struct TableWriter<'a> {
    mem: &'a GuestMemoryMmap,
    next: u64,
    placed: Vec<([u8; 4], u64, usize)>,
}

impl TableWriter<'_> {
    fn place(&mut self, bytes: &[u8]) -> Result<u64, GuestMemoryError> {
        let addr = self.next;
        if addr + bytes.len() as u64 > layout::ACPI_END {
            return Err(GuestMemoryError::InvalidGuestAddress(GuestAddress(addr)));
        }
        self.mem.write_slice(bytes, GuestAddress(addr))?;
        let mut sig = [0u8; 4];
        sig.copy_from_slice(&bytes[..4]);
        self.placed.push((sig, addr, bytes.len()));
        self.next = (addr + bytes.len() as u64).next_multiple_of(16);
        Ok(addr)
    }
}

fn to_bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// Builds every table and writes them into the BIOS area below 1 MiB.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    mem_layout: &MemoryLayout,
    cfg: &AcpiConfig,
) -> Result<AcpiTables, GuestMemoryError> {
    // The RSDP goes first, at the start of the area that guests scan.
    let rsdp_addr = layout::ACPI_START.0;
    let mut w = TableWriter {
        mem,
        next: rsdp_addr + Rsdp::len() as u64,
        placed: Vec::new(),
    };
    w.next = w.next.next_multiple_of(64);

    let facs = w.place(&to_bytes(&FACS::new()))?;
    let dsdt = w.place(dsdt(mem_layout, cfg).as_slice())?;
    let fadt = w.place(&to_bytes(&fadt(cfg, facs, dsdt)))?;
    let madt = w.place(madt(cfg).as_slice())?;
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::ECAM_START, 0, 0, (layout::ECAM_BUSES - 1) as u8);
    let mcfg = w.place(&to_bytes(&mcfg))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for t in [fadt, madt, mcfg] {
        xsdt.add_entry(t);
    }
    let xsdt = w.place(&to_bytes(&xsdt))?;
    mem.write_slice(&to_bytes(&Rsdp::new(OEM_ID, xsdt)), GuestAddress(rsdp_addr))?;
    Ok(AcpiTables {
        rsdp: GuestAddress(rsdp_addr),
        tables: w.placed,
    })
}

fn io_gas(port: u16, bits: u8, access: AccessSize) -> GAS {
    GAS::new(GasSpace::SystemIo, bits, 0, access, u64::from(port))
}

fn fadt(cfg: &AcpiConfig, facs: u64, dsdt: u64) -> acpi_tables::fadt::FADT {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs as u32)
        .dsdt_32(dsdt as u32)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    // FIRMWARE_CTRL alone, as QEMU does: ACPI wants X_FIRMWARE_CTRL zero when it is set, and
    // Linux lists the FACS twice otherwise.
    f.x_dsdt = dsdt.into();
    f.sci_int = u16::from(cfg.sci_irq).into();
    // No SMI command port: the platform is always in ACPI mode (SCI_EN reads as set).
    f.smi_cmd = 0.into();
    f.pm1a_evt_blk = u32::from(cfg.pm1a_evt).into();
    f.pm1a_cnt_blk = u32::from(cfg.pm1a_cnt).into();
    f.pm_tmr_blk = u32::from(cfg.pm_tmr).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    f.x_pm1a_evt_blk = io_gas(cfg.pm1a_evt, 32, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_gas(cfg.pm1a_cnt, 16, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_gas(cfg.pm_tmr, 32, AccessSize::DwordAccess);
    f.p_lvl2_lat = 101.into(); // > 100: C2 not supported
    f.p_lvl3_lat = 1001.into(); // > 1000: C3 not supported
    f.century = 0x32;
    // Legacy ISA devices exist; no VGA. The 8042 flag stays clear: the controller only
    // implements the reset command, so guests should not probe it for a keyboard.
    f.iapc_boot_arch = (0x1 | 0x4).into();
    f.reset_reg = io_gas(cfg.reset.0, 8, AccessSize::ByteAccess);
    f.reset_value = cfg.reset.1;
    f.finalize()
}

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    const LAPIC_ENABLED: u32 = 1;
    const LAPIC_ONLINE_CAPABLE: u32 = 2;
    let mut t = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.write_u32(36, layout::LAPIC_START as u32);
    t.write_u32(40, PCAT_COMPAT);
    let present = cfg.apic_ids.iter().map(|id| (*id, LAPIC_ENABLED));
    let absent = cfg
        .hotpluggable_apic_ids
        .iter()
        .map(|id| (*id, LAPIC_ONLINE_CAPABLE));
    for (uid, (apic_id, flags)) in present.chain(absent).enumerate() {
        let mut e = vec![0u8, 8, uid as u8, apic_id as u8];
        e.extend_from_slice(&flags.to_le_bytes());
        t.append_slice(&e);
    }
    let mut ioapic = vec![1u8, 12, 0, 0];
    ioapic.extend_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&ioapic);
    // The PIT's IRQ 0 arrives on IOAPIC pin 2; the SCI is level triggered, active high.
    let iso = |source: u8, gsi: u32, flags: u16| {
        let mut e = vec![2u8, 10, 0, source];
        e.extend_from_slice(&gsi.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e
    };
    t.append_slice(&iso(0, 2, 0));
    t.append_slice(&iso(cfg.sci_irq, u32::from(cfg.sci_irq), 0x000d));
    // NMI on LINT1 of every processor.
    t.append_slice(&[4u8, 6, 0xff, 0, 0, 1]);
    t.as_slice().to_vec()
}

fn dsdt(mem_layout: &MemoryLayout, cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(pci_host_bridge(mem_layout));
    for dev in &cfg.legacy_devices {
        legacy_device(dev, &mut body);
    }
    if let Some(s3) = &cfg.s3_slp_typ {
        let pkg = aml::Package::new(vec![s3, s3, &0u8, &0u8]);
        Name::new("_S3_".into(), &pkg).to_aml_bytes(&mut body);
    }
    let s5 = aml::Package::new(vec![&cfg.s5_slp_typ, &cfg.s5_slp_typ, &0u8, &0u8]);
    Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);
    let mut t = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.append_slice(&body);
    t.as_slice().to_vec()
}

fn pci_host_bridge(mem_layout: &MemoryLayout) -> Vec<u8> {
    let (mmio64_start, mmio64_len) = mem_layout.pci_mmio64;
    let bus = AddressSpace::new_bus_number(0u16, layout::ECAM_BUSES - 1);
    let cfg_io = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::new_io(0u16, 0xcf7, None);
    let io_high = AddressSpace::new_io(0xd00u16, 0xffff, None);
    let mmio32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO32_START as u32,
        (layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let mmio64 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio64_start,
        mmio64_start + mmio64_len - 1,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &cfg_io, &io_low, &io_high, &mmio32, &mmio64]);
    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    let children: Vec<Name> = vec![
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
        Name::new("_ADR".into(), &aml::ZERO),
        Name::new("_SEG".into(), &aml::ZERO),
        Name::new("_UID".into(), &aml::ZERO),
        Name::new("_BBN".into(), &aml::ZERO),
        Name::new("_CRS".into(), &crs),
    ];
    let refs: Vec<&dyn Aml> = children.iter().map(|n| n as &dyn Aml).collect();
    to_bytes(&aml::Device::new("_SB_.PCI0".into(), refs))
}

fn legacy_device(dev: &LegacyDevice, sink: &mut Vec<u8>) {
    let ios: Vec<IO> = dev
        .io
        .iter()
        .map(|&(base, len)| IO::new(base, base, 1, len))
        .collect();
    let irq = Interrupt::new(true, true, false, false, dev.irq);
    let mut res: Vec<&dyn Aml> = ios.iter().map(|i| i as &dyn Aml).collect();
    res.push(&irq);
    let crs = aml::ResourceTemplate::new(res);
    let hid = EISAName::new(dev.hid);
    let name = format!("_SB_.{}", dev.name);
    let children: Vec<Name> = vec![
        Name::new("_HID".into(), &hid),
        Name::new("_UID".into(), &dev.uid),
        Name::new("_CRS".into(), &crs),
    ];
    let refs: Vec<&dyn Aml> = children.iter().map(|n| n as &dyn Aml).collect();
    aml::Device::new(name.as_str().into(), refs).to_aml_bytes(sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform as petrel builds it, with COM1.
    pub(super) fn test_config(apic_ids: Vec<u32>, hotpluggable_apic_ids: Vec<u32>) -> AcpiConfig {
        AcpiConfig {
            apic_ids,
            hotpluggable_apic_ids,
            pm1a_evt: 0x600,
            pm1a_cnt: 0x604,
            pm_tmr: 0x608,
            sci_irq: 9,
            s5_slp_typ: 5,
            s3_slp_typ: Some(1),
            reset: (0xcf9, 6),
            legacy_devices: vec![LegacyDevice {
                name: "COM1",
                hid: "PNP0501",
                uid: 1,
                io: vec![(0x3f8, 8)],
                irq: 4,
            }],
        }
    }

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_have_valid_checksums_and_cpus() {
        let l = MemoryLayout::new(256 << 20, 40).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 256 << 20)]).unwrap();
        let cfg = test_config(vec![0, 1, 2], vec![3]);
        let t = write_tables(&mem, &l, &cfg).unwrap();
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, t.rsdp).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        for (sig, addr, len) in &t.tables {
            let mut b = vec![0u8; *len];
            mem.read_slice(&mut b, GuestAddress(*addr)).unwrap();
            if sig != b"FACS" {
                assert!(checksum_ok(&b), "{}", String::from_utf8_lossy(sig));
                assert_eq!(
                    u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
                    *len
                );
            }
            if sig == b"APIC" {
                let lapics = b[44..].chunks(1).count();
                assert!(lapics > 0);
                let enabled = count_lapics(&b[44..], 1);
                assert_eq!(enabled, 3);
                assert_eq!(count_lapics(&b[44..], 2), 1);
            }
            if sig == b"DSDT" {
                assert!(b.windows(4).any(|w| w == b"_S5_"));
                assert!(b.windows(4).any(|w| w == b"PCI0"));
            }
        }
        let sigs: Vec<_> = t.tables.iter().map(|t| t.0).collect();
        for want in [b"FACP", b"APIC", b"MCFG", b"DSDT", b"XSDT", b"FACS"] {
            assert!(sigs.contains(want));
        }
    }

    fn count_lapics(mut entries: &[u8], flags: u32) -> usize {
        let mut n = 0;
        while entries.len() >= 2 {
            let len = entries[1] as usize;
            if entries[0] == 0 && u32::from_le_bytes(entries[4..8].try_into().unwrap()) == flags {
                n += 1;
            }
            entries = &entries[len..];
        }
        n
    }
}

/// Checks our tables with ACPICA's own compiler: `iasl -d` must disassemble every table without
/// errors, as Linux's ACPICA will parse them. tests/run.sh installs acpica-tools.
#[cfg(test)]
mod iasl_tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn iasl_disassembles_every_table_cleanly() {
        let l = MemoryLayout::new(1 << 30, 40).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 30)]).unwrap();
        let mut cfg = tests::test_config(vec![0, 1], vec![2, 3]);
        cfg.legacy_devices.push(LegacyDevice {
            name: "RTC_",
            hid: "PNP0B00",
            uid: 0,
            io: vec![(0x70, 2)],
            irq: 8,
        });
        let t = write_tables(&mem, &l, &cfg).unwrap();
        let dir = std::env::temp_dir().join(format!("petrel-iasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (sig, addr, len) in &t.tables {
            let mut b = vec![0u8; *len];
            mem.read_slice(&mut b, GuestAddress(*addr)).unwrap();
            let name = String::from_utf8_lossy(sig).to_lowercase();
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, &b).unwrap();
            let out = Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .current_dir(&dir)
                .output()
                .expect("iasl (acpica-tools) must be installed: tests/run.sh installs it");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "iasl -d {name}: {text}");
            assert!(
                !text.contains("Error") && !text.contains("Warning"),
                "iasl -d {name}: {text}"
            );
        }
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for needle in [
            "PNP0A08",
            "_S3_",
            "_S5_",
            "PNP0501",
            "PNP0B00",
            "WordBusNumber",
        ] {
            assert!(
                dsl.contains(needle),
                "{needle} missing from the DSDT:\n{dsl}"
            );
        }
    }
}
