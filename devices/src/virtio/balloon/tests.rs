//! A simulated driver on the three queues, in guest memory with a hole.

use std::sync::Mutex;
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::stats::{STAT_COUNT, STAT_UNSET};
use super::*;
use crate::virtio::test_util::{wait_for, InterruptRecorder};

const QSIZE: u16 = 16;
/// Ring memory of queue `i` starts at `RINGS + i * 0x4000`.
const RINGS: u64 = 0x1_0000;
const BUFS: u64 = 0x4_0000;
/// Guest RAM: [0, 1 MiB) and [2 MiB, 3 MiB).
const LOW_END: u64 = 0x10_0000;
const HIGH: u64 = 0x20_0000;
const HIGH_END: u64 = 0x30_0000;

const F_NEXT: u16 = 1;

#[derive(Default)]
struct Actuals(Mutex<Vec<u32>>);

impl BalloonEvents for Actuals {
    fn actual_changed(&self, actual: u32) {
        self.0.lock().unwrap().push(actual);
    }
}

fn memory() -> GuestMemory {
    Arc::new(
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), LOW_END as usize),
            (GuestAddress(HIGH), (HIGH_END - HIGH) as usize),
        ])
        .unwrap(),
    )
}

fn ring(i: usize) -> (u64, u64, u64) {
    let base = RINGS + i as u64 * 0x4000;
    (base, base + 0x1000, base + 0x2000)
}

/// The driver side of the queues it enabled.
struct Driver {
    mem: GuestMemory,
    notify: Vec<(usize, EventFd)>,
    avail_idx: [u16; 3],
    irq: Arc<InterruptRecorder>,
}

/// Activates `dev` with the queues `enabled`; returns the driver.
fn start(dev: &mut VirtioBalloon, enabled: &[usize]) -> Driver {
    let mem = memory();
    let irq = Arc::new(InterruptRecorder::default());
    let mut queues = Vec::new();
    let mut notify = Vec::new();
    for &i in enabled {
        let (desc, avail, used) = ring(i);
        let mut q = Queue::new(QSIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(desc)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(avail)).unwrap();
        q.try_set_used_ring_address(GuestAddress(used)).unwrap();
        q.set_ready(true);
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        queues.push(ActivatedQueue {
            index: i,
            queue: q,
            notify: evt.try_clone().unwrap(),
        });
        notify.push((i, evt));
    }
    dev.activate(mem.clone(), queues, irq.clone()).unwrap();
    Driver {
        mem,
        notify,
        avail_idx: [0; 3],
        irq,
    }
}

impl Driver {
    fn used_idx(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(ring(q).2 + 2)).unwrap()
    }

    /// Posts a chain of device-readable buffers on queue `q` (descriptors from `first`).
    fn post(&mut self, q: usize, first: u16, bufs: &[(u64, u32)]) {
        let (desc, avail, _) = ring(q);
        for (i, &(addr, len)) in bufs.iter().enumerate() {
            let n = first + i as u16;
            let d = desc + 16 * u64::from(n);
            let flags = if i + 1 < bufs.len() { F_NEXT } else { 0 };
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(n + 1, GuestAddress(d + 14)).unwrap();
        }
        let slot = u64::from(self.avail_idx[q] % QSIZE);
        self.mem
            .write_obj(first, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(avail + 2))
            .unwrap();
        let (_, evt) = self.notify.iter().find(|(i, _)| *i == q).unwrap();
        evt.write(1).unwrap();
    }

    /// Waits until queue `q` has used `n` buffers in all.
    fn wait_used(&self, q: usize, n: u16) {
        wait_for(&format!("queue {q}: buffer used"), || self.used_idx(q) == n);
    }

    /// Sends `pfns` on queue `q` as one buffer and waits for it.
    fn send(&mut self, q: usize, pfns: &[u32]) {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(BUFS)).unwrap();
        let before = self.used_idx(q);
        self.post(q, 0, &[(BUFS, bytes.len() as u32)]);
        self.wait_used(q, before.wrapping_add(1));
    }

    fn fill(&self, pfn: u32) {
        let addr = GuestAddress(u64::from(pfn) << PAGE_SHIFT);
        self.mem.write_slice(&[0x5a; 4096], addr).unwrap();
    }

    fn page(&self, pfn: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        let addr = GuestAddress(u64::from(pfn) << PAGE_SHIFT);
        self.mem.read_slice(&mut b, addr).unwrap();
        b
    }
}

fn device(deflate_on_oom: bool) -> (VirtioBalloon, Arc<Actuals>) {
    let events = Arc::new(Actuals::default());
    let params = BalloonParams {
        deflate_on_oom,
        ..BalloonParams::default()
    };
    let dev = VirtioBalloon::new("balloon0", params, Some(events.clone())).unwrap();
    (dev, events)
}

fn config_word(dev: &VirtioBalloon, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(offset, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn features_queues_and_config() {
    let (dev, _) = device(false);
    assert_eq!(dev.device_type(), TYPE_BALLOON);
    assert_eq!(dev.queue_max_sizes(), &[128, 128, 128]);
    let f = dev.features();
    for b in [
        VIRTIO_F_VERSION_1,
        F_STATS_VQ,
        F_PAGE_POISON,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b}");
    }
    assert_eq!(f & (bit(F_MUST_TELL_HOST) | bit(F_DEFLATE_ON_OOM)), 0);
    let (dev, _) = device(true);
    assert_ne!(dev.features() & bit(F_DEFLATE_ON_OOM), 0);
    let params = BalloonParams {
        page_poison: false,
        ..BalloonParams::default()
    };
    let plain = VirtioBalloon::new("b", params, None).unwrap();
    assert_eq!(plain.features() & bit(F_PAGE_POISON), 0);
    let mut all = [0xffu8; 20];
    dev.read_config(0, &mut all);
    assert_eq!(all, [0u8; 20]);
}

#[test]
fn driver_writes_actual_and_poison_only() {
    let (mut dev, events) = device(false);
    dev.set_target(100);
    // The device's fields ignore the driver.
    dev.write_config(0, &7u32.to_le_bytes());
    assert_eq!(config_word(&dev, 0), 100);
    // `actual`, written a byte at a time: each change is reported.
    dev.write_config(4, &[0x34]);
    dev.write_config(5, &[0x12]);
    dev.write_config(4, &0x1234u32.to_le_bytes());
    assert_eq!(dev.actual(), 0x1234);
    assert_eq!(config_word(&dev, 4), 0x1234);
    assert_eq!(*events.0.lock().unwrap(), vec![0x34, 0x1234]);
    // poison_val sticks only once PAGE_POISON is negotiated.
    dev.write_config(12, &0xaau32.to_le_bytes());
    assert_eq!(config_word(&dev, 12), 0);
    dev.ack_features(bit(F_PAGE_POISON) | bit(F_MUST_TELL_HOST));
    assert_eq!(dev.acked_features(), bit(F_PAGE_POISON));
    dev.write_config(12, &0xaau32.to_le_bytes());
    assert_eq!(config_word(&dev, 12), 0xaa);
}

#[test]
fn target_signals_only_a_running_driver() {
    let (mut dev, _) = device(false);
    dev.set_target(5);
    let drv = start(&mut dev, &[0, 1]);
    assert!(dev.is_active());
    dev.set_target(10);
    dev.set_target(10);
    assert_eq!(config_word(&dev, 0), 10);
    assert_eq!(
        drv.irq.take(),
        vec![VirtioInterruptType::Config, VirtioInterruptType::Config]
    );
}

#[test]
fn inflate_discards_and_deflate_returns() {
    let (mut dev, _) = device(false);
    let mut drv = start(&mut dev, &[0, 1]);
    let low: Vec<u32> = (0x80..0x90).collect();
    let high: Vec<u32> = (0x200..0x208).collect();
    for &p in low.iter().chain(&high) {
        drv.fill(p);
    }
    drv.fill(0x90);
    let mut pfns = low.clone();
    pfns.extend(&high);
    pfns.push(0x80); // twice in one buffer: counted once
    drv.send(INFLATE_QUEUE, &pfns);
    assert_eq!(dev.ballooned_pages(), 24);
    for &p in low.iter().chain(&high) {
        assert!(
            drv.page(p).iter().all(|&b| b == 0),
            "pfn {p:#x} kept its data"
        );
    }
    assert!(
        drv.page(0x90).iter().all(|&b| b == 0x5a),
        "a neighbour was discarded"
    );
    assert!(drv.irq.take().contains(&VirtioInterruptType::Queue(0)));

    drv.send(DEFLATE_QUEUE, &low[..4]);
    assert_eq!(dev.ballooned_pages(), 20);
    // Deflating what is not in the balloon changes nothing.
    drv.send(DEFLATE_QUEUE, &[0x90, 0x91]);
    assert_eq!(dev.ballooned_pages(), 20);
    assert!(drv.page(0x90).iter().all(|&b| b == 0x5a));
    assert_eq!(
        dev.save_state().pages,
        PageRuns(vec![(0x84, 12), (0x200, 8)])
    );
}

#[test]
fn frames_outside_ram_are_ignored() {
    let (mut dev, _) = device(false);
    let mut drv = start(&mut dev, &[0, 1]);
    drv.fill(0x81);
    // In the hole, past the end, the largest frame, and one good frame among them.
    let bogus = [0x100, 0x1ff, 0x300, 0xffff_ffff, 0x81, 0x2_0000];
    drv.send(INFLATE_QUEUE, &bogus);
    assert_eq!(dev.ballooned_pages(), 1);
    assert!(drv.page(0x81).iter().all(|&b| b == 0));
    drv.send(DEFLATE_QUEUE, &bogus);
    assert_eq!(dev.ballooned_pages(), 0);
    // A buffer outside guest memory, and one straddling the hole: used, nothing breaks.
    let before = drv.used_idx(0);
    drv.post(INFLATE_QUEUE, 0, &[(LOW_END + 0x100, 64)]);
    drv.wait_used(0, before.wrapping_add(1));
    drv.post(INFLATE_QUEUE, 0, &[(LOW_END - 8, 64)]);
    drv.wait_used(0, before.wrapping_add(2));
    drv.send(INFLATE_QUEUE, &[0x82]);
    assert_eq!(dev.ballooned_pages(), 1);
}

#[test]
fn frame_numbers_may_straddle_descriptors() {
    let (mut dev, _) = device(false);
    let mut drv = start(&mut dev, &[0, 1]);
    let bytes: Vec<u8> = [0x85u32, 0x86, 0x87]
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    drv.mem
        .write_slice(&bytes[..6], GuestAddress(BUFS))
        .unwrap();
    drv.mem
        .write_slice(&bytes[6..], GuestAddress(BUFS + 0x100))
        .unwrap();
    // A trailing partial number is ignored.
    drv.mem
        .write_slice(&[1, 2], GuestAddress(BUFS + 0x200))
        .unwrap();
    drv.post(
        INFLATE_QUEUE,
        0,
        &[(BUFS, 6), (BUFS + 0x100, 6), (BUFS + 0x200, 2)],
    );
    drv.wait_used(0, 1);
    assert_eq!(dev.save_state().pages, PageRuns(vec![(0x85, 3)]));
}

fn stats_bytes(entries: &[(u16, u64)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|(t, v)| {
            let mut e = t.to_le_bytes().to_vec();
            e.extend_from_slice(&v.to_le_bytes());
            e
        })
        .collect()
}

#[test]
fn stats_are_kept_and_polled() {
    let (mut dev, _) = device(false);
    let mut drv = start(&mut dev, &[0, 1, 2]);
    let first = stats_bytes(&[(4, 1000), (5, 4096), (99, 7)]);
    drv.mem.write_slice(&first, GuestAddress(BUFS)).unwrap();
    drv.post(STATS_QUEUE, 0, &[(BUFS, first.len() as u32)]);
    wait_for("the stats", || dev.guest_stats().last_update != 0);
    let s = dev.guest_stats();
    assert_eq!(
        (s.values[4], s.values[5], s.values[0]),
        (1000, 4096, STAT_UNSET)
    );
    let named: Vec<_> = s.named().collect();
    assert_eq!(named.len(), STAT_COUNT);
    assert_eq!(named[4], ("stat-free-memory", 1000));
    // Held: not given back without polling.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drv.used_idx(2), 0);

    // Polling on: the buffer comes back at once.
    assert_eq!(
        dev.set_stats_poll_interval(-1),
        Err(VirtioBalloonError::NegativeInterval)
    );
    assert_eq!(
        dev.set_stats_poll_interval(MAX_POLL_INTERVAL + 1),
        Err(VirtioBalloonError::IntervalTooBig)
    );
    dev.set_stats_poll_interval(1).unwrap();
    assert_eq!(dev.stats_poll_interval(), 1);
    drv.wait_used(2, 1);
    // The driver answers; a statistic it no longer reports becomes unset.
    let second = stats_bytes(&[(4, 2000)]);
    drv.mem.write_slice(&second, GuestAddress(BUFS)).unwrap();
    drv.post(STATS_QUEUE, 0, &[(BUFS, second.len() as u32)]);
    wait_for("the second stats", || dev.guest_stats().values[4] == 2000);
    assert_eq!(dev.guest_stats().values[5], STAT_UNSET);
    // One interval later it is asked again.
    drv.wait_used(2, 2);
    // Polling off: the next buffer is held.
    dev.set_stats_poll_interval(0).unwrap();
    drv.post(STATS_QUEUE, 0, &[(BUFS, second.len() as u32)]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(drv.used_idx(2), 2);
    // A second buffer while one is held: the first comes back.
    drv.post(STATS_QUEUE, 4, &[(BUFS, second.len() as u32)]);
    drv.wait_used(2, 3);
}

#[test]
fn reset_keeps_the_target_and_forgets_the_pages() {
    let (mut dev, _) = device(false);
    dev.ack_features(bit(F_PAGE_POISON));
    let mut drv = start(&mut dev, &[0, 1]);
    dev.set_target(8);
    dev.write_config(4, &3u32.to_le_bytes());
    dev.write_config(12, &0x55u32.to_le_bytes());
    drv.send(INFLATE_QUEUE, &[0x80, 0x81, 0x82]);
    dev.reset().unwrap();
    assert!(!dev.is_active());
    assert_eq!((dev.config().num_pages, dev.actual()), (8, 3));
    assert_eq!((dev.config().poison_val, dev.acked_features()), (0, 0));
    assert_eq!(dev.ballooned_pages(), 0);
    // Not active: a new target is stored without an interrupt.
    drv.irq.take();
    dev.set_target(9);
    assert!(drv.irq.take().is_empty());
}

#[test]
fn state_round_trip() {
    let (mut dev, _) = device(true);
    dev.ack_features(bit(F_STATS_VQ) | bit(VIRTIO_F_VERSION_1));
    let mut drv = start(&mut dev, &[0, 1]);
    dev.set_target(40);
    dev.write_config(4, &2u32.to_le_bytes());
    drv.send(INFLATE_QUEUE, &[0x90, 0x91, 0x200]);
    dev.set_stats_poll_interval(5).unwrap();
    let state = dev.save_state();
    assert_eq!(state.pages, PageRuns(vec![(0x90, 2), (0x200, 1)]));
    assert_eq!(
        dev.restore_state(state.clone()),
        Err(VirtioBalloonError::Active)
    );
    let (mut other, _) = device(true);
    other.restore_state(state.clone()).unwrap();
    assert_eq!(other.save_state(), state);
    assert_eq!(other.ballooned_pages(), 3);
    assert_eq!(other.stats_poll_interval(), 5);
}

#[test]
fn page_set_runs() {
    let mut set = PageSet::default();
    for p in [3, 4, 5, 63, 64, 65, 200, 0] {
        assert!(set.insert(p));
    }
    assert!(!set.insert(4));
    assert!(set.contains(64) && !set.contains(66));
    assert_eq!(set.count(), 8);
    let runs = set.runs();
    assert_eq!(runs, PageRuns(vec![(0, 1), (3, 3), (63, 3), (200, 1)]));
    assert_eq!(PageSet::from_runs(&runs).runs(), runs);
    assert!(set.remove(64) && !set.remove(64) && !set.remove(1 << 30));
    assert_eq!(set.count(), 7);
    set.clear();
    assert_eq!((set.count(), set.runs()), (0, PageRuns::default()));
}
