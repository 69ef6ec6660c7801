//! The I/O thread: waits for queue notifications and serves requests.
//!
//! A request is a descriptor chain whose device-readable part holds the
//! 16-byte header (`type`, `reserved`, `sector`) followed by any data to
//! write or discard/write-zeroes segments, and whose device-writable part
//! holds any data to read followed by the status byte. The chain's framing
//! is not assumed: both parts are treated as byte streams over their
//! descriptors.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, warn};
use petrel_block::{BlockBackend, IoVector, IoVectorMut};
use virtio_bindings::virtio_blk;
use virtio_queue::QueueT;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, VolatileSlice,
};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::control::{DiskControl, IoErrorReport};
use super::policy::ErrorOutcome;
use super::{
    CacheMode, ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SEG, SECTOR_SHIFT,
};
use crate::virtio::io_thread::{epoll_for_input, signal_used};
use crate::virtio::{ActivatedQueue, GuestMemory, VirtioInterrupt};

/// Request header length.
const HEADER_LEN: u64 = 16;
/// Discard / write-zeroes segment length.
const SEGMENT_LEN: u64 = 16;
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
const FLAG_UNMAP: u32 = 1;
/// Largest data transfer of one read or write request buffered at once.
const MAX_TRANSFER: u64 = 64 << 20;
/// How long the thread watches an idle ring before it sleeps on the kick
/// eventfd (QEMU's I/O threads poll for up to 32 µs by default).
const POLL_WINDOW: Duration = Duration::from_micros(32);

/// Request status.
const S_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// What the I/O thread works with besides the queues.
pub(super) struct Context {
    pub(super) mem: GuestMemory,
    pub(super) backend: Arc<BlockBackend>,
    pub(super) serial: [u8; ID_BYTES],
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) read_only: bool,
    pub(super) cache: CacheMode,
    pub(super) control: Arc<DiskControl>,
    /// Signalled to end the thread; also ends waits for a resume or a throttle.
    pub(super) stop: EventFd,
}

/// Why a request did not complete.
enum Failure {
    /// The request itself is wrong: this status goes to the guest.
    Status(u8),
    /// The host failed it: the error policy decides.
    Host {
        write: bool,
        error: petrel_block::BackendError,
    },
    /// The device is stopping; drop the request.
    Stopped,
}

impl From<u8> for Failure {
    fn from(status: u8) -> Self {
        Failure::Status(status)
    }
}

/// The I/O thread's body: returns when `ctx.stop` is signalled.
pub(super) fn run(ctx: Context, mut queues: Vec<ActivatedQueue>) {
    let stop = &ctx.stop;
    let epoll = match setup_epoll(&queues, stop) {
        Ok(epoll) => epoll,
        Err(e) => {
            error!("virtio-blk: cannot set up epoll: {e}");
            return;
        }
    };
    let stop_token = queues.len() as u64;
    // Serve whatever the driver queued before the thread started (e.g. after
    // a restore).
    for q in &mut queues {
        if !ctx.process_queue(q) {
            return;
        }
    }
    let mut events = vec![EpollEvent::default(); queues.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("virtio-blk: epoll_wait failed: {e}");
                return;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == stop_token {
                return;
            }
            let Some(q) = queues.get_mut(token as usize) else {
                continue;
            };
            // Clear the eventfd before looking at the ring, so a kick
            // arriving while we process is not lost.
            let _ = q.notify.read();
            if !ctx.process_queue(q) {
                return;
            }
        }
    }
}

/// Watches the available ring for up to [`POLL_WINDOW`]; true once the
/// driver has posted a request.
fn poll_avail(mem: &GuestMemoryMmap<()>, q: &ActivatedQueue) -> bool {
    let start = Instant::now();
    loop {
        match q.queue.avail_idx(mem, Ordering::Acquire) {
            Ok(idx) if idx != Wrapping(q.queue.next_avail()) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if start.elapsed() >= POLL_WINDOW {
            return false;
        }
        std::hint::spin_loop();
    }
}

fn setup_epoll(queues: &[ActivatedQueue], stop: &EventFd) -> std::io::Result<Epoll> {
    let notifies = queues.iter().map(|q| q.notify.as_raw_fd());
    let fds = notifies.chain([stop.as_raw_fd()]);
    epoll_for_input(fds.zip(0u64..))
}

/// Device-readable and device-writable descriptors of one chain.
#[derive(Default)]
struct Segments {
    readable: Vec<(GuestAddress, u64)>,
    writable: Vec<(GuestAddress, u64)>,
}

fn total(segs: &[(GuestAddress, u64)]) -> u64 {
    segs.iter().map(|(_, len)| len).sum()
}

/// Calls `f(guest_address, range_in_buf)` for each piece of the `len` bytes that start at byte
/// `offset` of the stream `segs`; fails if the stream is shorter or a piece fails.
fn walk(
    segs: &[(GuestAddress, u64)],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), ()>,
) -> Result<(), ()> {
    let mut done = 0usize;
    for &(addr, seg_len) in segs {
        if done == len {
            break;
        }
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let n = ((seg_len - offset) as usize).min(len - done);
        f(addr.checked_add(offset).ok_or(())?, done..done + n)?;
        done += n;
        offset = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(())
    }
}

/// Reads `buf.len()` bytes at byte `offset` of the stream `segs`.
fn gather(
    mem: &GuestMemoryMmap<()>,
    segs: &[(GuestAddress, u64)],
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ()> {
    let len = buf.len();
    walk(segs, offset, len, |addr, r| {
        mem.read_slice(&mut buf[r], addr).map_err(|_| ())
    })
}

/// The guest memory behind the `len` bytes that start at byte `offset` of
/// the stream `segs`, one slice per piece; `None` if the stream is shorter
/// or a piece is not contiguous host memory (then the caller bounces).
fn guest_slices<'m>(
    mem: &'m GuestMemoryMmap<()>,
    segs: &[(GuestAddress, u64)],
    offset: u64,
    len: usize,
) -> Option<Vec<VolatileSlice<'m, ()>>> {
    let mut slices = Vec::with_capacity(segs.len());
    walk(segs, offset, len, |addr, r| {
        slices.push(mem.get_slice(addr, r.len()).map_err(|_| ())?);
        Ok(())
    })
    .ok()?;
    Some(slices)
}

/// Writes `buf` at byte `offset` of the stream `segs`.
fn scatter(
    mem: &GuestMemoryMmap<()>,
    segs: &[(GuestAddress, u64)],
    offset: u64,
    buf: &[u8],
) -> Result<(), ()> {
    walk(segs, offset, buf.len(), |addr, r| {
        mem.write_slice(&buf[r], addr).map_err(|_| ())
    })
}

impl Context {
    /// Serves every available request of `q`, signalling the driver after
    /// each batch if it asked to be. Before going back to sleep the thread
    /// watches the ring for [`POLL_WINDOW`] with notifications still off, as
    /// QEMU's I/O threads do: a driver that keeps its queue full then never
    /// has to exit to kick it. False if the device is stopping.
    fn process_queue(&self, q: &mut ActivatedQueue) -> bool {
        let mem = self.mem.as_ref();
        loop {
            if let Err(e) = q.queue.disable_notification(mem) {
                error!("virtio-blk: queue {}: {e}", q.index);
                return true;
            }
            let mut used_any = false;
            while let Some(chain) = q.queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let mut segs = Segments::default();
                for desc in chain {
                    let entry = (desc.addr(), u64::from(desc.len()));
                    if desc.is_write_only() {
                        segs.writable.push(entry);
                    } else {
                        segs.readable.push(entry);
                    }
                }
                let Some(used_len) = self.handle_request(&segs) else {
                    return false;
                };
                if let Err(e) = q.queue.add_used(mem, head, used_len) {
                    error!("virtio-blk: queue {}: add_used: {e}", q.index);
                }
                used_any = true;
            }
            if used_any {
                signal_used(mem, self.interrupt.as_ref(), q, "virtio-blk");
            }
            if poll_avail(mem, q) {
                continue;
            }
            match q.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return true,
                Err(e) => {
                    error!("virtio-blk: queue {}: {e}", q.index);
                    return true;
                }
            }
        }
    }

    /// Serves one request; returns the number of bytes written to the
    /// device-writable part (data and status), or `None` if the device
    /// stopped while the request was held.
    fn handle_request(&self, segs: &Segments) -> Option<u32> {
        let mem = self.mem.as_ref();
        let writable = total(&segs.writable);
        if writable == 0 {
            warn!("virtio-blk: request without a status byte, dropped");
            return Some(0);
        }
        let in_len = writable - 1;
        let (status, data_written) = loop {
            match self.execute(segs, in_len) {
                Ok(n) => break (S_OK, n),
                Err(Failure::Status(status)) => break (status, 0),
                Err(Failure::Stopped) => return None,
                Err(Failure::Host { write, error }) => match self.host_error(write, &error) {
                    ErrorOutcome::Report => break (S_IOERR, 0),
                    ErrorOutcome::Ignore => break (S_OK, 0),
                    // Held until the VM resumes, then tried again, as QEMU does.
                    ErrorOutcome::Stop => {
                        if !self.control.wait_resume(&self.stop) {
                            return None;
                        }
                    }
                },
            }
        };
        if scatter(mem, &segs.writable, in_len, &[status]).is_err() {
            warn!("virtio-blk: cannot write the status byte");
            return Some(0);
        }
        Some(u32::try_from(data_written + 1).unwrap_or(u32::MAX))
    }

    /// Applies the error policy to a failed host request and reports it.
    fn host_error(&self, write: bool, error: &petrel_block::BackendError) -> ErrorOutcome {
        let policy = self.control.policy();
        let nospace = error.is_no_space();
        let action = if write { policy.write } else { policy.read }.outcome(nospace);
        self.control.report(IoErrorReport {
            device: self.backend.name().to_string(),
            node_name: self.backend.root().node_name().to_string(),
            write,
            action,
            nospace,
            reason: error.reason(),
        });
        action
    }

    /// Waits until the throttle lets `bytes` through.
    fn throttle(&self, write: bool, bytes: u64) -> Result<(), Failure> {
        while let Err(wait) = self.backend.throttle_admit(write, bytes) {
            if !DiskControl::sleep(&self.stop, wait) {
                return Err(Failure::Stopped);
            }
        }
        Ok(())
    }

    /// Executes a request; returns the data bytes written to the guest.
    fn execute(&self, segs: &Segments, in_len: u64) -> Result<u64, Failure> {
        let mem = self.mem.as_ref();
        let mut header = [0u8; HEADER_LEN as usize];
        gather(mem, &segs.readable, 0, &mut header).map_err(|()| S_IOERR)?;
        let req_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let out_len = total(&segs.readable) - HEADER_LEN;
        let host = |write: bool| move |error| Failure::Host { write, error };
        match req_type {
            virtio_blk::VIRTIO_BLK_T_IN => {
                let offset = self.data_range(sector, in_len)?;
                self.throttle(false, in_len)?;
                if let Some(slices) = guest_slices(mem, &segs.writable, 0, in_len as usize) {
                    // The guard keeps the slices mapped while imago fills them.
                    let (iov, _guard) = IoVectorMut::from_volatile_slice(&slices);
                    self.backend.readv(offset, iov).map_err(host(false))?;
                    return Ok(in_len);
                }
                let mut buf = vec![0u8; in_len as usize];
                self.backend
                    .read_at(offset, &mut buf)
                    .map_err(host(false))?;
                scatter(mem, &segs.writable, 0, &buf).map_err(|()| S_IOERR)?;
                Ok(in_len)
            }
            virtio_blk::VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(S_IOERR.into());
                }
                let offset = self.data_range(sector, out_len)?;
                self.throttle(true, out_len)?;
                if let Some(slices) =
                    guest_slices(mem, &segs.readable, HEADER_LEN, out_len as usize)
                {
                    let (iov, _guard) = IoVector::from_volatile_slice(&slices);
                    self.backend.writev(offset, iov).map_err(host(true))?;
                } else {
                    let mut buf = vec![0u8; out_len as usize];
                    gather(mem, &segs.readable, HEADER_LEN, &mut buf).map_err(|()| S_IOERR)?;
                    self.backend.write_at(offset, &buf).map_err(host(true))?;
                }
                if !self.cache.writeback && !self.cache.ignore_flush {
                    self.backend.flush().map_err(host(true))?;
                }
                Ok(0)
            }
            virtio_blk::VIRTIO_BLK_T_FLUSH => {
                if !self.cache.ignore_flush {
                    self.backend.flush().map_err(host(true))?;
                }
                Ok(0)
            }
            virtio_blk::VIRTIO_BLK_T_GET_ID => {
                let n = in_len.min(ID_BYTES as u64) as usize;
                scatter(mem, &segs.writable, 0, &self.serial[..n]).map_err(|()| S_IOERR)?;
                Ok(n as u64)
            }
            virtio_blk::VIRTIO_BLK_T_DISCARD | virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES => {
                let discard = req_type == virtio_blk::VIRTIO_BLK_T_DISCARD;
                let max_seg = if discard {
                    MAX_DISCARD_SEG
                } else {
                    MAX_WRITE_ZEROES_SEG
                };
                if out_len == 0
                    || !out_len.is_multiple_of(SEGMENT_LEN)
                    || out_len / SEGMENT_LEN > u64::from(max_seg)
                {
                    return Err(S_UNSUPP.into());
                }
                for i in 0..out_len / SEGMENT_LEN {
                    let mut seg = [0u8; SEGMENT_LEN as usize];
                    gather(mem, &segs.readable, HEADER_LEN + i * SEGMENT_LEN, &mut seg)
                        .map_err(|()| S_IOERR)?;
                    self.discard_segment(discard, &seg)?;
                }
                Ok(0)
            }
            other => {
                warn!(
                    "virtio-blk {}: unsupported request type {other}",
                    self.backend.name()
                );
                Err(S_UNSUPP.into())
            }
        }
    }

    /// Checks a read or write of `len` bytes at `sector`; returns its byte
    /// offset.
    fn data_range(&self, sector: u64, len: u64) -> Result<u64, u8> {
        if !len.is_multiple_of(1 << SECTOR_SHIFT) || len > MAX_TRANSFER {
            return Err(S_IOERR);
        }
        if sector > u64::MAX >> SECTOR_SHIFT {
            return Err(S_IOERR);
        }
        let offset = sector << SECTOR_SHIFT;
        let capacity = self.backend.size() >> SECTOR_SHIFT << SECTOR_SHIFT;
        match offset.checked_add(len) {
            Some(end) if end <= capacity => Ok(offset),
            _ => Err(S_IOERR),
        }
    }

    /// Executes one discard or write-zeroes segment.
    fn discard_segment(
        &self,
        discard: bool,
        seg: &[u8; SEGMENT_LEN as usize],
    ) -> Result<(), Failure> {
        let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
        let num_sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
        // Unknown flags, or unmap on a discard, are unsupported.
        let allowed = if discard { 0 } else { FLAG_UNMAP };
        if flags & !allowed != 0 {
            return Err(S_UNSUPP.into());
        }
        if num_sectors > MAX_DISCARD_SECTORS || self.read_only {
            return Err(S_IOERR.into());
        }
        let len = u64::from(num_sectors) << SECTOR_SHIFT;
        let offset = self.data_range(sector, 0).and_then(|o| {
            let capacity = self.backend.size() >> SECTOR_SHIFT << SECTOR_SHIFT;
            match o.checked_add(len) {
                Some(end) if end <= capacity => Ok(o),
                _ => Err(S_IOERR),
            }
        })?;
        // With `discard=ignore`, discards succeed without reaching the image, as in QEMU; a
        // write-zeroes may still not unmap.
        let result = if discard {
            if !self.cache.discard {
                return Ok(());
            }
            self.backend.discard(offset, len)
        } else {
            let unmap = flags & FLAG_UNMAP != 0 && self.cache.discard;
            self.backend.write_zeroes(offset, len, unmap)
        };
        result.map_err(|error| Failure::Host { write: true, error })
    }
}
