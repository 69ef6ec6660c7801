//! A bounded queue of frames between two threads, with an eventfd that is readable
//! exactly while the queue holds a frame (level-triggered), so the consumer can wait on
//! it with poll or epoll.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frames waiting for the other side.
#[derive(Debug)]
pub struct FrameQueue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    /// Non-zero while `frames` is not empty; written and read only under the lock.
    ready: EventFd,
    limit: usize,
}

impl FrameQueue {
    /// An empty queue holding at most `limit` frames.
    pub fn new(limit: usize) -> io::Result<Self> {
        Ok(FrameQueue {
            frames: Mutex::new(VecDeque::with_capacity(limit)),
            ready: EventFd::new(EFD_NONBLOCK)?,
            limit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        // A panic elsewhere while holding the lock leaves a queue that is still whole.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame made of `parts`; false (the frame dropped) when the queue is full.
    pub fn push(&self, parts: &[IoSlice<'_>]) -> bool {
        let mut frames = self.lock();
        if frames.len() >= self.limit {
            return false;
        }
        let mut frame = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            frame.extend_from_slice(part);
        }
        frames.push_back(frame);
        if frames.len() == 1 {
            // Cannot fail short of a counter overflow, which one write per empty-to-full
            // transition never reaches.
            let _ = self.ready.write(1);
        }
        true
    }

    /// Takes the oldest frame.
    pub fn pop(&self) -> Option<Vec<u8>> {
        let mut frames = self.lock();
        let frame = frames.pop_front()?;
        if frames.is_empty() {
            // Resets the counter; it is non-zero here because a frame was queued.
            let _ = self.ready.read();
        }
        Some(frame)
    }

    /// Takes the oldest frame into `buf`, cut to its length.
    pub fn pop_into(&self, buf: &mut [u8]) -> Option<usize> {
        let frame = self.pop()?;
        let len = frame.len().min(buf.len());
        buf[..len].copy_from_slice(&frame[..len]);
        Some(len)
    }

    /// The eventfd that is readable while a frame waits.
    pub fn fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn readable_exactly_while_not_empty_and_bounded() {
        let q = FrameQueue::new(2).unwrap();
        assert!(!readable(q.fd()));
        assert!(q.push(&[IoSlice::new(b"ab"), IoSlice::new(b"c")]));
        assert!(readable(q.fd()));
        assert!(q.push(&[IoSlice::new(b"d")]));
        assert!(!q.push(&[IoSlice::new(b"e")]), "full: dropped");
        let mut buf = [0u8; 2];
        assert_eq!(q.pop_into(&mut buf), Some(2));
        assert_eq!(&buf, b"ab", "cut to the buffer");
        assert!(readable(q.fd()), "one frame left");
        assert_eq!(q.pop(), Some(b"d".to_vec()));
        assert!(!readable(q.fd()));
        assert_eq!(q.pop(), None);
    }
}
