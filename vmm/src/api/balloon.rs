//! Balloon and guest-RAM operations front ends may ask for.

/// A balloon or guest-RAM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalloonRequest {
    /// `balloon`: ask the guest to bring its memory to `value` bytes.
    SetTarget {
        /// The target size in bytes, as the client sent it.
        value: i64,
    },
    /// `query-balloon`.
    Query,
    /// `query-memdev`: the memory backends.
    QueryMemdev,
}

/// A memory backend as `query-memdev` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemdevInfo {
    /// The backend's id (QEMU's name for the machine's RAM).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// KSM may merge its pages (`MADV_MERGEABLE`).
    pub merge: bool,
    /// It goes into core dumps (no `MADV_DONTDUMP`).
    pub dump: bool,
    /// It was preallocated.
    pub prealloc: bool,
    /// It is a shared mapping.
    pub share: bool,
    /// Swap space is reserved for it (no `MAP_NORESERVE`).
    pub reserve: bool,
}

/// Balloon and guest-RAM answers.
#[derive(Debug)]
pub enum BalloonData {
    /// `Query`: the guest's memory in bytes, balloon deducted.
    Actual(i64),
    /// `QueryMemdev`.
    Memdevs(Vec<MemdevInfo>),
}
