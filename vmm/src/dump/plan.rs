//! What a dump writes and where: the guest RAM a `begin`/`length` filter keeps, the
//! mappings its PT_LOAD headers describe, and the bytes before the memory (ELF header,
//! program headers, notes). The memory follows in physical order, each filtered RAM piece
//! once; PT_LOADs point into it.

use super::cpu::CpuRegisters;
use super::elf::{self, Class, Segment};
use super::error::DumpError;
use super::notes;
use super::paging::Mapping;

/// Where guest memory starts in the file: page aligned, so that writing it copies whole
/// pages.
const MEMORY_ALIGN: u64 = 4096;
/// From this many mappings on QEMU moves the program header count to section 0.
const XNUM_MAPPINGS: usize = (u16::MAX - 2) as usize;

/// A RAM region of the guest: (first physical address, bytes).
pub type Region = (u64, u64);

/// A run of guest RAM the dump writes, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// First guest physical address.
    pub phys: u64,
    /// Bytes.
    pub len: u64,
}

/// `begin`/`length` as QEMU 7.2 applies them: addresses compared as unsigned, `begin +
/// length` wrapping, and the same checks in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    begin: u64,
    end: u64,
}

impl Filter {
    /// Checks `length` (0 is refused before anything else, as in QEMU).
    pub fn new(begin: i64, length: i64) -> Result<Filter, DumpError> {
        if length == 0 {
            return Err(DumpError::InvalidParameter("length"));
        }
        Ok(Filter {
            begin: begin as u64,
            end: begin.wrapping_add(length) as u64,
        })
    }

    /// QEMU's per-block size: the overlap computed with unsigned bounds, then subtracted
    /// signed and floored at 0.
    fn qemu_size(&self, (start, len): Region) -> u64 {
        let left = self.begin.max(start);
        let right = self.end.min(start + len);
        (right as i64).wrapping_sub(left as i64).max(0) as u64
    }

    fn keeps(&self, (start, len): Region) -> bool {
        !(start >= self.end || start + len <= self.begin)
    }

    fn clip(&self, (start, len): Region) -> Option<Piece> {
        let lo = self.begin.max(start);
        let hi = self.end.min(start + len);
        (lo < hi).then(|| Piece {
            phys: lo,
            len: hi - lo,
        })
    }
}

/// The guest memory bytes a dump writes, as QEMU counts them (query-dump's `total`).
pub fn total(regions: &[Region], filter: Option<Filter>) -> u64 {
    match filter {
        Some(f) => regions.iter().map(|&r| f.qemu_size(r)).sum(),
        None => regions.iter().map(|r| r.1).sum(),
    }
}

/// The RAM pieces a dump writes, or QEMU's errors for a filter that keeps nothing ("no
/// guest memory", then `begin`).
pub fn pieces(regions: &[Region], filter: Option<Filter>) -> Result<Vec<Piece>, DumpError> {
    let Some(f) = filter else {
        return Ok(regions
            .iter()
            .map(|&(phys, len)| Piece { phys, len })
            .collect());
    };
    if total(regions, filter) == 0 {
        return Err(DumpError::NoMemory);
    }
    if !regions.iter().any(|&r| f.keeps(r)) {
        return Err(DumpError::InvalidParameter("begin"));
    }
    Ok(regions.iter().filter_map(|&r| f.clip(r)).collect())
}

/// The bytes of a vmcore before guest memory.
#[derive(Debug)]
pub struct Header {
    /// ELF header, program headers, section 0 if needed, notes, padding.
    pub bytes: Vec<u8>,
    /// Where each part starts.
    pub parts: Parts,
}

/// Where the parts of a vmcore start.
#[derive(Clone, Copy, Debug)]
pub struct Parts {
    /// The program headers (the ELF header's size).
    pub phdrs: u64,
    /// The CORE notes.
    pub notes: u64,
    /// The QEMU notes.
    pub qemu_notes: u64,
    /// Guest memory (the header's length).
    pub memory: u64,
}

impl Parts {
    /// Why writing the byte at `offset` failed, in QEMU's words, and whether QEMU adds
    /// strerror to them.
    pub fn failure_at(&self, offset: u64) -> (&'static str, bool) {
        if offset < self.phdrs {
            ("dump: failed to write elf header", true)
        } else if offset < self.notes {
            ("dump: failed to write program header table", true)
        } else if offset < self.qemu_notes {
            ("dump: failed to write elf notes", false)
        } else if offset < self.memory {
            ("dump: failed to write CPU status", false)
        } else {
            ("dump: failed to save memory", true)
        }
    }
}

/// Keeps the parts of `mappings` inside `pieces`, each clipped so that it lies in one piece.
fn clip_mappings(mappings: &[Mapping], pieces: &[Piece]) -> Vec<Mapping> {
    let mut out = Vec::with_capacity(mappings.len());
    for m in mappings {
        for p in pieces {
            let lo = m.phys.max(p.phys);
            let hi = (m.phys + m.len).min(p.phys + p.len);
            if lo < hi {
                out.push(Mapping {
                    phys: lo,
                    virt: m.virt.wrapping_add(lo - m.phys),
                    len: hi - lo,
                });
            }
        }
    }
    out
}

/// Builds the header of a dump of `pieces` for `cpus` (vCPU 0 first), with PT_LOADs for
/// `mappings` (already ordered; virtual = physical when not paging).
pub fn header(
    cpus: &[CpuRegisters],
    regions: &[Region],
    pieces: &[Piece],
    mappings: &[Mapping],
) -> Header {
    // QEMU: x86_64 notes and EM_X86_64 when vCPU 0 is in long mode; else i386 notes, in an
    // ELF64 file when RAM reaches above 4 GiB.
    let long_mode = cpus.first().is_some_and(CpuRegisters::long_mode);
    let (class, machine) = if long_mode {
        (Class::Elf64, elf::EM_X86_64)
    } else if regions.iter().any(|&(s, l)| s + l > u64::from(u32::MAX)) {
        (Class::Elf64, elf::EM_386)
    } else {
        (Class::Elf32, elf::EM_386)
    };
    let loads = clip_mappings(mappings, pieces);
    let phnum = 1 + loads.len() as u64;
    let xnum = loads.len() >= XNUM_MAPPINGS;
    let phdrs_end = class.ehdr_size() + class.phdr_size() * phnum;
    let shoff = xnum.then_some(phdrs_end);
    let notes_at = phdrs_end + if xnum { class.shdr_size() } else { 0 };
    let cpu_notes = notes::cpu_notes(cpus, long_mode);
    let qemu_notes = notes_at + notes::core_size(cpus.len(), long_mode);
    let memory = (notes_at + cpu_notes.len() as u64).next_multiple_of(MEMORY_ALIGN);

    let mut bytes = Vec::with_capacity(memory as usize);
    elf::file_header(&mut bytes, class, machine, phnum, shoff);
    let note_seg = Segment {
        kind: elf::PT_NOTE,
        offset: notes_at,
        vaddr: 0,
        paddr: 0,
        size: cpu_notes.len() as u64,
    };
    elf::program_header(&mut bytes, class, &note_seg);
    // File offset of each piece, for the PT_LOADs pointing into it.
    let mut starts = Vec::with_capacity(pieces.len());
    let mut at = memory;
    for p in pieces {
        starts.push((p.phys, at));
        at += p.len;
    }
    for m in &loads {
        let i = starts.partition_point(|&(phys, _)| phys <= m.phys) - 1;
        let (phys, file) = starts[i];
        let seg = Segment {
            kind: elf::PT_LOAD,
            offset: file + (m.phys - phys),
            vaddr: m.virt,
            paddr: m.phys,
            size: m.len,
        };
        elf::program_header(&mut bytes, class, &seg);
    }
    if xnum {
        elf::xnum_section(&mut bytes, class, phnum);
    }
    bytes.extend_from_slice(&cpu_notes);
    bytes.resize(memory as usize, 0);
    Header {
        bytes,
        parts: Parts {
            phdrs: class.ehdr_size(),
            notes: notes_at,
            qemu_notes,
            memory,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: [Region; 2] = [(0, 0x1000_0000), (0x1_0000_0000, 0x1000_0000)];

    #[test]
    fn filters_as_qemu_does() {
        let f = |b, l| {
            let filter = Some(Filter::new(b, l)?);
            Ok::<_, DumpError>((pieces(&RAM, filter)?, total(&RAM, filter)))
        };
        assert_eq!(f(0, 0), Err(DumpError::InvalidParameter("length")));
        assert_eq!(f(0x2000_0000, 4096), Err(DumpError::NoMemory));
        assert_eq!(f(-1, 4096), Err(DumpError::InvalidParameter("begin")));
        // QEMU's arithmetic counts 4096 bytes per region there all the same.
        assert_eq!(total(&RAM, Some(Filter::new(-1, 4096).unwrap())), 8192);
        // A negative length wraps past everything: all of RAM.
        let (p, t) = f(0, -4096).unwrap();
        assert_eq!(t, 0x2000_0000);
        assert_eq!(p.len(), 2);
        // Straddling the end of low RAM keeps what is RAM.
        let (p, t) = f(0xff0_0000, 0x20_0000).unwrap();
        assert_eq!(
            p,
            vec![Piece {
                phys: 0xff0_0000,
                len: 0x10_0000
            }]
        );
        assert_eq!(t, 0x10_0000);
        assert_eq!(pieces(&RAM, None).unwrap().len(), 2);
        assert_eq!(total(&RAM, None), 0x2000_0000);
    }

    #[test]
    fn loads_point_into_the_memory_they_describe() {
        let mut cpu = CpuRegisters::default();
        cpu.sregs.efer = 1 << 10;
        let p = pieces(&RAM, Some(Filter::new(0x100_0000, 0x1_0000_0000).unwrap())).unwrap();
        let maps = [
            Mapping {
                phys: 0,
                virt: 0xffff_8000_0000_0000,
                len: 0x200_0000,
            },
            Mapping {
                phys: 0x1_0000_1000,
                virt: 0x4000,
                len: 0x1000,
            },
        ];
        let h = header(&[cpu], &RAM, &p, &maps);
        let parts = h.parts;
        assert_eq!(parts.memory % 4096, 0);
        assert_eq!(h.bytes.len() as u64, parts.memory);
        assert_eq!(u16::from_le_bytes([h.bytes[56], h.bytes[57]]), 3);
        let ph = |i: usize, f: usize| {
            let at = 64 + 56 * i + f;
            u64::from_le_bytes(h.bytes[at..at + 8].try_into().unwrap())
        };
        // The first mapping is clipped to the filter: phys 16 MiB, virt moved along.
        assert_eq!(ph(1, 8), parts.memory);
        assert_eq!(ph(1, 16), 0xffff_8000_0100_0000);
        assert_eq!(ph(1, 24), 0x100_0000);
        assert_eq!(ph(1, 32), 0x100_0000);
        // The second lies 0x1000 into the second piece (after 0xf00_0000 bytes of the first).
        assert_eq!(ph(2, 8), parts.memory + 0xf00_0000 + 0x1000);
        let what = |o| parts.failure_at(o).0;
        assert_eq!(what(0), "dump: failed to write elf header");
        assert_eq!(what(64), "dump: failed to write program header table");
        assert_eq!(what(parts.notes), "dump: failed to write elf notes");
        // One x86_64 CORE note: 12-byte header, "CORE\0" padded to 8, 336-byte prstatus.
        assert_eq!(parts.qemu_notes, parts.notes + 356);
        assert_eq!(what(parts.notes + 355), "dump: failed to write elf notes");
        assert_eq!(what(parts.qemu_notes), "dump: failed to write CPU status");
        assert_eq!(what(parts.memory), "dump: failed to save memory");
    }
}
