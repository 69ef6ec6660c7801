//! ELF core file headers (ELF64 and ELF32, little endian), as bytes.

/// ET_CORE.
const ET_CORE: u16 = 4;
/// EM_386.
pub const EM_386: u16 = 3;
/// EM_X86_64.
pub const EM_X86_64: u16 = 62;
/// PT_LOAD.
pub const PT_LOAD: u32 = 1;
/// PT_NOTE.
pub const PT_NOTE: u32 = 4;
/// e_phnum when the real count is in section 0's sh_info.
pub const PN_XNUM: u16 = 0xffff;

/// ELF class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

impl Class {
    /// Size of the file header.
    pub fn ehdr_size(self) -> u64 {
        match self {
            Class::Elf32 => 52,
            Class::Elf64 => 64,
        }
    }

    /// Size of one program header.
    pub fn phdr_size(self) -> u64 {
        match self {
            Class::Elf32 => 32,
            Class::Elf64 => 56,
        }
    }

    /// Size of one section header.
    pub fn shdr_size(self) -> u64 {
        match self {
            Class::Elf32 => 40,
            Class::Elf64 => 64,
        }
    }
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// PT_NOTE or PT_LOAD.
    pub kind: u32,
    /// Where its bytes are in the file.
    pub offset: u64,
    /// Virtual address.
    pub vaddr: u64,
    /// Physical address.
    pub paddr: u64,
    /// Bytes in the file (and in memory: a dump has no bss).
    pub size: u64,
}

/// Appends little-endian words of the class's width: 32-bit fields of ELF32 take the low
/// half, as QEMU's conversions do.
struct Out<'a>(&'a mut Vec<u8>, Class);

impl Out<'_> {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// An address or offset: 4 or 8 bytes.
    fn word(&mut self, v: u64) {
        match self.1 {
            Class::Elf32 => self.u32(v as u32),
            Class::Elf64 => self.0.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

/// The file header of a core file for `machine` with `phnum` program headers right after
/// it; `shoff` is the section header table's offset when there is one (a single section
/// whose sh_info holds `phnum`, needed from [`PN_XNUM`] program headers on).
pub fn file_header(out: &mut Vec<u8>, class: Class, machine: u16, phnum: u64, shoff: Option<u64>) {
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F']);
    out.push(match class {
        Class::Elf32 => 1,
        Class::Elf64 => 2,
    });
    out.extend_from_slice(&[1, 1]); // little endian, EV_CURRENT
    out.extend_from_slice(&[0; 9]); // System V ABI, padding
    let mut o = Out(out, class);
    o.u16(ET_CORE);
    o.u16(machine);
    o.u32(1); // e_version
    o.word(0); // e_entry
    o.word(class.ehdr_size()); // e_phoff
    o.word(shoff.unwrap_or(0));
    o.u32(0); // e_flags
    o.u16(class.ehdr_size() as u16);
    o.u16(class.phdr_size() as u16);
    o.u16(phnum.min(u64::from(PN_XNUM)) as u16);
    o.u16(if shoff.is_some() {
        class.shdr_size() as u16
    } else {
        0
    });
    o.u16(u16::from(shoff.is_some())); // e_shnum
    o.u16(0); // e_shstrndx
}

/// One program header (flags and alignment 0, as QEMU writes them).
pub fn program_header(out: &mut Vec<u8>, class: Class, seg: &Segment) {
    let mut o = Out(out, class);
    o.u32(seg.kind);
    if class == Class::Elf64 {
        o.u32(0); // p_flags
    }
    o.word(seg.offset);
    o.word(seg.vaddr);
    o.word(seg.paddr);
    o.word(seg.size); // p_filesz
    o.word(seg.size); // p_memsz
    if class == Class::Elf32 {
        o.u32(0); // p_flags
    }
    o.word(0); // p_align
}

/// Section 0, which carries the real program header count when e_phnum is [`PN_XNUM`].
pub fn xnum_section(out: &mut Vec<u8>, class: Class, phnum: u64) {
    let start = out.len();
    out.resize(start + class.shdr_size() as usize, 0);
    // sh_info: after sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link.
    let at = start
        + match class {
            Class::Elf32 => 28,
            Class::Elf64 => 44,
        };
    out[at..at + 4].copy_from_slice(&(phnum.min(u64::from(u32::MAX)) as u32).to_le_bytes());
}

/// One ELF note: the name with its NUL, padded to 4 bytes, then the descriptor, padded.
pub fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
    let namesz = name.len() as u32 + 1;
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf64_header_and_program_header_have_their_sizes() {
        let mut v = Vec::new();
        file_header(&mut v, Class::Elf64, EM_X86_64, 3, None);
        assert_eq!(v.len(), 64);
        assert_eq!(&v[16..20], &[4, 0, 62, 0]);
        program_header(
            &mut v,
            Class::Elf64,
            &Segment {
                kind: PT_LOAD,
                offset: 0x1000,
                vaddr: 0x2000,
                paddr: 0x3000,
                size: 0x4000,
            },
        );
        assert_eq!(v.len(), 64 + 56);
        assert_eq!(
            u64::from_le_bytes(v[64 + 8..64 + 16].try_into().unwrap()),
            0x1000
        );
        assert_eq!(
            u64::from_le_bytes(v[64 + 40..64 + 48].try_into().unwrap()),
            0x4000
        );
    }

    #[test]
    fn elf32_header_and_xnum_section() {
        let mut v = Vec::new();
        file_header(&mut v, Class::Elf32, EM_386, 70000, Some(52 + 32 * 70000));
        assert_eq!(v.len(), 52);
        assert_eq!(u16::from_le_bytes([v[44], v[45]]), PN_XNUM);
        assert_eq!(u16::from_le_bytes([v[48], v[49]]), 1);
        let mut s = Vec::new();
        xnum_section(&mut s, Class::Elf32, 70000);
        assert_eq!(s.len(), 40);
        assert_eq!(u32::from_le_bytes(s[28..32].try_into().unwrap()), 70000);
    }

    #[test]
    fn notes_are_padded() {
        let mut v = Vec::new();
        note(&mut v, "CORE", 1, &[1, 2, 3]);
        assert_eq!(v.len(), 12 + 8 + 4);
        assert_eq!(&v[12..17], b"CORE\0");
    }
}
