//! The per-vCPU notes of a vmcore, laid out as QEMU 7.2 writes them: an NT_PRSTATUS "CORE"
//! note per vCPU (x86_64 or i386 `elf_prstatus`, pr_pid = index + 1), then a "QEMU" note per
//! vCPU holding QEMUCPUState version 1 (with kernel_gs_base).

use kvm_bindings::{kvm_dtable, kvm_segment};

use super::cpu::CpuRegisters;
use super::elf::note;

/// NT_PRSTATUS.
const NT_PRSTATUS: u32 = 1;
/// Size of the x86_64 `elf_prstatus`.
const PRSTATUS64_SIZE: usize = 336;
/// Where pr_pid and pr_reg are in it.
const PRSTATUS64_PID: usize = 32;
const PRSTATUS64_REGS: usize = 112;
/// Size of the i386 `elf_prstatus`.
const PRSTATUS32_SIZE: usize = 144;
const PRSTATUS32_PID: usize = 24;
const PRSTATUS32_REGS: usize = 72;
/// QEMUCPUState: version 1, 440 bytes with kernel_gs_base.
const QEMU_STATE_VERSION: u32 = 1;
const QEMU_STATE_SIZE: usize = 440;

/// A note's 12-byte header and its name ("CORE\0" or "QEMU\0") padded to 8.
const NOTE_HEAD: usize = 12 + 8;

/// Bytes of the CORE notes for `n` vCPUs: where the QEMU notes start.
pub fn core_size(n: usize, long_mode: bool) -> u64 {
    let prstatus = if long_mode {
        PRSTATUS64_SIZE
    } else {
        PRSTATUS32_SIZE
    };
    ((NOTE_HEAD + prstatus) * n) as u64
}

/// Bytes of all the notes for `n` vCPUs.
pub fn size(n: usize, long_mode: bool) -> u64 {
    core_size(n, long_mode) + ((NOTE_HEAD + QEMU_STATE_SIZE) * n) as u64
}

/// x86_64 `user_regs_struct`, in its order.
fn user_regs64(c: &CpuRegisters) -> [u64; 27] {
    let (r, s) = (&c.regs, &c.sregs);
    [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        0, // orig_rax: QEMU writes 0
        r.rip,
        s.cs.selector.into(),
        r.rflags,
        r.rsp,
        s.ss.selector.into(),
        s.fs.base,
        s.gs.base,
        s.ds.selector.into(),
        s.es.selector.into(),
        s.fs.selector.into(),
        s.gs.selector.into(),
    ]
}

fn prstatus64(c: &CpuRegisters, pid: u32) -> Vec<u8> {
    let mut d = vec![0u8; PRSTATUS64_SIZE];
    d[PRSTATUS64_PID..PRSTATUS64_PID + 4].copy_from_slice(&pid.to_le_bytes());
    for (i, v) in user_regs64(c).iter().enumerate() {
        let at = PRSTATUS64_REGS + 8 * i;
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

fn prstatus32(c: &CpuRegisters, pid: u32) -> Vec<u8> {
    let (r, s) = (&c.regs, &c.sregs);
    let mut d = vec![0u8; PRSTATUS32_SIZE];
    d[PRSTATUS32_PID..PRSTATUS32_PID + 4].copy_from_slice(&pid.to_le_bytes());
    let mut regs = Vec::with_capacity(68);
    for v in [r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rax] {
        regs.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for sel in [s.ds.selector, s.es.selector, s.fs.selector, s.gs.selector] {
        regs.extend_from_slice(&u32::from(sel).to_le_bytes()); // the selector, then 16 bits pad
    }
    regs.extend_from_slice(&0u32.to_le_bytes()); // orig_eax
    regs.extend_from_slice(&(r.rip as u32).to_le_bytes());
    regs.extend_from_slice(&u32::from(s.cs.selector).to_le_bytes());
    regs.extend_from_slice(&(r.rflags as u32).to_le_bytes());
    regs.extend_from_slice(&(r.rsp as u32).to_le_bytes());
    regs.extend_from_slice(&u32::from(s.ss.selector).to_le_bytes());
    d[PRSTATUS32_REGS..PRSTATUS32_REGS + regs.len()].copy_from_slice(&regs);
    d
}

/// A segment's descriptor flags as QEMU's SegmentCache keeps them (KVM's get_seg).
fn segment_flags(s: &kvm_segment) -> u32 {
    (u32::from(s.type_) << 8)
        | (u32::from(s.s != 0) << 12)
        | (u32::from(s.dpl) << 13)
        | (u32::from(s.present != 0 && s.unusable == 0) << 15)
        | (u32::from(s.avl != 0) << 20)
        | (u32::from(s.l != 0) << 21)
        | (u32::from(s.db != 0) << 22)
        | (u32::from(s.g != 0) << 23)
}

/// QEMUCPUSegment: selector, limit, flags, pad, base.
fn push_segment(d: &mut Vec<u8>, selector: u16, limit: u32, flags: u32, base: u64) {
    d.extend_from_slice(&u32::from(selector).to_le_bytes());
    d.extend_from_slice(&limit.to_le_bytes());
    d.extend_from_slice(&flags.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    d.extend_from_slice(&base.to_le_bytes());
}

fn qemu_state(c: &CpuRegisters) -> Vec<u8> {
    let (r, s) = (&c.regs, &c.sregs);
    let mut d = Vec::with_capacity(QEMU_STATE_SIZE);
    d.extend_from_slice(&QEMU_STATE_VERSION.to_le_bytes());
    d.extend_from_slice(&(QEMU_STATE_SIZE as u32).to_le_bytes());
    for v in [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.ldt, &s.tr] {
        push_segment(
            &mut d,
            seg.selector,
            seg.limit,
            segment_flags(seg),
            seg.base,
        );
    }
    for t in [&s.gdt, &s.idt] {
        let kvm_dtable { base, limit, .. } = *t;
        push_segment(&mut d, 0, limit.into(), 0, base);
    }
    for cr in [s.cr0, 0, s.cr2, s.cr3, s.cr4, c.kernel_gs_base] {
        d.extend_from_slice(&cr.to_le_bytes());
    }
    d
}

/// The notes of `cpus` (in vCPU index order): every CORE note, then every QEMU note.
pub fn cpu_notes(cpus: &[CpuRegisters], long_mode: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(size(cpus.len(), long_mode) as usize);
    for (i, c) in cpus.iter().enumerate() {
        let pid = i as u32 + 1;
        let desc = if long_mode {
            prstatus64(c, pid)
        } else {
            prstatus32(c, pid)
        };
        note(&mut out, "CORE", NT_PRSTATUS, &desc);
    }
    for c in cpus {
        note(&mut out, "QEMU", 0, &qemu_state(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> CpuRegisters {
        let mut c = CpuRegisters::default();
        c.regs.rip = 0x1002de;
        c.regs.rax = 0x60;
        c.regs.rflags = 0x246;
        c.regs.r15 = 1;
        c.sregs.cs = kvm_segment {
            selector: 0x18,
            limit: 0xffff_ffff,
            type_: 0xb,
            present: 1,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        c.sregs.cr3 = 0x109000;
        c.kernel_gs_base = 0x77;
        c
    }

    #[test]
    fn layouts_match_qemu() {
        let n = cpu_notes(&[cpu(), cpu()], true);
        assert_eq!(n.len() as u64, size(2, true));
        // First CORE note: pid 1, r15 first, rip at index 16.
        let desc = &n[20..20 + PRSTATUS64_SIZE];
        assert_eq!(u32::from_le_bytes(desc[32..36].try_into().unwrap()), 1);
        let reg = |i: usize| u64::from_le_bytes(desc[112 + 8 * i..120 + 8 * i].try_into().unwrap());
        assert_eq!(
            (reg(0), reg(10), reg(16), reg(17), reg(18)),
            (1, 0x60, 0x1002de, 0x18, 0x246)
        );
        // Second CORE note has pid 2; then the QEMU notes.
        let second = 20 + PRSTATUS64_SIZE;
        assert_eq!(
            u32::from_le_bytes(n[second + 52..second + 56].try_into().unwrap()),
            2
        );
        let q = 2 * (20 + PRSTATUS64_SIZE);
        assert_eq!(&n[q + 12..q + 17], b"QEMU\0");
        let st = &n[q + 20..q + 20 + QEMU_STATE_SIZE];
        assert_eq!(&st[..8], &[1, 0, 0, 0, 0xb8, 1, 0, 0]);
        // cs: selector 0x18, flags as QEMU shows them (0x00a09b00).
        assert_eq!(u32::from_le_bytes(st[152..156].try_into().unwrap()), 0x18);
        assert_eq!(
            u32::from_le_bytes(st[160..164].try_into().unwrap()),
            0x00a0_9b00
        );
        // cr3 and kernel_gs_base at the end.
        assert_eq!(
            u64::from_le_bytes(st[416..424].try_into().unwrap()),
            0x109000
        );
        assert_eq!(u64::from_le_bytes(st[432..440].try_into().unwrap()), 0x77);
    }

    #[test]
    fn i386_prstatus() {
        let n = cpu_notes(&[cpu()], false);
        assert_eq!(n.len() as u64, size(1, false));
        let desc = &n[20..20 + PRSTATUS32_SIZE];
        assert_eq!(u32::from_le_bytes(desc[24..28].try_into().unwrap()), 1);
        // eax is the 7th register; eip follows the 4 segment words and orig_eax.
        assert_eq!(
            u32::from_le_bytes(desc[72 + 24..72 + 28].try_into().unwrap()),
            0x60
        );
        assert_eq!(
            u32::from_le_bytes(desc[72 + 48..72 + 52].try_into().unwrap()),
            0x1002de
        );
    }
}
