//! Guest page tables, read from guest RAM: the virtual-to-physical mappings a paging dump
//! describes, and single translations for `memsave`. 32-bit (with PSE), PAE, 4-level and
//! 5-level paging, with 4 KiB, 2 MiB, 4 MiB and 1 GiB pages.

use petrel_arch::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::cpu::CpuRegisters;
use super::error::DumpError;

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Bits 51:12 of an entry: the next table or a 4 KiB page.
const ADDR_4K: u64 = 0x000f_ffff_ffff_f000;
const ADDR_2M: u64 = 0x000f_ffff_ffe0_0000;
const ADDR_1G: u64 = 0x000f_ffff_c000_0000;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;

/// Most table entries one walk reads: guards against page tables that point at themselves
/// over and over (2^24 entries map 64 GiB in 4 KiB pages).
pub const WALK_BUDGET: u64 = 1 << 24;

/// How a vCPU translates virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Paging off: virtual = physical.
    Off,
    /// 32-bit paging; `pse`: 4 MiB pages allowed.
    Legacy {
        /// The page directory.
        cr3: u64,
        /// CR4.PSE.
        pse: bool,
    },
    /// PAE paging (32-bit virtual addresses, 4 PDPTEs).
    Pae {
        /// The PDPT (32-byte aligned).
        cr3: u64,
    },
    /// IA-32e paging, 4 or 5 levels.
    Long {
        /// The PML4 or PML5.
        cr3: u64,
        /// CR4.LA57.
        la57: bool,
    },
}

impl Paging {
    /// The paging mode of a vCPU.
    pub fn of(cpu: &CpuRegisters) -> Paging {
        let s = &cpu.sregs;
        if !cpu.paging() {
            Paging::Off
        } else if s.cr4 & CR4_PAE == 0 {
            Paging::Legacy {
                cr3: s.cr3 & 0xffff_f000,
                pse: s.cr4 & CR4_PSE != 0,
            }
        } else if !cpu.long_mode() {
            Paging::Pae {
                cr3: s.cr3 & 0xffff_ffe0,
            }
        } else {
            Paging::Long {
                cr3: s.cr3 & ADDR_4K,
                la57: s.cr4 & CR4_LA57 != 0,
            }
        }
    }
}

/// A run of virtual addresses mapped to contiguous guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First guest physical address.
    pub phys: u64,
    /// First virtual address.
    pub virt: u64,
    /// Bytes.
    pub len: u64,
}

/// Sign-extends `v` from bit `top` (47 or 56, as canonical addresses are; 63: unchanged).
fn canonical(v: u64, top: u32) -> u64 {
    let shift = 63 - top;
    (((v << shift) as i64) >> shift) as u64
}

/// Collects mappings in virtual order, clipped to RAM, joining contiguous runs.
struct Walker<'a> {
    mem: &'a GuestMemoryMmap,
    out: Vec<Mapping>,
    budget: u64,
    limit: u64,
}

impl Walker<'_> {
    /// Reads a table of `n` entries of `W` bytes; a table outside RAM reads as empty, as
    /// QEMU's unassigned reads do.
    fn table<const W: usize>(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, DumpError> {
        if self.budget < n as u64 {
            return Err(DumpError::TooManyMappings(self.limit));
        }
        self.budget -= n as u64;
        let mut raw = vec![0u8; n * W];
        if self.mem.read_slice(&mut raw, GuestAddress(addr)).is_err() {
            raw.fill(0);
        }
        Ok(raw
            .chunks_exact(W)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..W].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect())
    }

    /// A page of `size` bytes at `phys`, mapped at `virt`: the parts of it that are RAM.
    fn page(&mut self, phys: u64, virt: u64, size: u64) {
        for region in self.mem.iter() {
            let start = region.start_addr().0;
            let end = start + region.len();
            let lo = phys.max(start);
            let hi = (phys + size).min(end);
            if lo >= hi {
                continue;
            }
            let m = Mapping {
                phys: lo,
                virt: virt + (lo - phys),
                len: hi - lo,
            };
            match self.out.last_mut() {
                Some(last)
                    if last.phys + last.len == m.phys
                        && last.virt.wrapping_add(last.len) == m.virt
                        && m.phys != start =>
                {
                    last.len += m.len
                }
                _ => self.out.push(m),
            }
        }
    }

    /// A table of the 512-entry formats (PAE and IA-32e) at `level` (5: PML5 ... 1: page
    /// table) whose entry 0 maps `base`; `top` is the sign bit of virtual addresses.
    fn level(&mut self, table: u64, base: u64, level: u32, top: u32) -> Result<(), DumpError> {
        let shift = 12 + 9 * (level - 1);
        for (i, e) in self.table::<8>(table, 512)?.into_iter().enumerate() {
            if e & PRESENT == 0 {
                continue;
            }
            let virt = canonical(base | (i as u64) << shift, top);
            let large = match level {
                3 => Some(ADDR_1G),
                2 => Some(ADDR_2M),
                _ => None,
            };
            match large.filter(|_| e & PAGE_SIZE_BIT != 0) {
                Some(mask) => self.page(e & mask, virt, 1 << shift),
                None if level == 1 => self.page(e & ADDR_4K, virt, 1 << 12),
                None => self.level(e & ADDR_4K, virt, level - 1, top)?,
            }
        }
        Ok(())
    }

    fn pae(&mut self, table: u64) -> Result<(), DumpError> {
        for (i, e) in self.table::<8>(table, 4)?.into_iter().enumerate() {
            if e & PRESENT != 0 {
                self.level(e & ADDR_4K, (i as u64) << 30, 2, 63)?;
            }
        }
        Ok(())
    }

    fn legacy(&mut self, table: u64, pse: bool) -> Result<(), DumpError> {
        for (i, e) in self.table::<4>(table, 1024)?.into_iter().enumerate() {
            let virt = (i as u64) << 22;
            if e & PRESENT == 0 {
                continue;
            }
            if pse && e & PAGE_SIZE_BIT != 0 {
                self.page(pse_4m(e), virt, 1 << 22);
            } else {
                for (j, pte) in self
                    .table::<4>(e & 0xffff_f000, 1024)?
                    .into_iter()
                    .enumerate()
                {
                    if pte & PRESENT != 0 {
                        self.page(pte & 0xffff_f000, virt | (j as u64) << 12, 1 << 12);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The frame of a 4 MiB page: bits 31:22, and with PSE-36 bits 20:13 as bits 39:32.
fn pse_4m(pde: u64) -> u64 {
    (pde & 0xffc0_0000) | ((pde & 0x001f_e000) << 19)
}

/// The mappings `paging` gives to guest RAM, in virtual order, contiguous runs joined; a run
/// never crosses from one RAM region into another. At most `budget` table entries are read.
pub fn mappings(
    mem: &GuestMemoryMmap,
    paging: Paging,
    budget: u64,
) -> Result<Vec<Mapping>, DumpError> {
    let mut w = Walker {
        mem,
        out: Vec::new(),
        budget,
        limit: budget,
    };
    match paging {
        Paging::Off => {
            for region in mem.iter() {
                let start = region.start_addr().0;
                w.page(start, start, region.len());
            }
        }
        Paging::Legacy { cr3, pse } => w.legacy(cr3, pse)?,
        Paging::Pae { cr3 } => w.pae(cr3)?,
        Paging::Long { cr3, la57: false } => w.level(cr3, 0, 4, 47)?,
        Paging::Long { cr3, la57: true } => w.level(cr3, 0, 5, 56)?,
    }
    Ok(w.out)
}

/// Joins the mappings of several address spaces: overlapping or adjacent runs with the same
/// virtual-to-physical offset become one (never across a RAM region start, listed in
/// `region_starts`), and the result is ordered by physical address as QEMU orders it.
pub fn merge(mut all: Vec<Mapping>, region_starts: &[u64]) -> Vec<Mapping> {
    all.sort_by_key(|m| (m.virt.wrapping_sub(m.phys), m.phys));
    let mut out: Vec<Mapping> = Vec::with_capacity(all.len());
    for m in all {
        if let Some(last) = out.last_mut() {
            let same_offset = last.virt.wrapping_sub(last.phys) == m.virt.wrapping_sub(m.phys);
            let end = last.phys + last.len;
            if same_offset && m.phys <= end && !region_starts.contains(&m.phys) {
                last.len = last.len.max(m.phys + m.len - last.phys);
                continue;
            }
        }
        out.push(m);
    }
    out.sort_by_key(|m| (m.phys, m.virt));
    out
}

/// The mappings of every vCPU with paging on, from the first such vCPU (QEMU's
/// qemu_get_guest_memory_mapping); with none, virtual = physical.
pub fn guest_mappings(
    mem: &GuestMemoryMmap,
    cpus: &[CpuRegisters],
    regions: &[(u64, u64)],
) -> Result<Vec<Mapping>, DumpError> {
    let mut modes: Vec<Paging> = Vec::new();
    for c in cpus {
        let p = Paging::of(c);
        if p != Paging::Off && !modes.contains(&p) {
            modes.push(p);
        }
    }
    if modes.is_empty() {
        modes.push(Paging::Off);
    }
    let mut all = Vec::new();
    for p in modes {
        all.extend(mappings(mem, p, WALK_BUDGET)?);
    }
    let starts: Vec<u64> = regions.iter().map(|r| r.0).collect();
    Ok(merge(all, &starts))
}

fn entry(mem: &GuestMemoryMmap, addr: u64, wide: bool) -> Option<u64> {
    let e = if wide {
        mem.read_obj::<u64>(GuestAddress(addr)).ok()?
    } else {
        u64::from(mem.read_obj::<u32>(GuestAddress(addr)).ok()?)
    };
    (e & PRESENT != 0).then_some(e)
}

/// The guest physical address of virtual address `va` under `paging`, or None when it is
/// not mapped (a non-canonical address included).
pub fn translate(mem: &GuestMemoryMmap, paging: Paging, va: u64) -> Option<u64> {
    match paging {
        Paging::Off => Some(va),
        Paging::Legacy { cr3, pse } => {
            let va = va & 0xffff_ffff;
            let pde = entry(mem, cr3 + ((va >> 22) << 2), false)?;
            if pse && pde & PAGE_SIZE_BIT != 0 {
                return Some(pse_4m(pde) | (va & 0x3f_ffff));
            }
            let pte = entry(
                mem,
                (pde & 0xffff_f000) + (((va >> 12) & 0x3ff) << 2),
                false,
            )?;
            Some((pte & 0xffff_f000) | (va & 0xfff))
        }
        Paging::Pae { cr3 } => {
            let va = va & 0xffff_ffff;
            let pdpte = entry(mem, cr3 + ((va >> 30) << 3), true)?;
            long_levels(mem, pdpte & ADDR_4K, va, 2)
        }
        Paging::Long { cr3, la57 } => {
            let top = if la57 { 56 } else { 47 };
            if canonical(va, top) != va {
                return None;
            }
            long_levels(mem, cr3, va, if la57 { 5 } else { 4 })
        }
    }
}

/// Walks `levels` 512-entry levels from `table` (5: PML5 ... 1: page table).
fn long_levels(mem: &GuestMemoryMmap, mut table: u64, va: u64, levels: u32) -> Option<u64> {
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = entry(mem, table + (((va >> shift) & 0x1ff) << 3), true)?;
        let large = match level {
            3 => Some(ADDR_1G),
            2 => Some(ADDR_2M),
            _ => None,
        };
        if let Some(mask) = large.filter(|_| e & PAGE_SIZE_BIT != 0) {
            return Some((e & mask) | (va & ((1 << shift) - 1)));
        }
        if level == 1 {
            return Some((e & ADDR_4K) | (va & 0xfff));
        }
        table = e & ADDR_4K;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    fn put(mem: &GuestMemoryMmap, addr: u64, v: u64) {
        mem.write_obj(v, GuestAddress(addr)).unwrap();
    }

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    fn long_tables(mem: &GuestMemoryMmap) {
        put(mem, 0x1000, 0x2000 | 3); // PML4[0]
        put(mem, 0x1000 + 511 * 8, 0x2000 | 3); // PML4[511]: the same PDPT, high half
        put(mem, 0x2000, 0x3000 | 3); // PDPT[0] -> PD
        put(mem, 0x2000 + 8, 0x4000_0000 | 0x83); // PDPT[1]: 1 GiB page beyond RAM
        put(mem, 0x3000, 0x4000 | 3); // PD[0] -> PT
        put(mem, 0x3000 + 8, 0x0020_0000 | 0x83); // PD[1]: 2 MiB page at 2 MiB
        put(mem, 0x4000 + 16 * 8, 0x10000 | 3); // PT[16]: 0x10000 -> 0x10000
        put(mem, 0x4000 + 17 * 8, 0x11000 | 3); // PT[17]: contiguous
        put(mem, 0x4000 + 18 * 8, 0x50000 | 3); // PT[18]: 0x12000 -> 0x50000
    }

    #[test]
    fn four_level_walk_joins_runs_and_sign_extends() {
        let m = mem();
        long_tables(&m);
        let maps = mappings(
            &m,
            Paging::Long {
                cr3: 0x1000,
                la57: false,
            },
            WALK_BUDGET,
        )
        .unwrap();
        let high = 0xffff_ff80_0000_0000u64;
        assert_eq!(
            maps,
            vec![
                Mapping {
                    phys: 0x10000,
                    virt: 0x10000,
                    len: 0x2000
                },
                Mapping {
                    phys: 0x50000,
                    virt: 0x12000,
                    len: 0x1000
                },
                Mapping {
                    phys: 0x20_0000,
                    virt: 0x20_0000,
                    len: 0x20_0000
                },
                Mapping {
                    phys: 0x10000,
                    virt: high | 0x10000,
                    len: 0x2000
                },
                Mapping {
                    phys: 0x50000,
                    virt: high | 0x12000,
                    len: 0x1000
                },
                Mapping {
                    phys: 0x20_0000,
                    virt: high | 0x20_0000,
                    len: 0x20_0000
                },
            ]
        );
        let merged = merge(maps, &[0]);
        assert_eq!(merged[0].phys, 0x10000);
        assert_eq!(merged.last().unwrap().phys, 0x20_0000);
    }

    #[test]
    fn translate_follows_each_page_size() {
        let m = mem();
        long_tables(&m);
        let p = Paging::Long {
            cr3: 0x1000,
            la57: false,
        };
        assert_eq!(translate(&m, p, 0x10123), Some(0x10123));
        assert_eq!(translate(&m, p, 0x12008), Some(0x50008));
        assert_eq!(translate(&m, p, 0x30_0001), Some(0x30_0001));
        assert_eq!(translate(&m, p, 0x4000_1234), Some(0x4000_1234));
        assert_eq!(translate(&m, p, 0x13000), None);
        assert_eq!(translate(&m, p, 0xffff_ff80_0001_0000), Some(0x10000));
        // Not canonical.
        assert_eq!(translate(&m, p, 0x0000_ff80_0001_0000), None);
        assert_eq!(translate(&m, Paging::Off, 0x1234), Some(0x1234));
    }

    #[test]
    fn legacy_and_pae_walks() {
        let m = mem();
        // 32-bit: PD at 0x6000; PDE[1] = 4 MiB page at 8 MiB; PDE[0] -> PT at 0x7000.
        m.write_obj(0x0080_0083u32, GuestAddress(0x6004)).unwrap();
        m.write_obj(0x7003u32, GuestAddress(0x6000)).unwrap();
        m.write_obj(0x9003u32, GuestAddress(0x7000 + 4)).unwrap();
        let legacy = Paging::Legacy {
            cr3: 0x6000,
            pse: true,
        };
        assert_eq!(
            mappings(&m, legacy, WALK_BUDGET).unwrap(),
            vec![
                Mapping {
                    phys: 0x9000,
                    virt: 0x1000,
                    len: 0x1000
                },
                Mapping {
                    phys: 0x80_0000,
                    virt: 0x40_0000,
                    len: 0x40_0000
                },
            ]
        );
        assert_eq!(translate(&m, legacy, 0x40_0010), Some(0x80_0010));
        assert_eq!(translate(&m, legacy, 0x1fff), Some(0x9fff));
        // PAE: PDPT at 0x8000 (entry 3) -> PD at 0xa000 with a 2 MiB page.
        put(&m, 0x8000 + 24, 0xa001);
        put(&m, 0xa000, 0x0060_0083);
        let pae = Paging::Pae { cr3: 0x8000 };
        assert_eq!(
            mappings(&m, pae, WALK_BUDGET).unwrap(),
            vec![Mapping {
                phys: 0x60_0000,
                virt: 0xc000_0000,
                len: 0x20_0000
            }]
        );
        assert_eq!(translate(&m, pae, 0xc000_0042), Some(0x60_0042));
    }

    #[test]
    fn self_referencing_tables_hit_the_budget() {
        let m = mem();
        // Every entry of every level points back at the same table.
        for i in 0..512u64 {
            put(&m, 0x1000 + i * 8, 0x1000 | 3);
        }
        let r = mappings(
            &m,
            Paging::Long {
                cr3: 0x1000,
                la57: false,
            },
            100_000,
        );
        assert_eq!(r, Err(DumpError::TooManyMappings(100_000)));
    }
}
