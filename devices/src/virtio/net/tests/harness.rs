//! A fake backend over a datagram socket pair, and a simulated driver with
//! split queues in guest memory.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use petrel_net::{InfoText, NetBackend, NetError, Offloads, SendStatus, VNET_HDR_LEN};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::net::VirtioNet;
use crate::virtio::test_util::{wait_for, InterruptRecorder};
use crate::virtio::{ActivatedQueue, GuestMemory, VirtioDevice};

/// Size of every test queue.
pub const QSIZE: u16 = 16;
/// Guest memory size.
const MEM_SIZE: u64 = 4 << 20;
/// Where the rings are: queue `n` at `RINGS + n * 0x3000`.
const RINGS: u64 = 0x1_0000;
/// Where buffers are carved from.
const BUFS: u64 = 0x4_0000;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// How long anything asynchronous may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long to wait before concluding nothing happens.
pub const QUIET: Duration = Duration::from_millis(50);

/// The device's side: a backend moving frames over a datagram socket.
pub struct FakeBackend {
    sock: UnixDatagram,
    vnet_hdr: bool,
    offloads: Arc<Mutex<Vec<Offloads>>>,
}

impl NetBackend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn set_offloads(&mut self, offloads: Offloads) -> Result<(), NetError> {
        self.offloads.lock().unwrap().push(offloads);
        Ok(())
    }

    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        let bytes: Vec<u8> = frame.iter().flat_map(|s| s.iter().copied()).collect();
        self.sock
            .send(&bytes)
            .map(|_| SendStatus::Sent)
            .map_err(|source| NetError::Io { op: "send", source })
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        match self.sock.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(NetError::Io { op: "recv", source }),
        }
    }

    fn rx_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn info(&self) -> InfoText {
        InfoText::new("fake")
    }
}

/// The far end of a [`FakeBackend`]: the network.
pub struct Peer {
    sock: UnixDatagram,
    vnet_hdr: bool,
    /// What the device told the backend with `set_offloads`, in order.
    pub offloads: Arc<Mutex<Vec<Offloads>>>,
}

impl Peer {
    /// Sends `frame` towards the guest.
    pub fn inject(&self, frame: &[u8]) {
        self.sock.send(frame).unwrap();
    }

    /// Sends the Ethernet frame `frame` towards the guest, after a zero
    /// virtio-net header if the backend carries one.
    pub fn inject_frame(&self, frame: &[u8]) {
        if self.vnet_hdr {
            let mut bytes = vec![0u8; VNET_HDR_LEN];
            bytes.extend_from_slice(frame);
            self.inject(&bytes);
        } else {
            self.inject(frame);
        }
    }

    /// The next frame the guest sent, waiting for it.
    pub fn sent(&self) -> Vec<u8> {
        self.sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = vec![0u8; 70000];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("no frame reached the backend");
        buf.truncate(n);
        buf
    }

    /// Whether the guest sent nothing for a while.
    pub fn nothing_sent(&self) -> bool {
        self.sock.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 1];
        self.sock.recv(&mut buf).is_err()
    }
}

/// A fake backend and its far end.
pub fn backend(vnet_hdr: bool) -> (Box<dyn NetBackend>, Peer) {
    let (fake, peer) = fake(vnet_hdr);
    (Box::new(fake), peer)
}

/// A fake backend, unboxed, and its far end.
pub fn fake(vnet_hdr: bool) -> (FakeBackend, Peer) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let offloads = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeBackend {
        sock: a,
        vnet_hdr,
        offloads: offloads.clone(),
    };
    let peer = Peer {
        sock: b,
        vnet_hdr,
        offloads,
    };
    (fake, peer)
}

/// The driver's side of one split queue.
pub struct VirtQueue {
    index: usize,
    base: u64,
    /// The queue's notify eventfd (the device's kick).
    pub notify: EventFd,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl VirtQueue {
    /// Queue `index` of a driver, kicked through `notify`.
    pub fn new(index: usize, notify: EventFd) -> Self {
        VirtQueue {
            index,
            base: RINGS + index as u64 * 0x3000,
            notify,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The queue's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Descriptor table, available ring and used ring addresses.
    pub fn rings(&self) -> [u64; 3] {
        [self.desc(), self.avail(), self.used()]
    }

    fn desc(&self) -> u64 {
        self.base
    }

    fn avail(&self) -> u64 {
        self.base + 0x1000
    }

    fn used(&self) -> u64 {
        self.base + 0x2000
    }

    /// Where the device puts `avail_event`.
    pub fn avail_event(&self) -> GuestAddress {
        GuestAddress(self.used() + 4 + 8 * u64::from(QSIZE))
    }

    /// Used ring flags (`VRING_USED_F_NO_NOTIFY`).
    pub fn used_flags(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used())).unwrap()
    }

    fn activated(&self, event_idx: bool) -> ActivatedQueue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(self.desc()))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail()))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used()))
            .unwrap();
        q.set_event_idx(event_idx);
        q.set_ready(true);
        ActivatedQueue {
            index: self.index,
            queue: q,
            notify: self.notify.try_clone().unwrap(),
        }
    }

    /// Makes a chain of (address, length, device-writable) buffers
    /// available, without kicking; returns its head.
    pub fn add(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % QSIZE;
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let d = self.desc() + 16 * u64::from(index);
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(self.next_desc, GuestAddress(d + 14)).unwrap();
        }
        let slot = u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(self.avail() + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2))
            .unwrap();
        head
    }

    /// Kicks the device.
    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    /// The next used element (head, length), if the device published one.
    pub fn poll_used(&mut self, mem: &GuestMemoryMmap) -> Option<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        if idx == self.used_seen {
            return None;
        }
        let elem = self.used() + 4 + 8 * u64::from(self.used_seen % QSIZE);
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((
            mem.read_obj(GuestAddress(elem)).unwrap(),
            mem.read_obj(GuestAddress(elem + 4)).unwrap(),
        ))
    }

    /// Waits for the next used element.
    pub fn wait_used(&mut self, mem: &GuestMemoryMmap) -> (u32, u32) {
        let mut used = None;
        let what = format!("queue {}: a used buffer", self.index);
        wait_for(&what, || {
            used = self.poll_used(mem);
            used.is_some()
        });
        used.expect("waited for")
    }

    /// Whether the device leaves the queue alone for a while.
    pub fn stays_unused(&mut self, mem: &GuestMemoryMmap) -> bool {
        std::thread::sleep(QUIET);
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        idx == self.used_seen
    }
}

/// A driver that brought the device up.
pub struct Driver {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The receive queue.
    pub rx: VirtQueue,
    /// The transmit queue.
    pub tx: VirtQueue,
    /// The control queue.
    pub ctrl: VirtQueue,
    /// The interrupts raised.
    pub irq: Arc<InterruptRecorder>,
    next_buf: u64,
    /// Receive buffers posted: head and address.
    rx_bufs: Vec<(u32, u64)>,
}

/// Guest memory for a test.
pub fn memory() -> GuestMemory {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap())
}

/// Accepts the features `dev` offers but `refused` and activates it with
/// its three queues.
pub fn start(dev: &mut VirtioNet, refused: u64, event_idx: bool) -> Driver {
    let mem = memory();
    dev.ack_features(dev.features() & !refused);
    let queue = |index| VirtQueue::new(index, EventFd::new(EFD_NONBLOCK).unwrap());
    let drv = Driver::new(mem.clone(), [queue(0), queue(1), queue(2)]);
    let queues = vec![
        drv.rx.activated(event_idx),
        drv.tx.activated(event_idx),
        drv.ctrl.activated(event_idx),
    ];
    dev.activate(mem, queues, drv.irq.clone()).unwrap();
    drv
}

impl Driver {
    /// A driver of the receive, transmit and control queues `queues` in
    /// `mem`.
    pub fn new(mem: GuestMemory, queues: [VirtQueue; 3]) -> Self {
        let [rx, tx, ctrl] = queues;
        Driver {
            mem,
            rx,
            tx,
            ctrl,
            irq: Arc::new(InterruptRecorder::default()),
            next_buf: BUFS,
            rx_bufs: Vec::new(),
        }
    }

    /// A fresh guest buffer of `len` bytes, filled with 0xee.
    pub fn alloc(&mut self, len: u32) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + u64::from(len) + 0xfff) & !0xfff;
        assert!(self.next_buf <= MEM_SIZE, "test guest memory exhausted");
        self.mem
            .write_slice(&vec![0xee; len as usize], GuestAddress(addr))
            .unwrap();
        addr
    }

    /// Reads `len` bytes of guest memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    /// Sends `bytes` (header and frame) split into descriptors of the
    /// given lengths (the last one takes the rest); waits for completion.
    pub fn send(&mut self, bytes: &[u8], splits: &[usize]) -> (u32, u32) {
        let mut bufs = Vec::new();
        let mut rest = bytes;
        for &n in splits {
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            bufs.push(piece.to_vec());
            rest = tail;
        }
        bufs.push(rest.to_vec());
        let descs: Vec<(u64, u32, bool)> = bufs
            .iter()
            .map(|b| {
                let addr = self.alloc(b.len() as u32);
                self.mem.write_slice(b, GuestAddress(addr)).unwrap();
                (addr, b.len() as u32, false)
            })
            .collect();
        self.tx.add(&self.mem, &descs);
        self.tx.kick();
        self.tx.wait_used(&self.mem)
    }

    /// Posts a receive buffer of `len` bytes; returns its address.
    pub fn post_rx(&mut self, len: u32) -> u64 {
        let addr = self.alloc(len);
        let head = self.rx.add(&self.mem, &[(addr, len, true)]);
        self.rx_bufs.retain(|&(h, _)| h != u32::from(head));
        self.rx_bufs.push((u32::from(head), addr));
        addr
    }

    /// The address of the receive buffer whose chain starts at `head`.
    pub fn rx_buf(&self, head: u32) -> u64 {
        self.rx_bufs
            .iter()
            .find(|&&(h, _)| h == head)
            .map(|&(_, addr)| addr)
            .expect("no such receive buffer")
    }

    /// Sends a control command; returns the device's answer.
    pub fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let mut out = vec![class, cmd];
        out.extend_from_slice(data);
        let out_addr = self.alloc(out.len() as u32);
        self.mem.write_slice(&out, GuestAddress(out_addr)).unwrap();
        let ack = self.alloc(1);
        self.ctrl.add(
            &self.mem,
            &[(out_addr, out.len() as u32, false), (ack, 1, true)],
        );
        self.ctrl.kick();
        let (_, len) = self.ctrl.wait_used(&self.mem);
        assert_eq!(len, 1);
        self.read(ack, 1)[0]
    }
}
