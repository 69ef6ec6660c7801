//! Vectored reads and writes straight between the image and caller memory
//! (a device's guest RAM), so a request needs no bounce buffer.

use imago::io_buffers::{IoVector, IoVectorMut};

use super::BlockBackend;
use crate::backend::BackendError;
use crate::stats::IoKind;

impl BlockBackend {
    /// Reads `bufs.len()` bytes at `offset` into the buffers of `bufs`.
    pub fn readv(&self, offset: u64, bufs: IoVectorMut<'_>) -> Result<(), BackendError> {
        let len = bufs.len();
        self.admit(IoKind::Read, offset, len, false)?;
        let acct = self.stats.start(IoKind::Read, len);
        let access = self.root.access()?;
        let result = access.readv(bufs, offset);
        self.account(acct, result)
    }

    /// Writes the buffers of `bufs` at `offset`.
    pub fn writev(&self, offset: u64, bufs: IoVector<'_>) -> Result<(), BackendError> {
        let len = bufs.len();
        self.admit(IoKind::Write, offset, len, true)?;
        let acct = self.stats.start(IoKind::Write, len);
        let result = self.root.access()?.writev(bufs, offset);
        self.wrote(offset, len, acct, result)
    }
}
