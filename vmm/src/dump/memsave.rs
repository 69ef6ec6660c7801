//! `memsave` and `pmemsave`: a range of guest virtual or physical memory to a file, as
//! QEMU 7.2 writes it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use petrel_arch::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::error::DumpError;
use super::paging::{self, Paging};
use super::target;

/// QEMU's memsave reads (and translates) in chunks of this size: a failing chunk is not
/// written, the chunks before it are.
const MEMSAVE_CHUNK: u64 = 1024;
const PAGE: u64 = 4096;

/// Opens `path` as QEMU's `fopen(path, "wb")` does.
fn create(path: &Path) -> Result<File, DumpError> {
    target::create(path, 0o666).map(File::from)
}

/// Writes `len` bytes of guest RAM at `phys` (all in one region) to `file`.
fn copy(mem: &GuestMemoryMmap, phys: u64, len: u64, file: &mut File) -> Result<(), DumpError> {
    mem.write_all_volatile_to(GuestAddress(phys), file, len as usize)
        .map_err(|_| DumpError::Io)
}

/// Whether `len` bytes from `phys` are RAM of one region.
fn is_ram(mem: &GuestMemoryMmap, phys: u64, len: u64) -> bool {
    mem.find_region(GuestAddress(phys))
        .is_some_and(|r| phys + len <= r.start_addr().0 + r.len())
}

/// Saves `size` bytes of virtual memory from `addr`, translated by `paging` (the vCPU's
/// mode when it was asked). Unmapped or non-RAM pages end it with "Invalid addr", after
/// the whole chunks before them were written.
pub fn memsave(
    mem: &GuestMemoryMmap,
    paging: Paging,
    addr: i64,
    size: i64,
    path: &Path,
) -> Result<(), DumpError> {
    let mut file = create(path)?;
    let start = addr as u64;
    let total = size as u64;
    // Physical runs of the range, up to the first address that does not translate.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut done = 0u64;
    let mut failed = false;
    while done < total {
        let va = start.wrapping_add(done);
        let n = (total - done).min(PAGE - (va & (PAGE - 1)));
        match paging::translate(mem, paging, va).filter(|&pa| is_ram(mem, pa, n)) {
            Some(pa) => match runs.last_mut() {
                Some((p, l)) if *p + *l == pa && is_ram(mem, *p, *l + n) => *l += n,
                _ => runs.push((pa, n)),
            },
            None => {
                failed = true;
                break;
            }
        }
        done += n;
    }
    let mut left = if failed {
        done / MEMSAVE_CHUNK * MEMSAVE_CHUNK
    } else {
        total
    };
    for (pa, len) in runs {
        if left == 0 {
            break;
        }
        let n = len.min(left);
        copy(mem, pa, n, &mut file)?;
        left -= n;
    }
    if failed {
        return Err(DumpError::InvalidAddr { addr: start, size });
    }
    Ok(())
}

/// Saves `size` bytes of physical memory from `addr`. What is not RAM reads as zeros, as
/// QEMU's unassigned memory does (left as holes in the file); addresses wrap at 2^64.
pub fn pmemsave(mem: &GuestMemoryMmap, addr: i64, size: i64, path: &Path) -> Result<(), DumpError> {
    let mut file = create(path)?;
    let mut pa = addr as u64;
    let mut left = size as u64;
    let mut holes = false;
    while left > 0 {
        // Bytes before the address space wraps (0: a full 2^64 away).
        let to_wrap = 0u64.wrapping_sub(pa);
        let cap = |n: u64| {
            n.min(left)
                .min(if to_wrap == 0 { u64::MAX } else { to_wrap })
        };
        if let Some(r) = mem.find_region(GuestAddress(pa)) {
            let n = cap(r.start_addr().0 + r.len() - pa);
            copy(mem, pa, n, &mut file)?;
            pa = pa.wrapping_add(n);
            left -= n;
            continue;
        }
        let next = mem
            .iter()
            .map(|r| r.start_addr().0)
            .filter(|&s| s > pa)
            .min()
            .unwrap_or(0);
        let n = cap(next.wrapping_sub(pa));
        file.seek(SeekFrom::Current(n as i64))
            .map_err(|_| DumpError::Io)?;
        holes = true;
        pa = pa.wrapping_add(n);
        left -= n;
    }
    if holes {
        let end = file.stream_position().map_err(|_| DumpError::Io)?;
        file.set_len(end).map_err(|_| DumpError::Io)?;
    }
    file.flush().map_err(|_| DumpError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x20_0000), 0x1000),
        ])
        .unwrap();
        for i in 0..0x10_0000u64 / 8 {
            m.write_obj(i, GuestAddress(i * 8)).unwrap();
        }
        m.write_obj(0xabcdu64, GuestAddress(0x20_0000)).unwrap();
        m
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("petrel-memsave-{}-{name}", std::process::id()))
    }

    #[test]
    fn pmemsave_reads_holes_as_zeros() {
        let m = mem();
        let p = tmp("p");
        pmemsave(&m, 0xf_fff8, 0x10_0010, &p).unwrap();
        let d = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(d.len(), 0x10_0010);
        assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 0x1_ffff);
        assert!(d[8..0x10_0008].iter().all(|&b| b == 0));
        assert_eq!(
            u64::from_le_bytes(d[0x10_0008..].try_into().unwrap()),
            0xabcd
        );
    }

    #[test]
    fn memsave_writes_the_chunks_before_a_hole() {
        let m = mem();
        let p = tmp("m");
        // Paging off: virtual = physical; 0x10_0000 is the end of RAM.
        let r = memsave(&m, Paging::Off, 0xf_f000, 0x2000, &p);
        assert_eq!(
            r,
            Err(DumpError::InvalidAddr {
                addr: 0xf_f000,
                size: 0x2000
            })
        );
        assert_eq!(std::fs::read(&p).unwrap().len(), 0x1000);
        // Not chunk aligned: the chunk holding the end of RAM is left out.
        let _ = memsave(&m, Paging::Off, 0xf_f100, 0x2000, &p);
        assert_eq!(std::fs::read(&p).unwrap().len(), 0xc00);
        memsave(&m, Paging::Off, 0x8, 16, &p).unwrap();
        let d = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(d, [1u64.to_le_bytes(), 2u64.to_le_bytes()].concat());
    }
}
