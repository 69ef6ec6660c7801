//! `query-memdev`: the machine's RAM as the memory backend QEMU creates for plain `-m`.
//!
//! QEMU 7.2 backs `-m` RAM with a `memory-backend-ram` object whose id is the machine's
//! default RAM id, `pc.ram` on pc and q35, petrel's two machine types. Petrel maps guest RAM
//! itself; what the entry says about that mapping is read back from the kernel
//! (`/proc/self/smaps` flags of the mapping), so it says what is true, not what was asked.

use petrel_arch::GuestMemoryMmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::BalloonError;
use crate::api::balloon::MemdevInfo;

/// QEMU's id of the RAM backend of the pc and q35 machines.
pub const RAM_ID: &str = "pc.ram";

/// The kernel's flags (`VmFlags:` of smaps) of the mapping that contains `addr`; `None` if
/// no mapping does.
fn vm_flags(smaps: &str, addr: usize) -> Option<Vec<&str>> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if inside {
                return Some(flags.split_whitespace().collect());
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode [path]".
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        inside = (start..end).contains(&addr);
    }
    None
}

/// The backend entry of the guest RAM `mem`: its size, and the flags of its mappings (a
/// property holds when it holds for every region). Flags the kernel does not show are an
/// error, never a guess.
pub fn ram(mem: &GuestMemoryMmap) -> Result<MemdevInfo, BalloonError> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")
        .map_err(|e| BalloonError::MemdevFlags(format!("/proc/self/smaps: {e}")))?;
    let mut info = MemdevInfo {
        id: RAM_ID.to_string(),
        size: 0,
        merge: true,
        dump: true,
        prealloc: false,
        share: true,
        reserve: true,
    };
    for region in mem.iter() {
        info.size += region.len();
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_or(0, |p| p as usize);
        let flags = vm_flags(&smaps, host).ok_or_else(|| {
            BalloonError::MemdevFlags(format!("no VmFlags for the mapping at {host:#x}"))
        })?;
        let has = |f: &str| flags.contains(&f);
        info.merge &= has("mg");
        info.dump &= !has("dd");
        info.share &= has("sh");
        info.reserve &= !has("nr");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0021000 r--p 00000000 08:01 123 /usr/bin/petrel
Size:                132 kB
VmFlags: rd mr mw me dw sd
7f0000000000-7f0008000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:                2048 kB
VmFlags: rd wr mr mw me nr mg sd
7f0008000000-7f0008001000 rw-s 00000000 00:01 7 /memfd:x (deleted)
VmFlags: rd wr sh mr mw me ms dd sd
";

    #[test]
    fn flags_of_the_mapping_holding_an_address() {
        assert_eq!(
            vm_flags(SMAPS, 0x7f00_0000_1000),
            Some(vec!["rd", "wr", "mr", "mw", "me", "nr", "mg", "sd"])
        );
        assert!(vm_flags(SMAPS, 0x7f00_0800_0000).unwrap().contains(&"sh"));
        assert_eq!(vm_flags(SMAPS, 0x7f00_0800_1000), None);
        assert_eq!(vm_flags("", 0x1000), None);
    }

    #[test]
    fn guest_ram_as_petrel_maps_it() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (vm_memory::GuestAddress(0), 1 << 20),
            (vm_memory::GuestAddress(4 << 20), 2 << 20),
        ])
        .unwrap();
        let info = ram(&mem).unwrap();
        // Private, MAP_NORESERVE, not madvised: no KSM, dumped, nothing reserved.
        assert_eq!(
            info,
            MemdevInfo {
                id: "pc.ram".into(),
                size: 3 << 20,
                merge: false,
                dump: true,
                prealloc: false,
                share: false,
                reserve: false,
            }
        );
    }
}
