//! The device-facing block backend: a named handle on a root node.
//!
//! A backend is `Send + Sync`: an I/O thread calls the I/O methods while QMP
//! reads [`BlockBackend::stats`] from another thread. Reads, writes, flushes and
//! write-zeroes share the root node's lock (imago serialises metadata updates
//! itself); discard and resize take it exclusively. Statistics are atomics.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use imago::format::PreallocateMode;

use crate::node::{BlockNode, NodeError};

mod error;
mod vectored;

use crate::stats::{Acct, BlockStats, IoKind};
use crate::throttle::{Throttle, ThrottleConfig, ThrottleError};
pub use error::BackendError;

/// A block backend (QEMU's `BlockBackend`): what a device attaches to.
#[derive(Debug)]
pub struct BlockBackend {
    name: String,
    root: Arc<BlockNode>,
    read_only: bool,
    stats: BlockStats,
    throttle: Throttle,
}

impl BlockBackend {
    /// Attaches a backend called `name` to the format node `root`.
    ///
    /// The backend is read-only if the node is or if `read_only` is set.
    pub fn new(
        name: impl Into<String>,
        root: Arc<BlockNode>,
        read_only: bool,
    ) -> Result<Self, BackendError> {
        if !root.has_image() {
            return Err(NodeError::NoImage(root.node_name().to_string()).into());
        }
        Ok(BlockBackend {
            name: name.into(),
            read_only: read_only || root.read_only(),
            root,
            stats: BlockStats::new(),
            throttle: Throttle::new(),
        })
    }

    /// The backend's name (the drive id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root node.
    pub fn root(&self) -> &Arc<BlockNode> {
        &self.root
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The I/O statistics.
    pub fn stats(&self) -> &BlockStats {
        &self.stats
    }

    /// Sets the I/O limits (QMP `block_set_io_throttle`); all-zero rates remove them.
    ///
    /// As in QEMU, a throttled backend belongs to a group: the one `config` names,
    /// else the one it is already in, else one named after the backend. (Groups are
    /// names only: each backend has its own buckets.)
    pub fn set_throttle(&self, mut config: ThrottleConfig) -> Result<(), ThrottleError> {
        if !config.is_enabled() {
            config.group = None;
        } else if config.group.is_none() {
            config.group = Some(
                self.throttle
                    .config()
                    .group
                    .unwrap_or_else(|| self.name.clone()),
            );
        }
        self.throttle.set_config(config)
    }

    /// The I/O limits in force, with the group name when throttled.
    pub fn throttle_config(&self) -> ThrottleConfig {
        self.throttle.config()
    }

    /// Asks to do a request of `bytes` now: `Ok` means go (it is accounted), `Err(d)` means
    /// ask again after `d` (nothing is accounted). I/O methods do not call this themselves.
    pub fn throttle_admit(&self, write: bool, bytes: u64) -> Result<(), Duration> {
        self.throttle.admit(write, bytes)
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.root.size()
    }

    /// Checks that `offset..offset+len` lies within the disk.
    fn check_range(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(BackendError::OutOfRange { offset, len, size }),
        }
    }

    /// Validates a request: range, and write permission if `write`.
    fn admit(&self, kind: IoKind, offset: u64, len: u64, write: bool) -> Result<(), BackendError> {
        let check = if write && self.read_only {
            Err(BackendError::ReadOnly)
        } else {
            self.check_range(offset, len)
        };
        match check {
            Err(_) => self.stats.invalid(kind),
            Ok(()) if write => self.root.before_write(offset, len),
            Ok(()) => {}
        }
        check
    }

    /// Ends a write-type request of `len` bytes at `offset`: records it and checks the
    /// thresholds below the root that depend on where it landed.
    fn wrote<T>(
        &self,
        offset: u64,
        len: u64,
        acct: Acct,
        result: io::Result<T>,
    ) -> Result<T, BackendError> {
        if result.is_ok() {
            self.stats.wrote_up_to(offset + len);
            self.root.after_write(offset, len);
        }
        self.account(acct, result)
    }

    /// Finishes accounting `acct` according to `result`.
    fn account<T>(&self, acct: Acct, result: io::Result<T>) -> Result<T, BackendError> {
        match result {
            Ok(v) => {
                self.stats.done(acct);
                Ok(v)
            }
            Err(e) => {
                self.stats.failed(acct);
                Err(e.into())
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let len = buf.len() as u64;
        self.admit(IoKind::Read, offset, len, false)?;
        let acct = self.stats.start(IoKind::Read, len);
        let access = self.root.access()?;
        let result = access.read(buf, offset);
        self.account(acct, result)
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackendError> {
        let len = buf.len() as u64;
        self.admit(IoKind::Write, offset, len, true)?;
        let acct = self.stats.start(IoKind::Write, len);
        let result = self.root.access()?.write(buf, offset);
        self.wrote(offset, len, acct, result)
    }

    /// Makes completed writes durable: flushes imago's caches and syncs the files.
    pub fn flush(&self) -> Result<(), BackendError> {
        let acct = self.stats.start(IoKind::Flush, 0);
        let access = self.root.access()?;
        let result = access.flush().and_then(|()| access.sync());
        self.account(acct, result)
    }

    /// Discards `len` bytes at `offset`; what reads back there afterwards is unspecified.
    ///
    /// Discard is advisory: a format that cannot discard ignores the request.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.admit(IoKind::Unmap, offset, len, true)?;
        let acct = self.stats.start(IoKind::Unmap, len);
        let result = match self
            .root
            .with_image_mut(|image| image.discard_to_any(offset, len))?
        {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
            other => other,
        };
        self.root.after_write(offset, len);
        self.account(acct, result)
    }

    /// Makes `len` bytes at `offset` read as zeroes; with `may_unmap`, frees them if possible.
    pub fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), BackendError> {
        self.admit(IoKind::Write, offset, len, true)?;
        let acct = self.stats.start(IoKind::Write, len);
        let result = if may_unmap {
            self.root
                .with_image_mut(|image| image.discard_to_zero(offset, len))?
        } else {
            self.root.access()?.write_zeroes(offset, len)
        };
        self.wrote(offset, len, acct, result)
    }

    /// Resizes the disk to `new_size` bytes, as QEMU's `block_resize` does.
    ///
    /// Growing: the new range reads as zeroes. Without a backing layer, unallocated clusters
    /// and a raw file's new tail already do, so nothing is written: zero preallocation would
    /// write L2 tables for the whole new range, which for a large size fills the host's
    /// disk. With a backing layer the new range is zeroed explicitly, so that the backing
    /// file does not show through.
    ///
    /// Shrinking drops the data past `new_size`: a raw file is truncated; a qcow2 image frees
    /// the clusters that lie wholly past the end (the one the end falls in keeps its bytes,
    /// as in QEMU, and shows them again if the disk grows back without a backing layer).
    ///
    /// As in QEMU, a qcow2 version 2 image with internal snapshots cannot be resized.
    pub fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        let layer = self.root.layer();
        if layer.qcow2_version == Some(2) && layer.snapshots > 0 {
            return Err(BackendError::V2Snapshots);
        }
        let mode = if self.root.backing_child().is_some() {
            PreallocateMode::Zero
        } else {
            PreallocateMode::None
        };
        self.root
            .with_image_mut(|image| image.resize(new_size, mode))??;
        // The new size lives in cached metadata until a flush; make it durable now rather
        // than at the guest's next flush.
        self.flush()
    }
}
