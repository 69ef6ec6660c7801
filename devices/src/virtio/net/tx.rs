//! The transmit path: a chain's frame from guest memory to the backend.
//!
//! The device-readable part of a chain is the 12-byte virtio-net header
//! followed by the Ethernet frame, split across descriptors any way the
//! driver likes. It goes to the backend as slices of guest memory, header
//! and all for a backend that takes the header, without it otherwise.
//!
//! A backend may be unable to take the frame now ([`SendStatus::Busy`]);
//! the chain then stays the guest's, and the I/O thread offers it again
//! once the backend is ready.

use std::io::IoSlice;

use log::warn;
use petrel_net::{NetBackend, NetError, SendStatus, VNET_HDR_LEN};
use virtio_queue::DescriptorChain;
use vm_memory::volatile_memory::PtrGuard;
use vm_memory::{GuestMemory as _, GuestMemoryMmap, Permissions, VolatileSlice};

use super::csum::NetHdr;
use super::rx::MAX_FRAME_LEN;

/// Guest memory slices.
type Slices<'m> = Vec<VolatileSlice<'m, ()>>;

/// Why a frame was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The chain has no room for the header.
    #[error("frame shorter than the virtio-net header")]
    Short,
    /// The chain points outside guest memory.
    #[error("frame outside guest memory")]
    Memory,
    /// A segmentation-offload frame for a backend that cannot take one.
    #[error("segmentation offload frame for a backend without the virtio-net header")]
    Gso,
    /// A frame whose checksum cannot be completed.
    #[error("partial checksum out of the frame's bounds, or frame too long")]
    Checksum,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] NetError),
}

/// What became of a chain's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transmitted {
    /// The backend took it (it may still drop it); its length without the
    /// header.
    Sent(usize),
    /// The backend cannot take it now.
    Busy,
}

/// The transmit side's scratch space, for the rare frame that must be
/// changed before it leaves.
pub(super) struct Tx {
    scratch: Vec<u8>,
}

impl Tx {
    /// A transmit side.
    pub(super) fn new() -> Self {
        Tx {
            scratch: vec![0; MAX_FRAME_LEN],
        }
    }

    /// Offers the frame of `chain` to `backend`.
    pub(super) fn transmit(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
        backend: &mut dyn NetBackend,
    ) -> Result<Transmitted, TxError> {
        let slices = readable_slices(mem, chain).ok_or(TxError::Memory)?;
        let total: usize = slices.iter().map(VolatileSlice::len).sum();
        if total < VNET_HDR_LEN {
            return Err(TxError::Short);
        }
        let frame_len = total - VNET_HDR_LEN;
        if backend.vnet_hdr() {
            return Ok(outcome(send(backend, &slices)?, frame_len));
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        copy_out(&slices, &mut hdr);
        let hdr = NetHdr::parse(&hdr);
        let body = skip(&slices, VNET_HDR_LEN);
        if hdr.is_gso() {
            return Err(TxError::Gso);
        }
        if !hdr.needs_csum() {
            return Ok(outcome(send(backend, &body)?, frame_len));
        }
        let frame = self.scratch.get_mut(..frame_len).ok_or(TxError::Checksum)?;
        copy_out(&body, frame);
        if !hdr.complete_csum(frame) {
            return Err(TxError::Checksum);
        }
        let status = backend.try_send(&[IoSlice::new(frame)])?;
        Ok(outcome(status, frame_len))
    }
}

/// A frame of `len` bytes sent with `status`.
fn outcome(status: SendStatus, len: usize) -> Transmitted {
    match status {
        SendStatus::Sent => Transmitted::Sent(len),
        SendStatus::Busy => Transmitted::Busy,
    }
}

/// The guest memory of the device-readable descriptors of `chain`.
fn readable_slices<'m>(
    mem: &'m GuestMemoryMmap<()>,
    chain: DescriptorChain<&GuestMemoryMmap<()>>,
) -> Option<Slices<'m>> {
    let mut slices = Vec::new();
    for desc in chain.readable() {
        let pieces = mem
            .get_slices(desc.addr(), desc.len() as usize, Permissions::Read)
            .ok()?;
        for piece in pieces {
            slices.push(piece.ok()?);
        }
    }
    Some(slices)
}

/// The slices past the first `n` bytes.
fn skip<'m>(slices: &[VolatileSlice<'m, ()>], mut n: usize) -> Slices<'m> {
    let mut out = Vec::with_capacity(slices.len());
    for s in slices {
        if n >= s.len() {
            n -= s.len();
            continue;
        }
        match s.offset(n) {
            Ok(rest) => out.push(rest),
            Err(e) => warn!("virtio-net: {e}"),
        }
        n = 0;
    }
    out
}

/// Copies the first `out.len()` bytes of `slices` into `out`.
fn copy_out(slices: &[VolatileSlice<'_, ()>], out: &mut [u8]) {
    let mut done = 0;
    for s in slices {
        if done == out.len() {
            break;
        }
        done += s.copy_to(&mut out[done..]);
    }
}

/// Offers the bytes of `slices` to `backend` as one frame, without copying.
fn send(
    backend: &mut dyn NetBackend,
    slices: &[VolatileSlice<'_, ()>],
) -> Result<SendStatus, NetError> {
    let guards: Vec<PtrGuard> = slices.iter().map(VolatileSlice::ptr_guard).collect();
    let iov: Vec<IoSlice<'_>> = guards
        .iter()
        .zip(slices)
        .map(|(guard, s)| {
            // SAFETY: `guard` points at the `s.len()` bytes of guest memory
            // behind `s`, which stay mapped while `guards` and the memory
            // borrow behind `slices` live, both longer than `iov`. The bytes
            // are only read. The guest may change them meanwhile, as it may
            // under a real NIC's DMA: a frame it is still writing goes out
            // as it stands.
            IoSlice::new(unsafe { std::slice::from_raw_parts(guard.as_ptr(), s.len()) })
        })
        .collect();
    backend.try_send(&iov)
}
