//! A bounded queue of frames between two threads.
//!
//! Two eventfds make it waitable with poll or epoll, both level-triggered:
//! - `ready` is readable exactly while the queue holds a frame, for the consumer;
//! - `space` is for a producer the full queue refused ([`FrameQueue::push_or_wait`]): the
//!   consumer makes it readable once it has drained the queue to its low-water mark, and
//!   it stays so until the next refusal.
//!
//! Frame buffers go round: a consumed frame's buffer holds a later frame, so a queue in
//! steady use allocates nothing. The consumer either copies frames out one at a time
//! ([`FrameQueue::pop_into`]) or takes all of them under one lock
//! ([`FrameQueue::take_all`]) and hands the buffers back when done
//! ([`FrameQueue::recycle`]).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Buffers larger than this are freed rather than kept for later frames, so that a burst of
/// jumbo frames does not pin their memory.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Frames waiting for the other side.
#[derive(Debug)]
pub struct FrameQueue {
    state: Mutex<State>,
    /// Non-zero while frames wait; written and read only under the lock.
    ready: EventFd,
    /// Non-zero once a refused producer may push again; written and read only under the
    /// lock.
    space: EventFd,
    limit: usize,
    /// A waiting producer is told once no more than this many frames wait.
    low_water: usize,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Vec<u8>>,
    /// Buffers of consumed frames, for the next ones.
    free: Vec<Vec<u8>>,
    /// A producer was refused and waits for `space`.
    waiting: bool,
}

impl FrameQueue {
    /// An empty queue holding at most `limit` frames; a refused producer is told when half
    /// of them have been consumed.
    pub fn new(limit: usize) -> io::Result<Self> {
        Ok(FrameQueue {
            state: Mutex::new(State {
                frames: VecDeque::with_capacity(limit),
                free: Vec::new(),
                waiting: false,
            }),
            ready: EventFd::new(EFD_NONBLOCK)?,
            space: EventFd::new(EFD_NONBLOCK)?,
            limit,
            low_water: limit / 2,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue that is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame made of `parts`; false (the frame dropped) when the queue is full.
    pub fn push(&self, parts: &[IoSlice<'_>]) -> bool {
        let mut state = self.lock();
        self.push_locked(&mut state, parts)
    }

    /// Queues a frame made of `parts`, or refuses it when the queue is full: the frame is
    /// not kept, and [`FrameQueue::space_fd`] becomes readable once the consumer has made
    /// room.
    pub fn push_or_wait(&self, parts: &[IoSlice<'_>]) -> bool {
        let mut state = self.lock();
        if self.push_locked(&mut state, parts) {
            return true;
        }
        if !state.waiting {
            // Forgets an earlier signal, which was about room since taken.
            let _ = self.space.read();
            state.waiting = true;
        }
        false
    }

    fn push_locked(&self, state: &mut State, parts: &[IoSlice<'_>]) -> bool {
        if state.frames.len() >= self.limit {
            return false;
        }
        let mut frame = state.free.pop().unwrap_or_default();
        frame.clear();
        for part in parts {
            frame.extend_from_slice(part);
        }
        state.frames.push_back(frame);
        if state.frames.len() == 1 {
            // Cannot fail short of a counter overflow, which one write per empty-to-busy
            // transition never reaches.
            let _ = self.ready.write(1);
        }
        true
    }

    /// Takes the oldest frame into `buf`, or what fits of it; its whole length.
    pub fn pop_into(&self, buf: &mut [u8]) -> Option<usize> {
        let mut state = self.lock();
        let frame = state.frames.pop_front()?;
        let len = frame.len();
        let copied = len.min(buf.len());
        buf[..copied].copy_from_slice(&frame[..copied]);
        keep(&mut state.free, frame);
        self.consumed(&mut state);
        Some(len)
    }

    /// Moves every waiting frame, oldest first, to the end of `batch` (which keeps its
    /// allocation); the buffers come back through [`FrameQueue::recycle`].
    pub fn take_all(&self, batch: &mut VecDeque<Vec<u8>>) {
        let mut state = self.lock();
        if state.frames.is_empty() {
            return;
        }
        if batch.is_empty() {
            std::mem::swap(&mut state.frames, batch);
        } else {
            batch.extend(state.frames.drain(..));
        }
        self.consumed(&mut state);
    }

    /// Keeps the buffers of the frames in `batch` for later frames, emptying it.
    pub fn recycle(&self, batch: &mut VecDeque<Vec<u8>>) {
        let mut state = self.lock();
        for frame in batch.drain(..) {
            keep(&mut state.free, frame);
        }
    }

    /// After frames were taken: clears `ready` once none wait, and tells a waiting
    /// producer when few enough do.
    fn consumed(&self, state: &mut State) {
        if state.frames.is_empty() {
            // Resets the counter; it is non-zero because a frame was queued.
            let _ = self.ready.read();
        }
        if state.waiting && state.frames.len() <= self.low_water {
            state.waiting = false;
            let _ = self.space.write(1);
        }
    }

    /// The eventfd that is readable while a frame waits.
    pub fn fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// The eventfd that becomes readable when a producer [`FrameQueue::push_or_wait`]
    /// refused may push again.
    pub fn space_fd(&self) -> RawFd {
        self.space.as_raw_fd()
    }
}

/// Adds `frame`'s buffer to `free` unless it is too big to keep.
fn keep(free: &mut Vec<Vec<u8>>, frame: Vec<u8>) {
    if frame.capacity() <= KEEP_CAPACITY {
        free.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::readable;

    #[test]
    fn readable_exactly_while_not_empty_and_bounded() {
        let q = FrameQueue::new(2).unwrap();
        assert!(!readable(q.fd()));
        assert!(q.push(&[IoSlice::new(b"ab"), IoSlice::new(b"c")]));
        assert!(readable(q.fd()));
        assert!(q.push(&[IoSlice::new(b"d")]));
        assert!(!q.push(&[IoSlice::new(b"e")]), "full: dropped");
        let mut buf = [0u8; 2];
        assert_eq!(q.pop_into(&mut buf), Some(3), "the whole length");
        assert_eq!(&buf, b"ab", "cut to the buffer");
        assert!(readable(q.fd()), "one frame left");
        assert_eq!(q.pop_into(&mut buf), Some(1));
        assert_eq!(&buf[..1], b"d");
        assert!(!readable(q.fd()));
        assert_eq!(q.pop_into(&mut buf), None);
        assert!(!readable(q.space_fd()), "nobody was refused");
    }

    #[test]
    fn a_refused_producer_is_told_at_the_low_water_mark() {
        let q = FrameQueue::new(4).unwrap();
        for i in 0..4u8 {
            assert!(q.push_or_wait(&[IoSlice::new(&[i])]));
        }
        assert!(!q.push_or_wait(&[IoSlice::new(b"x")]), "full: refused");
        assert!(!readable(q.space_fd()));
        let mut buf = [0u8; 1];
        q.pop_into(&mut buf);
        assert!(!readable(q.space_fd()), "3 wait: above the mark");
        q.pop_into(&mut buf);
        assert!(readable(q.space_fd()), "2 wait: at the mark");
        assert!(q.push_or_wait(&[IoSlice::new(b"y")]));
        assert!(q.push_or_wait(&[IoSlice::new(b"z")]));
        assert!(!q.push_or_wait(&[IoSlice::new(b"w")]), "full again");
        assert!(!readable(q.space_fd()), "the old signal is forgotten");
        let mut batch = VecDeque::new();
        q.take_all(&mut batch);
        assert!(readable(q.space_fd()));
        assert!(!readable(q.fd()));
        let frames: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        assert_eq!(frames, [b"\x02", b"\x03", b"y", b"z"]);
    }

    #[test]
    fn buffers_go_round() {
        let q = FrameQueue::new(8).unwrap();
        let mut batch = VecDeque::new();
        assert!(q.push(&[IoSlice::new(&[7u8; 100])]));
        q.take_all(&mut batch);
        let first = batch[0].as_ptr();
        q.recycle(&mut batch);
        assert!(batch.is_empty());
        assert!(q.push(&[IoSlice::new(&[8u8; 60])]));
        q.take_all(&mut batch);
        assert_eq!(
            batch[0].as_ptr(),
            first,
            "the same buffer holds the next frame"
        );
        assert_eq!(batch[0], [8u8; 60]);
        q.recycle(&mut batch);
        assert!(q.push(&[IoSlice::new(&vec![9u8; KEEP_CAPACITY + 1])]));
        q.take_all(&mut batch);
        q.recycle(&mut batch);
        assert_eq!(q.lock().free.len(), 0, "a jumbo buffer is not kept");
    }
}
