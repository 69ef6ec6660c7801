//! Boot-time GDT entries and their KVM segment form.

use kvm_bindings::kvm_segment;

/// Builds a GDT descriptor from flags (access byte in bits 0-7, flags nibble in bits 12-15),
/// base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// 64-bit code, present, DPL 0, readable; granularity 4 KiB.
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// 32-bit code, present, DPL 0, readable; granularity 4 KiB.
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// 32-bit flat data, present, writable.
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// A 32-bit busy TSS so that `ltr` state is valid.
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);

/// Code selector (Linux's `__BOOT_CS`).
pub const CODE_SELECTOR: u16 = 0x10;
/// Data selector (Linux's `__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x20;

/// The table written to guest memory: null, null, code, data, TSS.
pub fn table(code: u64) -> [u64; 5] {
    [0, 0, code, DATA, TSS]
}

/// Converts a descriptor into the segment register state KVM expects.
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_decodes_as_long_mode_code() {
        let s = kvm_segment_from_gdt(CODE64, 2);
        assert_eq!(
            (s.l, s.db, s.s, s.type_, s.selector),
            (1, 0, 1, 0xb, CODE_SELECTOR)
        );
        assert_eq!(s.limit, 0xffff_ffff);
    }

    #[test]
    fn data_is_flat() {
        let s = kvm_segment_from_gdt(DATA, 3);
        assert_eq!((s.base, s.limit, s.db, s.type_), (0, 0xffff_ffff, 1, 3));
    }
}
