//! QEMU's framing of Ethernet frames on a stream socket: each frame is preceded by its
//! length as a 4-byte big-endian number (`net_socket_receive`, `net_fill_rstate`).
//!
//! The reader asks the socket for exactly the bytes of the current length or frame, so it
//! never holds bytes of the next frame: while a whole frame may be waiting, the socket
//! itself stays readable. The writer has one frame in flight at a time: it keeps what the
//! socket did not take of it and sends that before the next frame is offered, so a partial
//! write never splits the stream.

use std::io::{self, IoSlice, Read};

/// The largest frame QEMU accepts on a stream (`NET_BUFSIZE`); a longer length closes the
/// connection.
pub const NET_BUFSIZE: usize = 4096 + 65536;

/// Length prefix size.
const LEN_BYTES: usize = 4;

/// What a read attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A whole frame of this length is in [`FrameReader::frame`].
    Frame(usize),
    /// The socket has nothing more now.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
    /// The peer announced a frame longer than [`NET_BUFSIZE`].
    Oversized(u32),
}

/// Reassembles frames from a stream.
#[derive(Debug)]
pub struct FrameReader {
    len_bytes: [u8; LEN_BYTES],
    len_have: usize,
    /// The frame being read, sized to its announced length.
    frame: Vec<u8>,
    frame_have: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            len_bytes: [0; LEN_BYTES],
            len_have: 0,
            frame: Vec::with_capacity(NET_BUFSIZE),
            frame_have: 0,
        }
    }
}

impl FrameReader {
    /// Forgets a partly read frame (the connection is gone).
    pub fn reset(&mut self) {
        self.len_have = 0;
        self.frame.clear();
        self.frame_have = 0;
    }

    /// The frame the last [`ReadOutcome::Frame`] announced.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Reads from `src` until a frame is whole or `src` has nothing more.
    pub fn read_from(&mut self, mut src: impl Read) -> io::Result<ReadOutcome> {
        loop {
            if self.len_have < LEN_BYTES {
                let n = match read_some(&mut src, &mut self.len_bytes[self.len_have..])? {
                    Some(0) => return Ok(ReadOutcome::Closed),
                    Some(n) => n,
                    None => return Ok(ReadOutcome::WouldBlock),
                };
                self.len_have += n;
                if self.len_have < LEN_BYTES {
                    continue;
                }
                let len = u32::from_be_bytes(self.len_bytes);
                if len as usize > NET_BUFSIZE {
                    self.reset();
                    return Ok(ReadOutcome::Oversized(len));
                }
                self.frame.clear();
                self.frame.resize(len as usize, 0);
                self.frame_have = 0;
            }
            if self.frame_have < self.frame.len() {
                let n = match read_some(&mut src, &mut self.frame[self.frame_have..])? {
                    Some(0) => return Ok(ReadOutcome::Closed),
                    Some(n) => n,
                    None => return Ok(ReadOutcome::WouldBlock),
                };
                self.frame_have += n;
                if self.frame_have < self.frame.len() {
                    continue;
                }
            }
            // A whole frame; an empty one carries nothing and is skipped.
            self.len_have = 0;
            if !self.frame.is_empty() {
                return Ok(ReadOutcome::Frame(self.frame.len()));
            }
        }
    }
}

/// One read: `Some(n)` (0 at end of stream) or `None` when it would block.
fn read_some(src: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match src.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Something frames can be written to without blocking.
pub trait VectoredSink {
    /// Writes as much of `bufs` as it takes now; `WouldBlock` when it takes nothing.
    fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// Sends length-prefixed frames one at a time, keeping what the socket does not take of
/// the one in flight.
#[derive(Debug, Default)]
pub struct FrameWriter {
    /// Bytes of the frame in flight not yet sent, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
}

/// The length prefix of `frame`, or `None` when it is longer than a peer accepts.
fn prefix(frame: &[IoSlice<'_>]) -> Option<[u8; LEN_BYTES]> {
    let len: usize = frame.iter().map(|s| s.len()).sum();
    (len <= NET_BUFSIZE).then(|| (len as u32).to_be_bytes())
}

impl FrameWriter {
    /// Whether bytes wait for the socket.
    pub fn has_pending(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Drops what waits (the connection is gone).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.sent = 0;
    }

    /// Sends what waits; `Ok(true)` once nothing does.
    pub fn flush(&mut self, sink: &mut impl VectoredSink) -> io::Result<bool> {
        while self.has_pending() {
            match write_some(sink, &[IoSlice::new(&self.pending[self.sent..])])? {
                Some(n) if n > 0 => self.sent += n,
                _ => return Ok(false),
            }
        }
        self.clear();
        Ok(true)
    }

    /// Sends one frame while nothing waits, keeping the part the socket does not take.
    /// Returns false when the frame was dropped as too long for the peer to accept.
    pub fn send(
        &mut self,
        sink: &mut impl VectoredSink,
        frame: &[IoSlice<'_>],
    ) -> io::Result<bool> {
        debug_assert!(!self.has_pending(), "one frame in flight at a time");
        let Some(prefix) = prefix(frame) else {
            return Ok(false);
        };
        let mut slices = Vec::with_capacity(frame.len() + 1);
        slices.push(IoSlice::new(&prefix));
        slices.extend(frame.iter().map(|s| IoSlice::new(s)));
        let written = write_some(sink, &slices)?.unwrap_or(0);
        self.keep(&prefix, frame, written);
        Ok(true)
    }

    /// Keeps one frame, while nothing waits, to send once the socket takes data (a
    /// connection still being made). Returns false when it was dropped, as
    /// [`FrameWriter::send`] does.
    pub fn queue(&mut self, frame: &[IoSlice<'_>]) -> bool {
        debug_assert!(!self.has_pending(), "one frame in flight at a time");
        let Some(prefix) = prefix(frame) else {
            return false;
        };
        self.keep(&prefix, frame, 0);
        true
    }

    /// Keeps what of `prefix` and `frame` follows their first `written` bytes.
    fn keep(&mut self, prefix: &[u8], frame: &[IoSlice<'_>], written: usize) {
        self.clear();
        let mut skip = written;
        for part in std::iter::once(prefix).chain(frame.iter().map(|s| &s[..])) {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            self.pending.extend_from_slice(&part[skip..]);
            skip = 0;
        }
    }
}

/// One write: `Some(n)` or `None` when it would block.
fn write_some(sink: &mut impl VectoredSink, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
    loop {
        match sink.write_some(bufs) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out at most `chunk` bytes per read and then "would block"
    /// every other call.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        block_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.block_next {
                self.block_next = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            if self.pos == self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A socket that takes at most `room` bytes until drained.
    #[derive(Default)]
    struct Narrow {
        out: Vec<u8>,
        room: usize,
    }

    impl VectoredSink for Narrow {
        fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room);
                self.out.extend_from_slice(&b[..take]);
                self.room -= take;
                n += take;
            }
            Ok(n)
        }
    }

    fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn reader_reassembles_trickled_frames() {
        let frames = vec![frame(60, 1), frame(1514, 2), frame(0, 9), frame(65535, 3)];
        let mut src = Trickle {
            data: framed(&frames),
            pos: 0,
            chunk: 3,
            block_next: false,
        };
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for _ in 0..200_000 {
            if let ReadOutcome::Frame(_) = reader.read_from(&mut src).unwrap() {
                got.push(reader.frame().to_vec());
            }
        }
        let expected: Vec<_> = frames.into_iter().filter(|f| !f.is_empty()).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn reader_sees_end_and_oversized_lengths() {
        let mut reader = FrameReader::default();
        assert_eq!(
            reader.read_from(&[0u8, 0][..]).unwrap(),
            ReadOutcome::Closed
        );
        reader.reset();
        let huge = ((NET_BUFSIZE + 1) as u32).to_be_bytes();
        assert_eq!(
            reader.read_from(&huge[..]).unwrap(),
            ReadOutcome::Oversized(NET_BUFSIZE as u32 + 1)
        );
        let max = framed(&[frame(NET_BUFSIZE, 5)]);
        assert_eq!(
            reader.read_from(&max[..]).unwrap(),
            ReadOutcome::Frame(NET_BUFSIZE)
        );
    }

    #[test]
    fn writer_keeps_the_stream_whole_across_partial_writes() {
        let mut sink = Narrow {
            room: 10,
            ..Narrow::default()
        };
        let mut writer = FrameWriter::default();
        let a = frame(100, 1);
        let b = frame(50, 2);
        assert!(writer.send(&mut sink, &[IoSlice::new(&a)]).unwrap());
        assert!(writer.has_pending());
        sink.room = 30;
        assert!(!writer.flush(&mut sink).unwrap(), "still 64 bytes to go");
        assert!(writer.has_pending());
        sink.room = 64;
        assert!(writer.flush(&mut sink).unwrap());
        assert!(!writer.has_pending());
        sink.room = 7;
        assert!(writer
            .send(&mut sink, &[IoSlice::new(&b[..20]), IoSlice::new(&b[20..])])
            .unwrap());
        assert!(writer.has_pending());
        sink.room = 1000;
        assert!(writer.flush(&mut sink).unwrap());
        assert_eq!(sink.out, framed(&[a, b]));
    }

    #[test]
    fn writer_queues_one_frame_and_drops_frames_too_long_for_the_peer() {
        let mut sink = Narrow::default();
        let mut writer = FrameWriter::default();
        let big = frame(NET_BUFSIZE, 0);
        assert!(writer.queue(&[IoSlice::new(&big)]));
        assert!(writer.has_pending());
        assert!(
            !writer.flush(&mut sink).unwrap(),
            "the socket takes nothing yet"
        );
        sink.room = usize::MAX;
        assert!(writer.flush(&mut sink).unwrap());
        assert!(!writer
            .send(&mut sink, &[IoSlice::new(&frame(NET_BUFSIZE + 1, 0))])
            .unwrap());
        assert!(!writer.queue(&[IoSlice::new(&frame(NET_BUFSIZE + 1, 0))]));
        assert!(!writer.has_pending());
        assert_eq!(sink.out, framed(&[big]));
        assert_eq!(sink.out.len(), 4 + NET_BUFSIZE);
    }
}
