//! The memory size bytes firmware (SeaBIOS) reads from CMOS, laid out as
//! QEMU's PC machines write them.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

const BASE_MEMORY_KIB: u64 = 640;

/// `(cmos index, value)` pairs describing `below_4g` bytes of RAM under
/// 4 GiB and `above_4g` bytes above it.
pub(super) fn memory_size_bytes(below_4g: u64, above_4g: u64) -> Vec<(usize, u8)> {
    let extended_kib = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
    let above_16m_64k = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
    let above_4g_64k = (above_4g / (64 * KIB)).min(0xff_ffff);

    let mut bytes = Vec::with_capacity(11);
    let mut put = |index: usize, value: u64, len: usize| {
        for i in 0..len {
            bytes.push((index + i, (value >> (8 * i)) as u8));
        }
    };
    put(0x15, BASE_MEMORY_KIB, 2);
    put(0x17, extended_kib, 2);
    put(0x30, extended_kib, 2);
    put(0x34, above_16m_64k, 2);
    put(0x5b, above_4g_64k, 3);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(bytes: &[(usize, u8)], index: usize) -> u8 {
        bytes.iter().find(|(i, _)| *i == index).unwrap().1
    }

    #[test]
    fn small_guest() {
        let b = memory_size_bytes(128 * MIB, 0);
        assert_eq!((lookup(&b, 0x15), lookup(&b, 0x16)), (0x80, 0x02));
        // 127 MiB above 1 MiB = 0x1fc00 KiB, capped.
        assert_eq!((lookup(&b, 0x17), lookup(&b, 0x18)), (0xff, 0xff));
        assert_eq!((lookup(&b, 0x30), lookup(&b, 0x31)), (0xff, 0xff));
        // 112 MiB above 16 MiB = 0x700 units of 64 KiB.
        assert_eq!((lookup(&b, 0x34), lookup(&b, 0x35)), (0x00, 0x07));
        assert_eq!(
            (lookup(&b, 0x5b), lookup(&b, 0x5c), lookup(&b, 0x5d)),
            (0, 0, 0)
        );
    }

    #[test]
    fn tiny_and_large_guests() {
        let b = memory_size_bytes(8 * MIB, 0);
        assert_eq!((lookup(&b, 0x17), lookup(&b, 0x18)), (0x00, 0x1c));
        assert_eq!((lookup(&b, 0x34), lookup(&b, 0x35)), (0, 0));

        let b = memory_size_bytes(3 * 1024 * MIB, 5 * 1024 * MIB);
        assert_eq!((lookup(&b, 0x34), lookup(&b, 0x35)), (0x00, 0xbf));
        // 5 GiB = 0x14000 units of 64 KiB.
        assert_eq!(
            (lookup(&b, 0x5b), lookup(&b, 0x5c), lookup(&b, 0x5d)),
            (0x00, 0x40, 0x01)
        );
    }
}
