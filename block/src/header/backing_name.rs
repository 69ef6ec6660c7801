//! Rewriting the backing file name in a qcow2 header (QEMU's `change-backing-file`).
//!
//! The name lives in the first cluster, after the header and its extensions; the
//! header points at it (`backing_file_offset`, `backing_file_size`). Extensions,
//! the backing format among them, are left as they are.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{be32, be64, read_prefix, read_qcow2_header, HeaderError, V2_HEADER_LEN};
use crate::errno::{EINVAL, EIO, ENOSPC};

/// Longest backing file name QEMU accepts.
const MAX_NAME_LEN: usize = 1023;
/// Offset of `backing_file_offset` (u64) and `backing_file_size` (u32).
const BACKING_FIELDS: u64 = 8;
/// Offset of a version 3 header's `header_length`.
const HEADER_LENGTH: usize = 100;
/// Size of an extension's type and length.
const EXT_HEADER_LEN: usize = 8;

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Where the extensions end in `cluster`, the image's first cluster: after the end marker,
/// or where the current name starts (which is where QEMU stops reading them).
fn extensions_end(cluster: &[u8], version: u32) -> io::Result<usize> {
    let old_offset = be64(cluster, BACKING_FIELDS as usize);
    let limit = match usize::try_from(old_offset) {
        Ok(0) => cluster.len(),
        Ok(o) if o <= cluster.len() => o,
        _ => return Err(errno(EIO)),
    };
    let mut pos = if version == 2 {
        V2_HEADER_LEN
    } else {
        be32(cluster, HEADER_LENGTH) as usize
    };
    while pos + EXT_HEADER_LEN <= limit {
        let (kind, len) = (be32(cluster, pos), be32(cluster, pos + 4) as usize);
        pos += EXT_HEADER_LEN;
        if kind == 0 {
            return Ok(pos);
        }
        pos += len.next_multiple_of(8);
    }
    if pos > limit {
        // An extension runs over the name or out of the cluster: QEMU would not open it.
        return Err(errno(EIO));
    }
    Ok(limit)
}

/// Writes `name` as the backing file name of the qcow2 image at `path`, as QEMU's
/// `qcow2_change_backing_file` does; an empty name removes it.
///
/// Fails with `EINVAL` for a name over 1023 bytes and `ENOSPC` when it does not fit in the
/// first cluster after the extensions (imago wants it to end before the cluster does).
pub(crate) fn set_backing_name(path: &Path, name: &str) -> io::Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(errno(EINVAL));
    }
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let header = read_qcow2_header(&file).map_err(|e| match e {
        HeaderError::Io(e) => e,
        _ => errno(EIO),
    })?;
    let mut cluster = vec![0u8; header.cluster_size() as usize];
    // A file shorter than a cluster leaves the rest zero, as if read past the end.
    read_prefix(&file, &mut cluster)?;
    let new_offset = extensions_end(&cluster, header.version)?;
    let new_end = new_offset + name.len();
    if new_end >= cluster.len() {
        return Err(errno(ENOSPC));
    }
    // Clear the old name so no stale bytes stay in the header cluster.
    let old_offset = be64(&cluster, BACKING_FIELDS as usize) as usize;
    let old_end = old_offset + be32(&cluster, BACKING_FIELDS as usize + 8) as usize;
    let clear_end = if old_offset == 0 {
        new_end
    } else {
        new_end.max(old_end)
    };
    let mut area = vec![0u8; clear_end - new_offset];
    area[..name.len()].copy_from_slice(name.as_bytes());
    let (offset, size) = if name.is_empty() {
        (0, 0)
    } else {
        (new_offset as u64, name.len() as u32)
    };
    let mut fields = [0u8; 12];
    fields[..8].copy_from_slice(&offset.to_be_bytes());
    fields[8..].copy_from_slice(&size.to_be_bytes());
    // The name first, then the pointer to it: a crash in between leaves the old pointer at a
    // zeroed or new name rather than at a half-written one.
    file.write_all_at(&area, new_offset as u64)?;
    file.sync_data()?;
    file.write_all_at(&fields, BACKING_FIELDS)?;
    file.sync_data()
}
