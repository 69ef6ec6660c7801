//! A simulated driver submitting requests on a split queue in guest memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use petrel_block::{BlockGraph, ImageFormat, OpenOptions};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::virtio::test_util::{wait_for, InterruptRecorder};

const QSIZE: u16 = 16;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
const BUFS: u64 = 0x2_0000;
const IMAGE_SIZE: u64 = 1 << 20;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A raw scratch image, removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "petrel-virtio-blk-{tag}-{}-{n}.raw",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(IMAGE_SIZE).unwrap();
        Image(path)
    }

    fn backend(&self, read_only: bool) -> Arc<BlockBackend> {
        let mut graph = BlockGraph::new();
        let opts = OpenOptions {
            format: Some(ImageFormat::Raw),
            read_only,
            ..OpenOptions::new(&self.0)
        };
        let root = graph.open(&opts, Some("drive0")).unwrap();
        Arc::new(BlockBackend::new("drive0", root, false).unwrap())
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long to wait for an extra interrupt after the expected ones.
const SETTLE: Duration = Duration::from_millis(20);

/// The driver side of queue 0.
struct Driver {
    mem: GuestMemory,
    notify: EventFd,
    avail_idx: u16,
    irq: Arc<InterruptRecorder>,
}

struct Completion {
    status: u8,
    used_len: u32,
    head: u32,
    data: Vec<u8>,
}

fn memory() -> GuestMemory {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
}

fn queue(event_idx: bool) -> Queue {
    let mut q = Queue::new(QSIZE).unwrap();
    q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
    q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

/// Activates `dev` with one queue; returns the driver.
fn start(dev: &mut VirtioBlock, event_idx: bool) -> Driver {
    start_in(dev, memory(), event_idx)
}

/// Activates `dev` with one queue over `mem`; returns the driver.
fn start_in(dev: &mut VirtioBlock, mem: GuestMemory, event_idx: bool) -> Driver {
    let notify = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(InterruptRecorder::default());
    let queues = vec![ActivatedQueue {
        index: 0,
        queue: queue(event_idx),
        notify: notify.try_clone().unwrap(),
    }];
    dev.activate(mem.clone(), queues, irq.clone()).unwrap();
    Driver {
        mem,
        notify,
        avail_idx: 0,
        irq,
    }
}

impl Driver {
    /// Submits a chain of (address, len, device-writable) buffers and waits
    /// for the device to use it.
    fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u32, u32) {
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let d = DESC + 16 * i as u64;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem
                .write_obj(i as u16 + 1, GuestAddress(d + 14))
                .unwrap();
        }
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.notify.write(1).unwrap();
        wait_for("the request's completion", || {
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            used == self.avail_idx
        });
        let elem = USED + 4 + 8 * slot;
        let head: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
        (head, len)
    }

    /// Submits a request: header, optional data out, `in_len` bytes in,
    /// status, each in its own descriptor.
    fn request(&mut self, req_type: u32, sector: u64, out: &[u8], in_len: u32) -> Completion {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&req_type.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&header, GuestAddress(BUFS)).unwrap();
        let mut bufs = vec![(BUFS, 16, false)];
        let out_addr = BUFS + 0x1000;
        if !out.is_empty() {
            self.mem.write_slice(out, GuestAddress(out_addr)).unwrap();
            bufs.push((out_addr, out.len() as u32, false));
        }
        let in_addr = BUFS + 0x4_0000;
        if in_len > 0 {
            self.mem
                .write_slice(&vec![0xee; in_len as usize], GuestAddress(in_addr))
                .unwrap();
            bufs.push((in_addr, in_len, true));
        }
        let status_addr = BUFS + 0x8_0000;
        self.mem
            .write_obj(0xffu8, GuestAddress(status_addr))
            .unwrap();
        bufs.push((status_addr, 1, true));
        let (head, used_len) = self.submit(&bufs);
        let mut data = vec![0u8; in_len as usize];
        self.mem
            .read_slice(&mut data, GuestAddress(in_addr))
            .unwrap();
        Completion {
            status: self.mem.read_obj(GuestAddress(status_addr)).unwrap(),
            used_len,
            head,
            data,
        }
    }
}

fn segment(sector: u64, num_sectors: u32, flags: u32) -> Vec<u8> {
    let mut s = sector.to_le_bytes().to_vec();
    s.extend_from_slice(&num_sectors.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

const T_IN: u32 = virtio_blk::VIRTIO_BLK_T_IN;
const T_OUT: u32 = virtio_blk::VIRTIO_BLK_T_OUT;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

fn device(image: &Image, read_only: bool, serial: Option<&str>) -> VirtioBlock {
    let params = BlockParams {
        serial: serial.map(str::to_string),
        ..BlockParams::default()
    };
    VirtioBlock::new("disk0", image.backend(read_only), &params).unwrap()
}

#[test]
fn config_and_features() {
    let image = Image::new("config");
    let dev = device(&image, false, None);
    let f = dev.features();
    for b in [
        VIRTIO_F_VERSION_1,
        virtio_blk::VIRTIO_BLK_F_SEG_MAX,
        virtio_blk::VIRTIO_BLK_F_BLK_SIZE,
        virtio_blk::VIRTIO_BLK_F_FLUSH,
        virtio_blk::VIRTIO_BLK_F_DISCARD,
        virtio_blk::VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b}");
    }
    assert_eq!(f & bit(virtio_blk::VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & bit(virtio_blk::VIRTIO_BLK_F_MQ), 0);
    assert_eq!(dev.device_type(), TYPE_BLOCK);
    assert_eq!(dev.queue_max_sizes(), &[256]);

    let mut cfg = [0u8; 64];
    dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), 2048);
    assert_eq!(u32::from_le_bytes(cfg[12..16].try_into().unwrap()), 254);
    assert_eq!(u32::from_le_bytes(cfg[20..24].try_into().unwrap()), 512);
    assert_eq!(u16::from_le_bytes(cfg[34..36].try_into().unwrap()), 1);
    assert_eq!(
        u32::from_le_bytes(cfg[36..40].try_into().unwrap()),
        MAX_DISCARD_SECTORS
    );
    assert_eq!(u32::from_le_bytes(cfg[40..44].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(cfg[44..48].try_into().unwrap()), 1);
    assert_eq!(cfg[56], 1);
    assert_eq!(&cfg[60..], &[0; 4]);
    // Unaligned partial read.
    let mut b = [0u8; 2];
    dev.read_config(21, &mut b);
    assert_eq!(b, [2, 0]);

    let ro = device(&image, true, None);
    assert_ne!(ro.features() & bit(virtio_blk::VIRTIO_BLK_F_RO), 0);

    let params = BlockParams {
        num_queues: 4,
        ..BlockParams::default()
    };
    let mq = VirtioBlock::new("mq", image.backend(false), &params).unwrap();
    assert_ne!(mq.features() & bit(virtio_blk::VIRTIO_BLK_F_MQ), 0);
    assert_eq!(mq.queue_max_sizes(), &[256; 4]);
    assert_eq!(mq.config().num_queues, 4);

    for bad in [
        BlockParams {
            num_queues: 0,
            ..BlockParams::default()
        },
        BlockParams {
            queue_size: 100,
            ..BlockParams::default()
        },
    ] {
        assert!(VirtioBlock::new("bad", image.backend(false), &bad).is_err());
    }
}

#[test]
fn read_write_flush() {
    let image = Image::new("rw");
    let mut dev = device(&image, false, None);
    let mut drv = start(&mut dev, false);
    assert!(dev.is_active());

    let data: Vec<u8> = (0..1024).map(|i| (i % 253) as u8).collect();
    let c = drv.request(T_OUT, 8, &data, 0);
    assert_eq!((c.status, c.used_len, c.head), (S_OK, 1, 0));
    assert_eq!(
        drv.irq.take_after(1, SETTLE),
        vec![VirtioInterruptType::Queue(0)]
    );

    let c = drv.request(T_IN, 8, &[], 1024);
    assert_eq!((c.status, c.used_len), (S_OK, 1025));
    assert_eq!(c.data, data);
    assert_eq!(
        drv.irq.take_after(1, SETTLE),
        vec![VirtioInterruptType::Queue(0)]
    );

    let c = drv.request(virtio_blk::VIRTIO_BLK_T_FLUSH, 0, &[], 0);
    assert_eq!((c.status, c.used_len), (S_OK, 1));
    let file = image.contents();
    assert_eq!(&file[8 * 512..8 * 512 + 1024], &data[..]);
    assert!(file[..8 * 512].iter().all(|&b| b == 0));

    let stats = dev.backend().stats().snapshot();
    assert_eq!(stats.wr_bytes, 1024);
    assert_eq!(stats.rd_bytes, 1024);

    dev.reset().unwrap();
    assert!(!dev.is_active());
}

#[test]
fn header_and_data_in_one_descriptor_chain_split_oddly() {
    // The header split over two descriptors, data and status sharing one.
    let image = Image::new("framing");
    let mut dev = device(&image, false, None);
    let mut drv = start(&mut dev, false);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&T_OUT.to_le_bytes());
    header[8..16].copy_from_slice(&1u64.to_le_bytes());
    let mut out = header.to_vec();
    out.extend(std::iter::repeat_n(0x5a, 512));
    drv.mem.write_slice(&out, GuestAddress(BUFS)).unwrap();
    let (_, len) = drv.submit(&[
        (BUFS, 10, false),
        (BUFS + 10, 16 + 512 - 10, false),
        (BUFS + 0x8000, 1, true),
    ]);
    assert_eq!(len, 1);
    assert_eq!(
        drv.mem.read_obj::<u8>(GuestAddress(BUFS + 0x8000)).unwrap(),
        0
    );

    // Read back with data + status in a single writable descriptor.
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&1u64.to_le_bytes());
    drv.mem.write_slice(&header, GuestAddress(BUFS)).unwrap();
    let (_, len) = drv.submit(&[(BUFS, 16, false), (BUFS + 0x1000, 513, true)]);
    assert_eq!(len, 513);
    let mut back = vec![0u8; 513];
    drv.mem
        .read_slice(&mut back, GuestAddress(BUFS + 0x1000))
        .unwrap();
    assert!(back[..512].iter().all(|&b| b == 0x5a));
    assert_eq!(back[512], S_OK);
}

#[test]
fn data_buffers_across_two_memory_regions() {
    // Two host mappings meet at 0x60800, inside the buffers below: such a
    // piece cannot be handed to the image as one slice, so the device must
    // bounce it, and the bytes must still arrive whole.
    const SPLIT: u64 = 0x6_0800;
    let mem = Arc::new(
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), SPLIT as usize),
            (GuestAddress(SPLIT), 0x10_0000 - SPLIT as usize),
        ])
        .unwrap(),
    );
    let image = Image::new("split");
    let mut dev = device(&image, false, None);
    let mut drv = start_in(&mut dev, mem, false);
    let data: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&T_OUT.to_le_bytes());
    header[8..16].copy_from_slice(&3u64.to_le_bytes());
    drv.mem.write_slice(&header, GuestAddress(BUFS)).unwrap();
    drv.mem
        .write_slice(&data, GuestAddress(SPLIT - 0x800))
        .unwrap();
    drv.submit(&[
        (BUFS, 16, false),
        (SPLIT - 0x800, 4096, false),
        (BUFS + 0x100, 1, true),
    ]);
    assert_eq!(
        drv.mem.read_obj::<u8>(GuestAddress(BUFS + 0x100)).unwrap(),
        S_OK
    );
    assert_eq!(&image.contents()[3 * 512..3 * 512 + 4096], &data[..]);

    // Read it back across the boundary (request() reads into 0x60000).
    let c = drv.request(T_IN, 3, &[], 4096);
    assert_eq!((c.status, c.used_len), (S_OK, 4097));
    assert_eq!(c.data, data);
}

#[test]
fn get_id() {
    let image = Image::new("id");
    let mut dev = device(&image, false, Some("PETREL-SERIAL"));
    let mut drv = start(&mut dev, false);
    let c = drv.request(virtio_blk::VIRTIO_BLK_T_GET_ID, 0, &[], 20);
    assert_eq!((c.status, c.used_len), (S_OK, 21));
    let mut expected = b"PETREL-SERIAL".to_vec();
    expected.resize(20, 0);
    assert_eq!(c.data, expected);

    // A 20-character serial has no terminator; longer ones are truncated.
    let mut dev = device(&image, false, Some("0123456789abcdefghijKLMN"));
    let mut drv = start(&mut dev, false);
    let c = drv.request(virtio_blk::VIRTIO_BLK_T_GET_ID, 0, &[], 20);
    assert_eq!(c.data, b"0123456789abcdefghij");
}

#[test]
fn discard_and_write_zeroes() {
    let image = Image::new("discard");
    let mut dev = device(&image, false, None);
    let mut drv = start(&mut dev, false);
    let ones = vec![0xffu8; 8192];
    assert_eq!(drv.request(T_OUT, 0, &ones, 0).status, S_OK);

    let c = drv.request(virtio_blk::VIRTIO_BLK_T_DISCARD, 0, &segment(0, 4, 0), 0);
    assert_eq!((c.status, c.used_len), (S_OK, 1));

    let c = drv.request(
        virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        &segment(4, 4, 0),
        0,
    );
    assert_eq!(c.status, S_OK);
    let c = drv.request(
        virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES,
        0,
        &segment(8, 4, 1),
        0,
    );
    assert_eq!(c.status, S_OK);
    assert_eq!(
        drv.request(virtio_blk::VIRTIO_BLK_T_FLUSH, 0, &[], 0)
            .status,
        S_OK
    );
    let file = image.contents();
    assert!(file[4 * 512..12 * 512].iter().all(|&b| b == 0));
    assert!(file[12 * 512..16 * 512].iter().all(|&b| b == 0xff));

    // Unmap on discard and unknown flags are unsupported.
    let t = virtio_blk::VIRTIO_BLK_T_DISCARD;
    assert_eq!(drv.request(t, 0, &segment(0, 1, 1), 0).status, S_UNSUPP);
    let t = virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES;
    assert_eq!(drv.request(t, 0, &segment(0, 1, 2), 0).status, S_UNSUPP);
    // More segments than max_*_seg, or a truncated segment.
    let mut two = segment(0, 1, 0);
    two.extend(segment(2, 1, 0));
    assert_eq!(drv.request(t, 0, &two, 0).status, S_UNSUPP);
    assert_eq!(drv.request(t, 0, &two[..8], 0).status, S_UNSUPP);
    // Out of range.
    assert_eq!(drv.request(t, 0, &segment(2047, 2, 0), 0).status, S_IOERR);
    let t = virtio_blk::VIRTIO_BLK_T_DISCARD;
    assert_eq!(
        drv.request(t, 0, &segment(u64::MAX, 2, 0), 0).status,
        S_IOERR
    );
}

#[test]
fn errors() {
    let image = Image::new("errors");
    let mut dev = device(&image, false, None);
    let mut drv = start(&mut dev, false);
    let sector = vec![0x11u8; 512];
    // Past the end, straddling the end, and overflowing.
    assert_eq!(drv.request(T_OUT, 2048, &sector, 0).status, S_IOERR);
    assert_eq!(drv.request(T_OUT, 2047, &[0; 1024], 0).status, S_IOERR);
    assert_eq!(drv.request(T_OUT, u64::MAX, &sector, 0).status, S_IOERR);
    let c = drv.request(T_IN, 2048, &[], 512);
    assert_eq!((c.status, c.used_len), (S_IOERR, 1));
    // Not a multiple of the sector size.
    assert_eq!(drv.request(T_OUT, 0, &[1; 100], 0).status, S_IOERR);
    // Unknown type.
    let c = drv.request(0x1234, 0, &[], 0);
    assert_eq!((c.status, c.used_len), (S_UNSUPP, 1));
    // Truncated header.
    drv.mem
        .write_obj(0xffu8, GuestAddress(BUFS + 0x100))
        .unwrap();
    let (_, len) = drv.submit(&[(BUFS, 8, false), (BUFS + 0x100, 1, true)]);
    assert_eq!(len, 1);
    assert_eq!(
        drv.mem.read_obj::<u8>(GuestAddress(BUFS + 0x100)).unwrap(),
        S_IOERR
    );
    // A chain without a writable status byte is used with length 0.
    let (_, len) = drv.submit(&[(BUFS, 16, false)]);
    assert_eq!(len, 0);
    assert!(image.contents().iter().all(|&b| b == 0));
    // Every completion raised an interrupt.
    assert_eq!(drv.irq.take_after(8, SETTLE).len(), 8);
}

#[test]
fn read_only() {
    let image = Image::new("ro");
    std::fs::write(&image.0, vec![0x42u8; IMAGE_SIZE as usize]).unwrap();
    let mut dev = device(&image, true, None);
    let mut drv = start(&mut dev, false);
    assert_eq!(drv.request(T_OUT, 0, &[0; 512], 0).status, S_IOERR);
    let t = virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES;
    assert_eq!(drv.request(t, 0, &segment(0, 1, 0), 0).status, S_IOERR);
    let t = virtio_blk::VIRTIO_BLK_T_DISCARD;
    assert_eq!(drv.request(t, 0, &segment(0, 1, 0), 0).status, S_IOERR);
    let c = drv.request(T_IN, 0, &[], 512);
    assert_eq!(c.status, S_OK);
    assert!(c.data.iter().all(|&b| b == 0x42));
    assert!(image.contents().iter().all(|&b| b == 0x42));
}

#[test]
fn event_idx_suppresses_interrupts() {
    let image = Image::new("eventidx");
    let mut dev = device(&image, false, None);
    let mut drv = start(&mut dev, true);
    let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(QSIZE));
    drv.mem.write_obj(0u16, used_event).unwrap();
    // used_event 0: the first completion (used idx 0 -> 1) interrupts.
    assert_eq!(drv.request(T_IN, 0, &[], 512).status, S_OK);
    assert_eq!(
        drv.irq.take_after(1, SETTLE),
        vec![VirtioInterruptType::Queue(0)]
    );
    // The driver did not move used_event: no more interrupts.
    assert_eq!(drv.request(T_IN, 0, &[], 512).status, S_OK);
    assert_eq!(drv.request(T_IN, 0, &[], 512).status, S_OK);
    assert!(drv.irq.take_after(0, SETTLE).is_empty());
    // Asking for one at used idx 4 gets one on the 4th completion.
    drv.mem.write_obj(3u16, used_event).unwrap();
    assert_eq!(drv.request(T_IN, 0, &[], 512).status, S_OK);
    assert_eq!(
        drv.irq.take_after(1, SETTLE),
        vec![VirtioInterruptType::Queue(0)]
    );
    // The device publishes avail_event (it wants every kick).
    let avail_event: u16 = drv
        .mem
        .read_obj(GuestAddress(USED + 4 + 8 * u64::from(QSIZE)))
        .unwrap();
    assert_eq!(avail_event, 4);
}

#[test]
fn resize_raises_config_interrupt() {
    let image = Image::new("resize");
    let mut dev = device(&image, false, None);
    // Not active: capacity changes, no interrupt to raise.
    assert_eq!(dev.resize_notify(), 2048);
    let drv = start(&mut dev, false);
    dev.backend().resize(2 * IMAGE_SIZE).unwrap();
    assert_eq!(dev.resize_notify(), 4096);
    assert_eq!(dev.config().capacity, 4096);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 4096);
    assert_eq!(
        drv.irq.take_after(1, SETTLE),
        vec![VirtioInterruptType::Config]
    );
    // No change, no interrupt.
    dev.resize_notify();
    assert!(drv.irq.take_after(0, SETTLE).is_empty());
}

#[test]
fn reset_and_reactivate() {
    let image = Image::new("reset");
    let mut dev = device(&image, false, None);
    dev.ack_features(dev.features());
    let drv = start(&mut dev, false);
    let mem = memory();
    let err = dev.activate(mem, Vec::new(), drv.irq.clone()).unwrap_err();
    assert!(matches!(err, VirtioDeviceError::AlreadyActive));
    dev.reset().unwrap();
    assert!(!dev.is_active());
    assert_eq!(dev.acked_features(), 0);
    // A kick after reset is ignored (nothing listens).
    drv.notify.write(1).unwrap();
    // Reset twice is fine; a fresh activation serves requests again.
    dev.reset().unwrap();
    let mut drv = start(&mut dev, false);
    assert_eq!(drv.request(T_OUT, 0, &[7; 512], 0).status, S_OK);
    drop(dev);
}

#[test]
fn state_roundtrip() {
    let image = Image::new("state");
    let mut dev = device(&image, false, None);
    dev.ack_features(bit(VIRTIO_F_VERSION_1) | bit(virtio_blk::VIRTIO_BLK_F_FLUSH) | 1 << 50);
    let state = dev.state();
    assert_eq!(
        state.acked_features,
        bit(VIRTIO_F_VERSION_1) | bit(virtio_blk::VIRTIO_BLK_F_FLUSH)
    );
    let mut other = device(&image, false, None);
    other.set_state(&state);
    assert_eq!(other.state(), state);
}

#[test]
fn through_the_pci_transport() {
    use crate::pci::msix::tests::RecordingMsi;
    use crate::virtio::pci::{
        VirtioPciDevice, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    };
    use crate::EventFdTrigger;

    let image = Image::new("pci");
    let mem = memory();
    let blk = device(&image, false, Some("pci-serial"));
    let mut dev = VirtioPciDevice::new(
        "virtio-blk0",
        Box::new(blk),
        mem.clone(),
        Arc::new(RecordingMsi::default()),
        Some(EventFdTrigger::new().unwrap()),
    )
    .unwrap();
    let write = |dev: &mut VirtioPciDevice, offset: u64, len: usize, value: u64| {
        dev.bar_write(offset, &value.to_le_bytes()[..len]);
    };
    let read = |dev: &mut VirtioPciDevice, offset: u64, len: usize| {
        let mut b = [0u8; 8];
        dev.bar_read(offset, &mut b[..len]);
        u64::from_le_bytes(b)
    };
    write(
        &mut dev,
        0x14,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
    );
    write(&mut dev, 0x00, 4, 0);
    let low = read(&mut dev, 0x04, 4);
    assert_ne!(low & bit(virtio_blk::VIRTIO_BLK_F_FLUSH), 0);
    assert_ne!(low & bit(virtio_blk::VIRTIO_BLK_F_DISCARD), 0);
    let features = bit(VIRTIO_F_VERSION_1) | bit(virtio_blk::VIRTIO_BLK_F_FLUSH);
    write(&mut dev, 0x08, 4, 0);
    write(&mut dev, 0x0c, 4, features & 0xffff_ffff);
    write(&mut dev, 0x08, 4, 1);
    write(&mut dev, 0x0c, 4, features >> 32);
    write(&mut dev, 0x14, 1, u64::from(STATUS_FEATURES_OK));
    // Capacity through the device configuration window.
    assert_eq!(read(&mut dev, 0x2000, 8), 2048);
    assert_eq!(read(&mut dev, 0x2000 + 20, 4), 512);
    write(&mut dev, 0x16, 2, 0);
    write(&mut dev, 0x18, 2, u64::from(QSIZE));
    for (offset, address) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
        write(&mut dev, offset, 8, address);
    }
    write(&mut dev, 0x1c, 2, 1);
    write(&mut dev, 0x14, 1, u64::from(STATUS_DRIVER_OK));
    assert_ne!(read(&mut dev, 0x14, 1) as u8 & STATUS_DRIVER_OK, 0);

    let mut drv = Driver {
        mem: mem.clone(),
        notify: dev.notify_event(0).unwrap().try_clone().unwrap(),
        avail_idx: 0,
        irq: Arc::new(InterruptRecorder::default()),
    };
    let data = vec![0xa5u8; 4096];
    assert_eq!(drv.request(T_OUT, 16, &data, 0).status, S_OK);
    let c = drv.request(virtio_blk::VIRTIO_BLK_T_GET_ID, 0, &[], 20);
    assert_eq!(&c.data[..10], b"pci-serial");
    assert_eq!(
        drv.request(virtio_blk::VIRTIO_BLK_T_FLUSH, 0, &[], 0)
            .status,
        S_OK
    );
    assert_eq!(&image.contents()[16 * 512..16 * 512 + 4096], &data[..]);
    // INTx was raised, with the queue bit in the ISR.
    wait_for("INTx", || dev.interrupt().intx_pending());
    assert_eq!(read(&mut dev, 0x1000, 1), 1);
    // A driver reset stops the device.
    write(&mut dev, 0x14, 1, 0);
    assert_eq!(read(&mut dev, 0x14, 1), 0);
}
