//! Guest memory dumps front ends may ask for: `dump-guest-memory`, `query-dump`, `memsave`
//! and `pmemsave`.

use std::path::PathBuf;
use std::sync::Arc;

use petrel_qmp::dispatch::FdStore;

/// The named descriptors of the monitor a request came from: `dump-guest-memory` takes an
/// `fd:NAME` descriptor out of them at the point QEMU does. Two handles are equal when they
/// are the same monitor's.
#[derive(Clone, Debug)]
pub struct MonitorFds(pub FdStore);

impl PartialEq for MonitorFds {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MonitorFds {}

/// `dump-guest-memory`'s arguments, as the schema checked them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpArgs {
    /// Map virtual addresses through the guest's page tables.
    pub paging: bool,
    /// `file:PATH` or `fd:NAME`.
    pub protocol: String,
    /// Answer at once and dump in the background.
    pub detach: bool,
    /// First guest physical address of the filter.
    pub begin: Option<i64>,
    /// Bytes of the filter.
    pub length: Option<i64>,
    /// Where `fd:NAME` is looked up.
    pub fds: MonitorFds,
}

/// A dump request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpRequest {
    /// Start a dump (`dump-guest-memory`); the answer comes when it ends unless detached.
    Start(DumpArgs),
    /// The current or last dump's progress (`query-dump`).
    Query,
    /// Save guest virtual memory as vCPU `cpu_index` sees it (`memsave`).
    MemSave {
        /// Virtual address of the first byte.
        addr: i64,
        /// Bytes to save.
        size: i64,
        /// The file to write.
        path: PathBuf,
        /// The vCPU whose page tables translate (default 0).
        cpu_index: Option<i64>,
    },
    /// Save guest physical memory (`pmemsave`).
    PmemSave {
        /// Physical address of the first byte.
        addr: i64,
        /// Bytes to save.
        size: i64,
        /// The file to write.
        path: PathBuf,
    },
}

/// A dump's state, as QMP's DumpStatus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpStatus {
    /// No dump since petrel started.
    None,
    /// A dump is being written.
    Active,
    /// The last dump was written.
    Completed,
    /// The last dump failed.
    Failed,
}

/// The progress of the current or last dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpProgress {
    /// Its state.
    pub status: DumpStatus,
    /// Guest memory bytes written so far.
    pub completed: u64,
    /// Guest memory bytes the dump writes in all.
    pub total: u64,
}

/// Dump answers.
#[derive(Debug)]
pub enum DumpData {
    /// `Query`.
    Progress(DumpProgress),
}
