//! Backpressure: a backend that cannot take a frame (`SendStatus::Busy`)
//! makes the transmit queue wait for it, losing nothing, keeping the order
//! and not spinning; the link going down and the backend going away
//! release the waiting frames.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use petrel_net::{InfoText, NetBackend, NetError, Offloads, SendStatus, TxReady};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::harness::{backend, fake, start, Driver, FakeBackend, Peer};
use super::*;

/// When a [`Gated`] backend refuses frames.
#[derive(Debug, Default)]
struct Rules {
    /// Refuse every frame.
    closed: bool,
    /// Refuse this many more frames, each once, being ready again at once.
    alternate: usize,
    /// The last offer was refused.
    refused_last: bool,
    /// Frames offered so far (counting offers again).
    offers: usize,
}

/// The test's hold on a [`Gated`] backend.
struct Gate {
    rules: Mutex<Rules>,
    /// The backend's transmit readiness: readable while it takes frames.
    ready: EventFd,
}

impl Gate {
    fn close(&self) {
        self.rules.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.rules.lock().unwrap().closed = false;
        self.ready.write(1).unwrap();
    }

    fn refuse_each_once(&self, frames: usize) {
        self.rules.lock().unwrap().alternate = frames;
    }

    fn offers(&self) -> usize {
        self.rules.lock().unwrap().offers
    }
}

/// A fake backend that refuses frames as its [`Gate`] says.
struct Gated {
    inner: FakeBackend,
    gate: Arc<Gate>,
}

impl NetBackend for Gated {
    fn kind(&self) -> &'static str {
        "gated"
    }

    fn vnet_hdr(&self) -> bool {
        self.inner.vnet_hdr()
    }

    fn set_offloads(&mut self, offloads: Offloads) -> Result<(), NetError> {
        self.inner.set_offloads(offloads)
    }

    fn try_send(&mut self, frame: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        {
            let mut rules = self.gate.rules.lock().unwrap();
            rules.offers += 1;
            if rules.closed {
                // Not ready until opened (the counter may be zero already).
                let _ = self.gate.ready.read();
                return Ok(SendStatus::Busy);
            }
            if rules.alternate > 0 && !rules.refused_last {
                rules.alternate -= 1;
                rules.refused_last = true;
                self.gate.ready.write(1).unwrap();
                return Ok(SendStatus::Busy);
            }
            rules.refused_last = false;
        }
        self.inner.try_send(frame)
    }

    fn tx_ready(&self) -> Option<TxReady> {
        Some(TxReady::Readable(self.gate.ready.as_raw_fd()))
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        self.inner.recv(buf)
    }

    fn rx_fd(&self) -> RawFd {
        self.inner.rx_fd()
    }

    fn info(&self) -> InfoText {
        self.inner.info()
    }
}

/// A gated backend without the virtio-net header, its far end and its gate.
fn gated_backend() -> (Box<dyn NetBackend>, Peer, Arc<Gate>) {
    let (inner, peer) = fake(false);
    let gate = Arc::new(Gate {
        rules: Mutex::default(),
        ready: EventFd::new(EFD_NONBLOCK).unwrap(),
    });
    let gated = Gated {
        inner,
        gate: gate.clone(),
    };
    (Box::new(gated), peer, gate)
}

/// A running device named `id` over a gated backend.
fn gated(id: &str) -> (VirtioNet, NetControl, Driver, Peer, Arc<Gate>) {
    let (b, peer, gate) = gated_backend();
    let mut dev = VirtioNet::new(id, Some(b), &NetParams::default()).unwrap();
    let drv = start(&mut dev, 0, false);
    let ctl = dev.control();
    (dev, ctl, drv, peer, gate)
}

/// Frame number `seq`.
fn numbered(seq: u8) -> Vec<u8> {
    let mut f = eth(STRANGER, 64);
    f[14] = seq;
    f
}

/// Queues `frames`, each after a zero header in one descriptor, and kicks
/// once.
fn queue_tx(drv: &mut Driver, frames: &[Vec<u8>]) {
    for f in frames {
        let bytes = with_hdr(f);
        let addr = drv.alloc(bytes.len() as u32);
        drv.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        drv.tx.add(&drv.mem, &[(addr, bytes.len() as u32, false)]);
    }
    drv.tx.kick();
}

/// Waits for `n` used transmit entries.
fn used_tx(drv: &mut Driver, n: usize) {
    for _ in 0..n {
        drv.tx.wait_used(&drv.mem);
    }
}

/// The id of this process's thread named `name`.
fn thread_id(name: &str) -> String {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|task| task.file_name().into_string().ok())
        .unwrap_or_else(|| panic!("no thread {name}"))
}

/// The user and system CPU time thread `tid` used, in clock ticks.
fn cpu_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The fields after the command, which ends at the last ')', from field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().unwrap();
    field(14) + field(15)
}

#[test]
fn refused_frames_are_offered_again_in_order() {
    let (_dev, ctl, mut drv, peer, gate) = gated("net0");
    gate.refuse_each_once(usize::MAX);
    for batch in 0..5u8 {
        let frames: Vec<_> = (0..8).map(|i| numbered(batch * 8 + i)).collect();
        queue_tx(&mut drv, &frames);
        for f in &frames {
            assert_eq!(peer.sent(), *f);
        }
        used_tx(&mut drv, frames.len());
    }
    assert!(peer.nothing_sent());
    let stats = ctl.stats();
    assert_eq!((stats.tx_packets, stats.tx_dropped), (40, 0));
    assert_eq!(gate.offers(), 80, "each frame refused once, then taken");
}

#[test]
fn tx_kicks_while_the_backend_refuses_do_not_spin() {
    // The I/O thread is "virtio-net-spin", a name no other test uses.
    let (_dev, ctl, mut drv, peer, gate) = gated("spin");
    gate.close();
    let frames: Vec<_> = (0..3).map(numbered).collect();
    queue_tx(&mut drv, &frames);
    wait_for("the first offer", || gate.offers() == 1);
    let tid = thread_id("virtio-net-spin");
    let before = cpu_ticks(&tid);
    for _ in 0..50 {
        drv.tx.kick();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(drv.tx.stays_unused(&drv.mem), "refused frames are not used");
    assert!(peer.nothing_sent());
    assert_eq!(gate.offers(), 1, "kicks do not offer the frame again");
    let spent = cpu_ticks(&tid) - before;
    assert!(spent <= 5, "the I/O thread used {spent} ticks waiting");
    gate.open();
    for f in &frames {
        assert_eq!(peer.sent(), *f);
    }
    used_tx(&mut drv, frames.len());
    assert_eq!(gate.offers(), 4);
    assert_eq!(ctl.stats().tx_dropped, 0);
}

#[test]
fn link_down_and_backend_changes_release_refused_frames() {
    let (_dev, ctl, mut drv, peer, gate) = gated("net0");
    gate.close();
    queue_tx(&mut drv, &[numbered(1), numbered(2)]);
    wait_for("the first offer", || gate.offers() >= 1);
    // Frames for the guest still come through meanwhile.
    assert!(delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 64)));
    assert!(peer.nothing_sent());
    // Link down: the waiting frames are used and dropped.
    ctl.set_link(false);
    used_tx(&mut drv, 2);
    assert_eq!(ctl.stats().tx_dropped, 2);
    ctl.set_link(true);
    // No backend: the same.
    let offers = gate.offers();
    queue_tx(&mut drv, &[numbered(3)]);
    wait_for("the offer", || gate.offers() > offers);
    ctl.set_backend(None);
    used_tx(&mut drv, 1);
    assert_eq!(ctl.stats().tx_dropped, 3);
    assert!(peer.nothing_sent());
    // A frame the backend refused goes to the one that replaces it.
    let (b, _gated_peer, gate) = gated_backend();
    gate.close();
    ctl.set_backend(Some(b));
    queue_tx(&mut drv, &[numbered(4), numbered(5)]);
    wait_for("the offer", || gate.offers() >= 1);
    let (b, other) = backend(false);
    ctl.set_backend(Some(b));
    assert_eq!(other.sent(), numbered(4));
    assert_eq!(other.sent(), numbered(5));
    used_tx(&mut drv, 2);
    let stats = ctl.stats();
    assert_eq!((stats.tx_packets, stats.tx_dropped), (2, 3));
}
