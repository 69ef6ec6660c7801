//! Peeking at a qcow2 header: format probing and the few fields imago does not expose;
//! and rewriting the backing file name, which imago treats as immutable.

use std::fs::File;
use std::os::unix::fs::FileExt;

mod backing_name;

pub(crate) use backing_name::set_backing_name;

/// The qcow2 magic, `QFI\xfb`.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Length of a version 2 header, the shortest valid qcow2 header.
const V2_HEADER_LEN: usize = 72;

/// Errors reading a qcow2 header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Reading the file failed.
    #[error("cannot read header: {0}")]
    Io(#[from] std::io::Error),
    /// The file is shorter than a qcow2 header.
    #[error("qcow2 header truncated ({0} bytes)")]
    Truncated(usize),
    /// The magic is not the qcow2 magic.
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    /// The version field is neither 2 nor 3.
    #[error("unsupported qcow2 version {0}")]
    Version(u32),
    /// The cluster size is outside 512 B..2 MiB.
    #[error("invalid qcow2 cluster bits {0}")]
    ClusterBits(u32),
}

/// The fields of a qcow2 header petrel needs beyond what imago gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Encryption method (0 = none).
    pub crypt_method: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
}

impl Qcow2Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// Reads up to `buf.len()` bytes from the start of `file`; returns how many were read.
fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether `file` starts with the qcow2 magic (QEMU's probe for qcow2).
pub fn probe_qcow2(file: &File) -> Result<bool, HeaderError> {
    let mut magic = [0u8; 4];
    let n = read_prefix(file, &mut magic)?;
    Ok(n == magic.len() && magic == QCOW2_MAGIC)
}

/// Big-endian u32 at `off` of `buf`.
fn be32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_be_bytes(b)
}

/// Big-endian u64 at `off` of `buf`.
fn be64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_be_bytes(b)
}

/// Reads and checks the qcow2 header at the start of `file`.
pub fn read_qcow2_header(file: &File) -> Result<Qcow2Header, HeaderError> {
    let mut buf = [0u8; V2_HEADER_LEN];
    let n = read_prefix(file, &mut buf)?;
    if n >= 4 && buf[..4] != QCOW2_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if n < V2_HEADER_LEN {
        return Err(HeaderError::Truncated(n));
    }
    let version = be32(&buf, 4);
    if !(2..=3).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let cluster_bits = be32(&buf, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(HeaderError::ClusterBits(cluster_bits));
    }
    Ok(Qcow2Header {
        version,
        cluster_bits,
        size: be64(&buf, 24),
        crypt_method: be32(&buf, 32),
        nb_snapshots: be32(&buf, 60),
    })
}
