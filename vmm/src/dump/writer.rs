//! Writes a prepared dump to its descriptor: the header, then guest memory straight from the
//! host mapping in large writes. It runs in the forked writer process, so it allocates
//! nothing and calls only async-signal-safe functions (write, pwrite, fcntl, fstat,
//! ftruncate).

use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Bytes per write: large enough to amortise the syscall, small enough for `query-dump` to
/// see progress.
const WRITE_CHUNK: usize = 16 << 20;
/// Granularity of the all-zero check that leaves holes in a regular file.
const PAGE: usize = 4096;
/// What `O_DIRECT` asks to be aligned: buffer address, file offset and length. A page covers
/// every logical block size up to 4 KiB.
const DIRECT_ALIGN: usize = 4096;
/// The bounce buffer's size. Direct writes never read guest RAM in place: pinning the
/// writer's copy-on-write pages for I/O would make the kernel copy each of them first
/// (a read-only pin unshares an anonymous page), so the writer copies into its own buffer.
const BOUNCE: usize = 4 << 20;

/// An anonymous mapping the direct writes go out from, page aligned.
struct Bounce {
    ptr: *mut u8,
}

impl Bounce {
    /// Maps the buffer; None if there is no memory for it.
    fn new() -> Option<Bounce> {
        // SAFETY: a fresh private anonymous mapping; nothing existing is affected. mmap is
        // a plain system call, fine in the forked writer.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BOUNCE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(Bounce { ptr: p.cast() })
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: mapped in new() with this size, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), BOUNCE) };
    }
}

/// Progress shared between the writer process and petrel (it lives in a shared mapping).
#[derive(Default)]
#[repr(C)]
pub struct ProgressData {
    /// Guest memory bytes written so far.
    pub written: AtomicU64,
    /// On failure: the dump-relative file offset of the write that failed.
    pub failed_at: AtomicU64,
    /// On failure: errno, or -1 when there is none (a short write that wrote nothing).
    pub errno: AtomicI32,
}

/// A run of guest RAM, by its host address.
#[derive(Clone, Copy, Debug)]
pub struct HostChunk {
    /// First byte in petrel's mapping of guest RAM.
    pub ptr: *const u8,
    /// Bytes.
    pub len: usize,
}

// SAFETY: a HostChunk is an address into guest RAM, which lives as long as petrel; the
// writer only reads through it, in the writer process whose copy nothing else changes.
unsafe impl Send for HostChunk {}

/// Where and how the bytes go.
#[derive(Clone, Copy, Debug)]
pub enum Sink {
    /// Sequential `write` (pipes, sockets, append-mode files).
    Stream,
    /// `pwrite` from `base`, leaving all-zero pages as holes: a regular file whose bytes
    /// from `base` on are not there yet.
    Sparse {
        /// The descriptor's offset when the dump started.
        base: u64,
        /// Write guest memory with `O_DIRECT`, through a bounce buffer. A dump is written
        /// once and seldom read soon: going around the page cache, a dump of many GiB
        /// neither evicts the host's cache nor waits on dirty-page writeback. Only for a
        /// file petrel created, whose file status flags nobody else shares.
        direct: bool,
    },
}

/// Why the write stopped: the dump-relative offset and errno (-1: no errno).
pub type Failure = (u64, i32);

/// The calling thread's errno (async-signal-safe: it only reads it).
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Turns `O_DIRECT` on or off for `fd`; false if the file system refuses it.
fn set_direct(fd: RawFd, on: bool) -> bool {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return false;
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL changes only the descriptor's status flags.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) == 0 }
}

/// The descriptor being written, and whether it is in `O_DIRECT` mode now.
struct Out {
    fd: RawFd,
    sink: Sink,
    direct: Cell<bool>,
    /// Where direct writes go out from (there while `direct` may be on).
    bounce: Option<Bounce>,
}

impl Out {
    /// Leaves `O_DIRECT` for good: the rest goes through the page cache.
    fn buffered(&self) {
        if self.direct.replace(false) {
            set_direct(self.fd, false);
        }
    }

    /// Writes all of `buf` at dump offset `at`, adding what each write took to `count`.
    ///
    /// # Safety
    /// `buf` must be valid for reads of `len` bytes.
    unsafe fn put(
        &self,
        at: u64,
        buf: *const u8,
        len: usize,
        count: Option<&AtomicU64>,
    ) -> Result<(), Failure> {
        if self.direct.get() {
            // SAFETY: the caller's promise.
            return unsafe { self.put_direct(at, buf, len, count) };
        }
        let mut done = 0usize;
        while done < len {
            let p = buf.wrapping_add(done).cast();
            let n = match self.sink {
                // SAFETY: p is readable for len - done bytes.
                Sink::Stream => unsafe { libc::write(self.fd, p, len - done) },
                Sink::Sparse { base, .. } => {
                    let off = (base + at + done as u64) as libc::off_t;
                    // SAFETY: p is readable for len - done bytes.
                    unsafe { libc::pwrite(self.fd, p, len - done, off) }
                }
            };
            match n {
                n if n > 0 => {
                    done += n as usize;
                    if let Some(c) = count {
                        c.fetch_add(n as u64, Ordering::Release);
                    }
                }
                0 => return Err((at + done as u64, -1)),
                _ if errno() == libc::EINTR => {}
                _ => return Err((at + done as u64, errno())),
            }
        }
        Ok(())
    }

    /// [`Out::put`] in `O_DIRECT` mode: copies through the bounce buffer. Anything the
    /// direct write cannot take (an unaligned offset or length, a file system refusing it,
    /// a short write) leaves direct mode and goes on through the page cache.
    ///
    /// # Safety
    /// `buf` must be valid for reads of `len` bytes.
    unsafe fn put_direct(
        &self,
        at: u64,
        buf: *const u8,
        len: usize,
        count: Option<&AtomicU64>,
    ) -> Result<(), Failure> {
        let (Sink::Sparse { base, .. }, Some(bounce)) = (self.sink, &self.bounce) else {
            // Direct mode is entered only with both; buffered is right anyway, and the
            // writer process must not panic.
            self.buffered();
            // SAFETY: the caller's promise.
            return unsafe { self.put(at, buf, len, count) };
        };
        let mut done = 0usize;
        loop {
            if done == len {
                return Ok(());
            }
            let off = base + at + done as u64;
            let n = BOUNCE.min(len - done);
            if !(off as usize | n).is_multiple_of(DIRECT_ALIGN) {
                break;
            }
            // SAFETY: buf + done is readable for n bytes; the bounce buffer, ours alone, is
            // BOUNCE >= n bytes long.
            unsafe { std::ptr::copy_nonoverlapping(buf.wrapping_add(done), bounce.ptr, n) };
            // SAFETY: the bounce buffer holds n initialised bytes.
            let w = unsafe { libc::pwrite(self.fd, bounce.ptr.cast(), n, off as libc::off_t) };
            if w == n as isize {
                done += n;
                if let Some(c) = count {
                    c.fetch_add(n as u64, Ordering::Release);
                }
            } else if w < 0 && errno() == libc::EINTR {
                continue;
            } else if w < 0 && errno() != libc::EINVAL {
                return Err((at + done as u64, errno()));
            } else {
                // EINVAL: the file system takes the flag but not this write. A short write
                // (a full disk, most likely) is retried, and its error found, buffered.
                break;
            }
        }
        self.buffered();
        // SAFETY: buf + done is readable for len - done bytes.
        unsafe { self.put(at + done as u64, buf.wrapping_add(done), len - done, count) }
    }
}

/// Whether the `len` bytes at `p` are all zero.
///
/// # Safety
/// `p` must be valid for reads of `len` bytes that nothing writes meanwhile.
unsafe fn all_zero(p: *const u8, len: usize) -> bool {
    // SAFETY: the caller's promise.
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    // SAFETY: any bit pattern is a valid u64.
    let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words
            .chunks(8)
            .all(|c| c.iter().fold(0, |acc, &w| acc | w) == 0)
}

/// Writes `len` bytes of guest memory at dump offset `at`, skipping all-zero pages in
/// sparse mode; `count` follows the bytes done (skipped ones included).
///
/// # Safety
/// `p` must be valid for reads of `len` bytes that nothing writes meanwhile.
unsafe fn put_memory(
    out: &Out,
    at: u64,
    p: *const u8,
    len: usize,
    count: &AtomicU64,
) -> Result<(), Failure> {
    if let Sink::Stream = out.sink {
        // SAFETY: the caller's promise.
        return unsafe { out.put(at, p, len, Some(count)) };
    }
    let mut run_start = 0usize; // start of the current run of non-zero pages
    let mut off = 0usize;
    while off < len {
        let n = PAGE.min(len - off);
        // SAFETY: off + n <= len.
        if unsafe { all_zero(p.wrapping_add(off), n) } {
            if run_start < off {
                let (run, n_run) = (p.wrapping_add(run_start), off - run_start);
                // SAFETY: run_start..off lies within p..p + len.
                unsafe { out.put(at + run_start as u64, run, n_run, Some(count))? };
            }
            count.fetch_add(n as u64, Ordering::Release);
            run_start = off + n;
        }
        off += n;
    }
    if run_start < len {
        let (run, n_run) = (p.wrapping_add(run_start), len - run_start);
        // SAFETY: run_start..len lies within p..p + len.
        unsafe { out.put(at + run_start as u64, run, n_run, Some(count))? };
    }
    Ok(())
}

/// Writes `header` then every chunk, updating `progress`; in sparse mode the file is then
/// extended over a trailing hole.
///
/// # Safety
/// Every chunk must be readable for its length and unchanged while this runs (the writer
/// process's private copy of guest RAM).
pub unsafe fn write_dump(
    fd: RawFd,
    sink: Sink,
    header: &[u8],
    chunks: &[HostChunk],
    progress: &ProgressData,
) -> Result<(), Failure> {
    let bounce = match sink {
        Sink::Sparse { direct: true, .. } => Bounce::new(),
        _ => None,
    };
    let out = Out {
        fd,
        sink,
        direct: Cell::new(false),
        bounce,
    };
    // SAFETY: header is a live slice.
    unsafe { out.put(0, header.as_ptr(), header.len(), None)? };
    if out.bounce.is_some() {
        out.direct.set(set_direct(fd, true));
    }
    let mut at = header.len() as u64;
    let written = (|| {
        for c in chunks {
            let mut done = 0usize;
            while done < c.len {
                let n = WRITE_CHUNK.min(c.len - done);
                let p = c.ptr.wrapping_add(done);
                // SAFETY: done + n <= c.len, readable by the caller's promise.
                unsafe { put_memory(&out, at, p, n, &progress.written)? };
                done += n;
                at += n as u64;
            }
        }
        Ok(())
    })();
    out.buffered();
    written?;
    if let Sink::Sparse { base, .. } = sink {
        let end = base + at;
        // SAFETY: an all-zero stat is a valid out buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: st is a valid out pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err((at, errno()));
        }
        // SAFETY: plain syscall on our descriptor.
        if (st.st_size as u64) < end && unsafe { libc::ftruncate(fd, end as libc::off_t) } != 0 {
            return Err((at, errno()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    /// A file next to the test binary: on the build's disk, where `O_DIRECT` means going
    /// around the page cache (in a tmpfs every byte is page cache).
    fn scratch(name: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap();
        dir.join(format!("petrel-writer-{name}-{}", std::process::id()))
    }

    /// Page-aligned, zeroed memory standing in for guest RAM.
    struct Ram {
        ptr: *mut u8,
        layout: Layout,
    }

    impl Ram {
        fn new(len: usize) -> Ram {
            let layout = Layout::from_size_align(len, PAGE).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Ram { ptr, layout }
        }

        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: ptr holds layout.size() initialised bytes until drop.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
        }

        fn chunk(&self, from: usize, len: usize) -> HostChunk {
            assert!(from + len <= self.layout.size());
            HostChunk {
                ptr: self.ptr.wrapping_add(from),
                len,
            }
        }
    }

    impl Drop for Ram {
        fn drop(&mut self) {
            // SAFETY: allocated in new() with this layout.
            unsafe { dealloc(self.ptr, self.layout) };
        }
    }

    /// Dumps `ram` after `header` through `sink` and returns the file's bytes.
    fn dump(name: &str, sink: Sink, header: &[u8], ram: &mut Ram, split: usize) -> Vec<u8> {
        let path = scratch(name);
        let f = std::fs::File::create(&path).unwrap();
        let len = ram.bytes().len();
        let chunks = [ram.chunk(0, split), ram.chunk(split, len - split)];
        let p = ProgressData::default();
        // SAFETY: the chunks point into `ram`, alive and unchanged meanwhile.
        unsafe { write_dump(f.as_raw_fd(), sink, header, &chunks, &p) }.unwrap();
        assert_eq!(p.written.load(Ordering::Acquire), len as u64);
        // SAFETY: F_GETFL only reads the flags.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_DIRECT, 0, "the writer leaves O_DIRECT off");
        let out = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut want = header.to_vec();
        want.extend_from_slice(ram.bytes());
        assert_eq!(out, want);
        out
    }

    fn sparse(direct: bool) -> Sink {
        Sink::Sparse { base: 0, direct }
    }

    #[test]
    fn stream_sparse_and_direct_write_the_same_bytes() {
        let mut ram = Ram::new(6 * PAGE);
        ram.bytes()[PAGE + 7] = 1; // page 1 non-zero, pages 0, 2, 3 zero
        ram.bytes()[4 * PAGE] = 2;
        ram.bytes()[5 * PAGE + 99] = 3;
        // "HEAD" leaves memory unaligned in the file: direct falls back to the page cache.
        let stream = dump("stream", Sink::Stream, b"HEAD", &mut ram, 2 * PAGE);
        assert_eq!(
            stream,
            dump("sparse", sparse(false), b"HEAD", &mut ram, 2 * PAGE)
        );
        assert_eq!(
            stream,
            dump("direct", sparse(true), b"HEAD", &mut ram, 2 * PAGE)
        );
        // A chunk of odd length in the middle: the writes after it are unaligned too.
        let odd = dump("odd", sparse(true), &[7u8; PAGE], &mut ram, 2 * PAGE + 100);
        assert_eq!(&odd[PAGE..], &stream[4..]);
    }

    #[test]
    fn direct_writes_go_around_the_page_cache() {
        const PAGES: usize = 64;
        let mut ram = Ram::new(PAGES * PAGE);
        // Every fifth page zero: the memory goes out in several runs around holes.
        for (i, b) in ram.bytes().iter_mut().enumerate() {
            if (i / PAGE) % 5 != 2 {
                *b = (i / PAGE) as u8 | 1;
            }
        }
        let path = scratch("uncached");
        // Readable too, for the mapping that asks the page cache what it holds.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let chunks = [ram.chunk(0, PAGES * PAGE)];
        let p = ProgressData::default();
        let header = [0x55u8; PAGE];
        // SAFETY: the chunk points into `ram`.
        unsafe { write_dump(f.as_raw_fd(), sparse(true), &header, &chunks, &p) }.unwrap();
        let len = (PAGES + 1) * PAGE;
        assert_eq!(f.metadata().unwrap().len(), len as u64);
        // SAFETY: a fresh read-only shared mapping of the file's len bytes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let mut resident = vec![0u8; PAGES + 1];
        // SAFETY: map is a live mapping of len bytes; resident has a byte per page.
        let r = unsafe { libc::mincore(map, len, resident.as_mut_ptr()) };
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(map, len) };
        std::fs::remove_file(&path).unwrap();
        assert_eq!(r, 0);
        let cached = resident[1..].iter().filter(|&&b| b & 1 != 0).count();
        assert_eq!(cached, 0, "guest memory went through the page cache");
    }

    #[test]
    fn a_trailing_hole_still_gives_the_full_length() {
        let mut ram = Ram::new(3 * PAGE);
        let out = dump("hole", sparse(false), b"H", &mut ram, PAGE);
        assert_eq!(out.len(), 1 + 3 * PAGE);
    }
}
