//! The pages in the balloon, and what inflating and deflating does to their host memory.
//!
//! Inflating a page discards the host memory behind it (`MADV_DONTNEED` on a private
//! mapping, `MADV_REMOVE` on a shared one, as QEMU's `ram_block_discard_range` does), so the
//! VMM's resident set shrinks; the guest reads zeroes if it touches the page again. Deflating
//! only forgets the page (and hints `MADV_WILLNEED`, as QEMU does): anonymous memory comes
//! back on the first touch. Page numbers the guest sends that are not guest RAM are counted
//! and ignored.

use serde::{Deserialize, Serialize};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The balloon's page size: page frame numbers are in 4 KiB units whatever the host's.
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// The set of guest page frames in the balloon: a bitmap that grows with the highest frame
/// seen, and the count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSet {
    words: Vec<u64>,
    count: u64,
}

/// [`PageSet`] as runs of consecutive frames, for saving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRuns(pub Vec<(u32, u32)>);

impl PageSet {
    /// Pages in the set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether `pfn` is in the set.
    pub fn contains(&self, pfn: u32) -> bool {
        let (w, b) = Self::slot(pfn);
        self.words.get(w).is_some_and(|word| word & b != 0)
    }

    /// Adds `pfn`; false if it was there already.
    pub fn insert(&mut self, pfn: u32) -> bool {
        let (w, b) = Self::slot(pfn);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & b == 0;
        self.words[w] |= b;
        self.count += u64::from(fresh);
        fresh
    }

    /// Removes `pfn`; false if it was not there.
    pub fn remove(&mut self, pfn: u32) -> bool {
        let (w, b) = Self::slot(pfn);
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        let present = *word & b != 0;
        *word &= !b;
        self.count -= u64::from(present);
        present
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.clear();
        self.count = 0;
    }

    /// The set as runs `(first pfn, length)`, in ascending order.
    pub fn runs(&self) -> PageRuns {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                // The bitmap is indexed by u32 frames, so this fits.
                let pfn = (w as u32) * 64 + bit;
                match runs.last_mut() {
                    Some((start, len)) if start.wrapping_add(*len) == pfn => *len += 1,
                    _ => runs.push((pfn, 1)),
                }
            }
        }
        PageRuns(runs)
    }

    /// The set holding `runs`.
    pub fn from_runs(runs: &PageRuns) -> PageSet {
        let mut set = PageSet::default();
        for &(start, len) in &runs.0 {
            for i in 0..len {
                match start.checked_add(i) {
                    Some(pfn) => {
                        set.insert(pfn);
                    }
                    None => break,
                }
            }
        }
        set
    }

    fn slot(pfn: u32) -> (usize, u64) {
        ((pfn / 64) as usize, 1 << (pfn % 64))
    }
}

/// What one inflate or deflate buffer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames added to (inflate) or removed from (deflate) the balloon.
    pub changed: u64,
    /// Frames that are guest RAM but were in the balloon already (inflate) or not in it
    /// (deflate).
    pub unchanged: u64,
    /// Frames outside guest RAM, ignored.
    pub outside: u64,
    /// The first of those.
    pub first_outside: Option<u32>,
}

/// A range of host memory to advise, grown while the frames stay contiguous on the host.
struct Run {
    host: usize,
    len: usize,
    shared: bool,
}

/// The host address of guest frame `pfn` and whether its mapping is shared; `None` if the
/// whole page is not guest RAM.
fn host_page(mem: &GuestMemoryMmap<()>, pfn: u32) -> Option<(usize, bool)> {
    let addr = GuestAddress(u64::from(pfn) << PAGE_SHIFT);
    let (region, offset) = mem.to_region_addr(addr)?;
    let end = offset.raw_value().checked_add(PAGE_SIZE)?;
    if end > region.len() {
        return None;
    }
    let host = region.get_host_address(offset).ok()?;
    let shared = region.flags() & libc::MAP_SHARED != 0;
    Some((host as usize, shared))
}

/// Applies `advice` to a run of host memory; failures are logged (the balloon is advisory).
fn advise(run: &Run, advice: libc::c_int) {
    // SAFETY: the run covers whole pages of guest RAM: it lies inside a live mapping owned by
    // the guest memory the caller borrows for the duration of the call. Guest memory is only
    // ever accessed through volatile accessors, never through Rust references, so discarding
    // the contents (the guest gave these pages up) breaks no aliasing rule.
    let rc = unsafe { libc::madvise(run.host as *mut libc::c_void, run.len, advice) };
    if rc != 0 {
        log::warn!(
            "virtio-balloon: madvise({:#x}, {:#x}, {advice}): {}",
            run.host,
            run.len,
            std::io::Error::last_os_error()
        );
    }
}

/// Walks `pfns`: a frame outside guest RAM is counted and skipped; every other one goes
/// through `update(pfn)` (true: the set changed) and has its host memory advised with
/// `advice(shared)`, as QEMU advises every valid frame, contiguous runs at once.
fn apply(
    mem: &GuestMemoryMmap<()>,
    pfns: &[u32],
    mut update: impl FnMut(u32) -> bool,
    advice: impl Fn(bool) -> libc::c_int,
) -> Outcome {
    let mut out = Outcome::default();
    let mut run: Option<Run> = None;
    for &pfn in pfns {
        let Some((host, shared)) = host_page(mem, pfn) else {
            out.outside += 1;
            out.first_outside.get_or_insert(pfn);
            continue;
        };
        if update(pfn) {
            out.changed += 1;
        } else {
            out.unchanged += 1;
        }
        match &mut run {
            Some(r) if r.host + r.len == host && r.shared == shared => r.len += PAGE_SIZE as usize,
            _ => {
                if let Some(r) = run.take() {
                    advise(&r, advice(r.shared));
                }
                run = Some(Run {
                    host,
                    len: PAGE_SIZE as usize,
                    shared,
                });
            }
        }
    }
    if let Some(r) = run {
        advise(&r, advice(r.shared));
    }
    out
}

/// Puts `pfns` in the balloon and discards their host memory. A frame already in the
/// balloon is discarded again (the guest may have touched it) but counted once.
pub fn inflate(mem: &GuestMemoryMmap<()>, set: &mut PageSet, pfns: &[u32]) -> Outcome {
    apply(
        mem,
        pfns,
        |pfn| set.insert(pfn),
        |shared| {
            if shared {
                libc::MADV_REMOVE
            } else {
                libc::MADV_DONTNEED
            }
        },
    )
}

/// Takes `pfns` out of the balloon. Their memory comes back zero-filled when the guest
/// touches it; `MADV_WILLNEED` only tells the host it will.
pub fn deflate(mem: &GuestMemoryMmap<()>, set: &mut PageSet, pfns: &[u32]) -> Outcome {
    apply(mem, pfns, |pfn| set.remove(pfn), |_| libc::MADV_WILLNEED)
}
