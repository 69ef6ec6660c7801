//! Loading a kernel and initrd and writing what each boot protocol hands the kernel: the PVH
//! `hvm_start_info` for ELF kernels with a PVH note, or `boot_params` for bzImages.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::e820::E820Entry;
use crate::layout::{self, MemoryLayout};
use crate::regs::EntryMode;
use crate::GuestMemoryMmap;

/// Errors loading a kernel or initrd.
#[derive(Debug, Error)]
pub enum BootError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel '{path}'")]
    KernelFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initrd file cannot be opened or read.
    #[error("cannot read initrd '{path}'")]
    InitrdFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither an ELF nor a bzImage.
    #[error("'{0}' is not a bzImage or an ELF kernel")]
    UnknownFormat(String),
    /// The loader rejected the image.
    #[error("cannot load kernel '{path}'")]
    Load {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// An ELF kernel without the PVH entry note.
    #[error("ELF kernel '{0}' has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry(String),
    /// A bzImage that cannot be entered in 64-bit mode.
    #[error("bzImage '{0}' does not support the 64-bit boot protocol (needs version 2.06+ and XLF_KERNEL_64)")]
    No64BitEntry(String),
    /// The command line is too long.
    #[error("kernel command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The initrd does not fit below the kernel's limit.
    #[error("initrd of {0} bytes does not fit in guest memory below the kernel's limit")]
    InitrdTooLarge(u64),
    /// Writing boot data into guest memory failed.
    #[error("cannot write boot data to guest memory")]
    Memory(#[source] GuestMemoryError),
}

/// Where the kernel, initrd and boot data ended up.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// How the boot vCPU enters the kernel.
    pub entry: EntryMode,
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: [u8; 4] = *b"HdrS";
const XLF_KERNEL_64: u16 = 1;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const LOADFLAG_CAN_USE_HEAP: u8 = 0x80;
const PVH_START_INFO_MAGIC: u32 = 0x336e_c578;

/// Loads `kernel` (and `initrd`) into `mem`, writes the command line and the protocol's boot
/// structures, and returns how to enter the kernel.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    e820: &[E820Entry],
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    rsdp: GuestAddress,
) -> Result<BootInfo, BootError> {
    let kpath = kernel.display().to_string();
    let kerr = |source| BootError::KernelFile {
        path: kpath.clone(),
        source,
    };
    let mut file = File::open(kernel).map_err(kerr)?;
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC;
    let is_bzimage = !is_elf && {
        file.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))
            .map_err(kerr)?;
        file.read_exact(&mut magic).is_ok() && magic == BZIMAGE_MAGIC
    };
    if !is_elf && !is_bzimage {
        return Err(BootError::UnknownFormat(kpath));
    }
    file.rewind().map_err(kerr)?;
    write_cmdline(mem, cmdline)?;

    if is_elf {
        let res = Elf::load(mem, None, &mut file, Some(layout::HIMEM_START)).map_err(|source| {
            BootError::Load {
                path: kpath.clone(),
                source,
            }
        })?;
        let entry = match res.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => addr.0,
            _ => return Err(BootError::NoPvhEntry(kpath)),
        };
        let initrd = match initrd {
            Some(p) => Some(load_initrd(
                mem,
                layout,
                p,
                layout.low_ram_end(),
                res.kernel_end,
            )?),
            None => None,
        };
        write_pvh_start_info(mem, e820, initrd, rsdp)?;
        Ok(BootInfo {
            entry: EntryMode::Pvh { entry },
        })
    } else {
        let res =
            BzImage::load(mem, None, &mut file, Some(layout::HIMEM_START)).map_err(|source| {
                BootError::Load {
                    path: kpath.clone(),
                    source,
                }
            })?;
        let mut hdr = res
            .setup_header
            .ok_or_else(|| BootError::UnknownFormat(kpath.clone()))?;
        if hdr.version < 0x0206 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::No64BitEntry(kpath));
        }
        hdr.type_of_loader = KERNEL_LOADER_OTHER;
        hdr.loadflags |= LOADFLAG_CAN_USE_HEAP;
        hdr.heap_end_ptr = 0xfe00;
        hdr.cmd_line_ptr = layout::CMDLINE_START.0 as u32;
        hdr.cmdline_size = cmdline.len() as u32 + 1;
        if let Some(p) = initrd {
            // Kernels give the highest address an initrd byte may occupy.
            let limit = (u64::from(hdr.initrd_addr_max) + 1).min(layout.low_ram_end());
            let (addr, size) = load_initrd(mem, layout, p, limit, res.kernel_end)?;
            hdr.ramdisk_image = addr.0 as u32;
            hdr.ramdisk_size = size as u32;
        }
        let mut params = boot_params {
            hdr,
            ..Default::default()
        };
        params.acpi_rsdp_addr = rsdp.0;
        for (slot, e) in params.e820_table.iter_mut().zip(e820) {
            *slot = boot_e820_entry {
                addr: e.addr,
                size: e.size,
                r#type: e.kind,
            };
        }
        params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
        mem.write_obj(params, layout::ZERO_PAGE_START)
            .map_err(BootError::Memory)?;
        Ok(BootInfo {
            entry: EntryMode::Linux64 {
                entry: res.kernel_load.0 + 0x200,
            },
        })
    }
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() + 1 > layout::CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: layout::CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, layout::CMDLINE_START)
        .map_err(BootError::Memory)
}

/// Puts the initrd page-aligned as high as possible below `limit`, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    _layout: &MemoryLayout,
    path: &Path,
    limit: u64,
    kernel_end: u64,
) -> Result<(GuestAddress, u64), BootError> {
    let ipath = path.display().to_string();
    let ierr = |source| BootError::InitrdFile {
        path: ipath.clone(),
        source,
    };
    let mut file = File::open(path).map_err(ierr)?;
    let size = file.metadata().map_err(ierr)?.len();
    let start = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end && size > 0)
        .ok_or(BootError::InitrdTooLarge(size))?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, size as usize)
        .map_err(BootError::Memory)?;
    Ok((GuestAddress(start), size))
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initrd: Option<(GuestAddress, u64)>,
    rsdp: GuestAddress,
) -> Result<(), BootError> {
    let mut memmap = Vec::with_capacity(e820.len() * 24);
    for e in e820 {
        memmap.extend_from_slice(&e.addr.to_le_bytes());
        memmap.extend_from_slice(&e.size.to_le_bytes());
        memmap.extend_from_slice(&e.kind.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&memmap, layout::PVH_MEMMAP_START)
        .map_err(BootError::Memory)?;
    if let Some((addr, size)) = initrd {
        let mut m = Vec::with_capacity(32);
        for v in [addr.0, size, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        mem.write_slice(&m, layout::PVH_MODLIST_START)
            .map_err(BootError::Memory)?;
    }
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&PVH_START_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&u32::from(initrd.is_some()).to_le_bytes());
    info.extend_from_slice(&layout::PVH_MODLIST_START.0.to_le_bytes());
    info.extend_from_slice(&layout::CMDLINE_START.0.to_le_bytes());
    info.extend_from_slice(&rsdp.0.to_le_bytes());
    info.extend_from_slice(&layout::PVH_MEMMAP_START.0.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&info, layout::PVH_INFO_START)
        .map_err(BootError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn guest() -> (GuestMemoryMmap, MemoryLayout) {
        let layout = MemoryLayout::new(64 << 20, 40).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        (mem, layout)
    }

    fn temp_file(bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "petrel-arch-test-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn rejects_a_file_that_is_no_kernel() {
        let (mem, layout) = guest();
        let path = temp_file(&[0x42; 4096]);
        let err = load_kernel(&mem, &layout, &[], &path, None, "", GuestAddress(0)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, BootError::UnknownFormat(_)), "{err}");
    }

    #[test]
    fn rejects_a_truncated_elf() {
        let (mem, layout) = guest();
        let path = temp_file(b"\x7fELF\x02\x01\x01");
        let err = load_kernel(&mem, &layout, &[], &path, None, "", GuestAddress(0)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, BootError::Load { .. }), "{err}");
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let (mem, layout) = guest();
        let path = temp_file(&[7u8; 5000]);
        let (addr, size) = load_initrd(&mem, &layout, &path, 64 << 20, 0x20_0000).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr.0 % 4096, 0);
        assert!(addr.0 + size <= 64 << 20);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(addr.0 + 4999)).unwrap(), 7);
    }
}
