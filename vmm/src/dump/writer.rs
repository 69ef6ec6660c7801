//! Writes a prepared dump to its descriptor: the header, then guest memory straight from the
//! host mapping in large writes. It runs in the forked writer process, so it allocates
//! nothing and calls only async-signal-safe functions (write, pwrite, fstat, ftruncate).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Bytes per write: large enough to amortise the syscall, small enough for `query-dump` to
/// see progress.
const WRITE_CHUNK: usize = 16 << 20;
/// Granularity of the all-zero check that leaves holes in a regular file.
const PAGE: usize = 4096;

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
    },
}

/// Why the write stopped: the dump-relative offset and errno (-1: no errno).
pub type Failure = (u64, i32);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Writes all of `buf` at dump offset `at`, adding what each write took to `count`.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes.
unsafe fn put(
    fd: RawFd,
    sink: Sink,
    at: u64,
    buf: *const u8,
    len: usize,
    count: Option<&AtomicU64>,
) -> Result<(), Failure> {
    let mut done = 0usize;
    while done < len {
        let p = buf.wrapping_add(done).cast::<libc::c_void>();
        let n = match sink {
            // SAFETY: p is readable for len - done bytes.
            Sink::Stream => unsafe { libc::write(fd, p, len - done) },
            Sink::Sparse { base } => {
                let off = (base + at + done as u64) as libc::off_t;
                // SAFETY: p is readable for len - done bytes.
                unsafe { libc::pwrite(fd, p, len - done, off) }
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
    fd: RawFd,
    sink: Sink,
    at: u64,
    p: *const u8,
    len: usize,
    count: &AtomicU64,
) -> Result<(), Failure> {
    if let Sink::Stream = sink {
        // SAFETY: the caller's promise.
        return unsafe { put(fd, sink, at, p, len, Some(count)) };
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
                unsafe { put(fd, sink, at + run_start as u64, run, n_run, Some(count))? };
            }
            count.fetch_add(n as u64, Ordering::Release);
            run_start = off + n;
        }
        off += n;
    }
    if run_start < len {
        let (run, n_run) = (p.wrapping_add(run_start), len - run_start);
        // SAFETY: run_start..len lies within p..p + len.
        unsafe { put(fd, sink, at + run_start as u64, run, n_run, Some(count))? };
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
    // SAFETY: header is a live slice.
    unsafe { put(fd, sink, 0, header.as_ptr(), header.len(), None)? };
    let mut at = header.len() as u64;
    for c in chunks {
        let mut done = 0usize;
        while done < c.len {
            let n = WRITE_CHUNK.min(c.len - done);
            let p = c.ptr.wrapping_add(done);
            // SAFETY: done + n <= c.len, readable by the caller's promise.
            unsafe { put_memory(fd, sink, at, p, n, &progress.written)? };
            done += n;
            at += n as u64;
        }
    }
    if let Sink::Sparse { base } = sink {
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
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn run(sink_sparse: bool) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "petrel-writer-{}-{sink_sparse}",
            std::process::id()
        ));
        let mut mem = vec![0u8; 5 * PAGE + 100];
        mem[PAGE + 7] = 1; // page 1 non-zero, pages 0, 2, 3 zero
        mem[4 * PAGE] = 2;
        mem[5 * PAGE + 99] = 3; // the tail
        let f = std::fs::File::create(&dir).unwrap();
        let sink = if sink_sparse {
            Sink::Sparse { base: 0 }
        } else {
            Sink::Stream
        };
        let chunks = [
            HostChunk {
                ptr: mem.as_ptr(),
                len: 2 * PAGE,
            },
            HostChunk {
                ptr: mem[2 * PAGE..].as_ptr(),
                len: 3 * PAGE + 100,
            },
        ];
        let p = ProgressData::default();
        // SAFETY: the chunks point into `mem`, alive and unchanged meanwhile.
        unsafe { write_dump(f.as_raw_fd(), sink, b"HEAD", &chunks, &p) }.unwrap();
        assert_eq!(p.written.load(Ordering::Acquire), mem.len() as u64);
        let mut out = Vec::new();
        std::fs::File::open(&dir)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        std::fs::remove_file(&dir).unwrap();
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&mem);
        assert_eq!(out, want);
        out
    }

    #[test]
    fn stream_and_sparse_write_the_same_bytes() {
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn a_trailing_hole_still_gives_the_full_length() {
        let path = std::env::temp_dir().join(format!("petrel-writer-hole-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let mem = vec![0u8; 3 * PAGE];
        let chunks = [HostChunk {
            ptr: mem.as_ptr(),
            len: mem.len(),
        }];
        let p = ProgressData::default();
        // SAFETY: the chunk points into `mem`.
        unsafe { write_dump(f.as_raw_fd(), Sink::Sparse { base: 0 }, b"H", &chunks, &p) }.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 + 3 * PAGE as u64);
        std::fs::remove_file(&path).unwrap();
    }
}
