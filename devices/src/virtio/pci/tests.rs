//! A simulated driver bringing up a dummy device over BAR 0 and
//! configuration space.

use std::sync::Mutex;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::pci::config::{CAPABILITIES_POINTER, COMMAND, COMMAND_MEMORY};
use crate::pci::msix::tests::RecordingMsi;
use crate::pci::msix::{MSIX_CONTROL_ENABLE, MSIX_TABLE_ENTRY_SIZE};
use crate::pci::{devfn, Ecam, PciDeviceHandle, PciRoot};
use crate::virtio::TYPE_BLOCK;

const BAR_ADDRESS: u64 = 0x80_0000_0000;
const FEATURE_A: u64 = 1 << 3;
const FEATURE_HIGH: u64 = 1 << 40;

/// One activation as the device saw it: (index, size, desc, avail, used,
/// next_avail).
type QueueSeen = (usize, u16, u64, u64, u64, u16);

#[derive(Default)]
struct Record {
    acked: Option<u64>,
    activations: Vec<Vec<QueueSeen>>,
    resets: usize,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    notify: Vec<EventFd>,
    config: [u8; 8],
}

struct Dummy(Arc<Mutex<Record>>);

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 64]
    }

    fn features(&self) -> u64 {
        FEATURE_A | FEATURE_HIGH
    }

    fn ack_features(&mut self, value: u64) {
        self.0.lock().unwrap().acked = Some(value);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let record = self.0.lock().unwrap();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = record.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut record = self.0.lock().unwrap();
        for (i, byte) in data.iter().enumerate() {
            if let Some(slot) = record.config.get_mut(offset as usize + i) {
                *slot = *byte;
            }
        }
    }

    fn activate(
        &mut self,
        _mem: GuestMemory,
        queues: Vec<ActivatedQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), VirtioDeviceError> {
        let mut record = self.0.lock().unwrap();
        let seen = queues
            .iter()
            .map(|q| {
                (
                    q.index,
                    q.queue.size(),
                    q.queue.desc_table(),
                    q.queue.avail_ring(),
                    q.queue.used_ring(),
                    q.queue.next_avail(),
                )
            })
            .collect();
        record.activations.push(seen);
        record.notify = queues.into_iter().map(|q| q.notify).collect();
        record.interrupt = Some(interrupt);
        Ok(())
    }

    fn reset(&mut self) -> Result<(), VirtioDeviceError> {
        let mut record = self.0.lock().unwrap();
        record.resets += 1;
        record.interrupt = None;
        record.notify.clear();
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

struct Rig {
    dev: VirtioPciDevice,
    record: Arc<Mutex<Record>>,
    msi: Arc<RecordingMsi>,
    mem: GuestMemory,
}

fn rig() -> Rig {
    let record = Arc::new(Mutex::new(Record::default()));
    let msi = Arc::new(RecordingMsi::default());
    let mem: GuestMemory =
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let mut dev = VirtioPciDevice::new(
        "virtio-blk0",
        Box::new(Dummy(record.clone())),
        mem.clone(),
        msi.clone(),
        Some(EventFdTrigger::new().unwrap()),
    )
    .unwrap();
    dev.config_mut().set_bar_address(0, BAR_ADDRESS).unwrap();
    Rig {
        dev,
        record,
        msi,
        mem,
    }
}

impl Rig {
    fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn write(&mut self, offset: u64, len: usize, value: u64) {
        self.dev.bar_write(offset, &value.to_le_bytes()[..len]);
    }

    fn status(&mut self) -> u8 {
        self.read(0x14, 1) as u8
    }

    fn negotiate(&mut self, features: u64) {
        self.write(0x14, 1, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
        self.write(0x08, 4, 0);
        self.write(0x0c, 4, features & 0xffff_ffff);
        self.write(0x08, 4, 1);
        self.write(0x0c, 4, features >> 32);
        self.write(0x14, 1, u64::from(STATUS_FEATURES_OK));
    }

    /// Sets up queue `q` with `size` entries at `base`, the Linux way
    /// (addresses as two 32-bit halves).
    fn setup_queue(&mut self, q: u16, size: u16, base: u64) {
        self.write(0x16, 2, u64::from(q));
        self.write(0x18, 2, u64::from(size));
        for (offset, address) in [(0x20, base), (0x28, base + 0x1000), (0x30, base + 0x2000)] {
            self.write(offset, 4, address & 0xffff_ffff);
            self.write(offset + 4, 4, address >> 32);
        }
        self.write(0x1c, 2, 1);
    }

    fn bring_up(&mut self) {
        self.negotiate(1 << VIRTIO_F_VERSION_1 | FEATURE_A);
        self.setup_queue(0, 128, 0x1_0000);
        self.setup_queue(1, 64, 0x2_0000);
        self.write(0x14, 1, u64::from(STATUS_DRIVER_OK));
    }

    fn activations(&self) -> Vec<Vec<QueueSeen>> {
        self.record.lock().unwrap().activations.clone()
    }
}

#[test]
fn identity() {
    let r = rig();
    let c = r.dev.config();
    assert_eq!(c.read_reg(0), 0x1042_1af4);
    assert_eq!(c.read_reg(2), 0x0100_0001);
    assert_eq!(c.read_reg(0x2c / 4), 0x1100_1af4);
    assert_eq!(c.read_reg(0x3c / 4) >> 8 & 0xff, 1);
    let bar = c.bar(0).unwrap();
    assert_eq!(
        (bar.kind, bar.size, bar.address),
        (BarKind::Mem64, 0x8000, BAR_ADDRESS)
    );
}

#[test]
fn feature_negotiation() {
    let mut r = rig();
    assert_eq!(r.read(0x04, 4), FEATURE_A);
    r.write(0x00, 4, 1);
    assert_eq!(r.read(0x00, 4), 1);
    assert_eq!(
        r.read(0x04, 4),
        (FEATURE_HIGH | 1 << VIRTIO_F_VERSION_1) >> 32
    );
    r.write(0x00, 4, 2);
    assert_eq!(r.read(0x04, 4), 0);
    assert_eq!(r.read(0x12, 2), 2);

    // Bits the device does not offer are dropped.
    r.negotiate(1 << VIRTIO_F_VERSION_1 | FEATURE_A | 1 << 5);
    assert_eq!(
        r.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
    );
    let acked = 1 << VIRTIO_F_VERSION_1 | FEATURE_A;
    assert_eq!(r.record.lock().unwrap().acked, Some(acked));
    r.write(0x08, 4, 0);
    assert_eq!(r.read(0x0c, 4), FEATURE_A);
    // Features are frozen once FEATURES_OK is set.
    r.write(0x0c, 4, 0);
    assert_eq!(r.read(0x0c, 4), FEATURE_A);
}

#[test]
fn features_ok_needs_version_1() {
    let mut r = rig();
    r.negotiate(FEATURE_A);
    assert_eq!(r.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(r.record.lock().unwrap().acked, None);
    // DRIVER_OK without FEATURES_OK does not activate.
    r.write(0x14, 1, u64::from(STATUS_DRIVER_OK));
    assert!(r.activations().is_empty());
}

#[test]
fn queue_setup_and_activation() {
    let mut r = rig();
    r.write(0x16, 2, 0);
    assert_eq!(r.read(0x18, 2), 256);
    assert_eq!(r.read(0x1e, 2), 0);
    r.write(0x16, 2, 1);
    assert_eq!(r.read(0x18, 2), 64);
    assert_eq!(r.read(0x1e, 2), 1);
    // Not a power of two, or above the maximum: ignored.
    r.write(0x18, 2, 100);
    r.write(0x18, 2, 128);
    assert_eq!(r.read(0x18, 2), 64);
    // Past the last queue: size 0.
    r.write(0x16, 2, 2);
    assert_eq!(r.read(0x18, 2), 0);

    r.bring_up();
    assert!(r.dev.activated());
    assert_eq!(
        r.activations(),
        [vec![
            (0, 128, 0x1_0000, 0x1_1000, 0x1_2000, 0),
            (1, 64, 0x2_0000, 0x2_1000, 0x2_2000, 0)
        ]]
    );
    // 64-bit reads of the addresses; enabled queues are frozen.
    r.write(0x16, 2, 1);
    assert_eq!(r.read(0x20, 8), 0x2_0000);
    assert_eq!(r.read(0x1c, 2), 1);
    r.write(0x20, 8, 0x9_0000);
    r.write(0x18, 2, 16);
    assert_eq!(r.read(0x20, 8), 0x2_0000);
    assert_eq!(r.read(0x18, 2), 64);

    // Kicks: both paths signal the fd the device got.
    assert_eq!(
        r.dev.notify_addresses(),
        [
            NotifyAddress {
                address: BAR_ADDRESS + 0x3000,
                queue: 0
            },
            NotifyAddress {
                address: BAR_ADDRESS + 0x3004,
                queue: 1
            }
        ]
    );
    r.write(0x3004, 2, 1);
    assert_eq!(r.record.lock().unwrap().notify[1].read().unwrap(), 1);
    r.dev.notify_event(0).unwrap().write(1).unwrap();
    assert_eq!(r.record.lock().unwrap().notify[0].read().unwrap(), 1);

    // A second DRIVER_OK does not activate again.
    r.write(0x14, 1, u64::from(STATUS_DRIVER_OK));
    assert_eq!(r.activations().len(), 1);
}

#[test]
fn only_enabled_queues_are_handed_over() {
    let mut r = rig();
    r.negotiate(1 << VIRTIO_F_VERSION_1);
    r.setup_queue(1, 32, 0x3_0000);
    r.write(0x14, 1, u64::from(STATUS_DRIVER_OK));
    assert_eq!(
        r.activations(),
        [vec![(1, 32, 0x3_0000, 0x3_1000, 0x3_2000, 0)]]
    );
}

#[test]
fn bad_queue_sets_needs_reset() {
    let mut r = rig();
    r.negotiate(1 << VIRTIO_F_VERSION_1);
    // Outside guest memory.
    r.setup_queue(0, 16, 0x1000_0000);
    r.write(0x14, 1, u64::from(STATUS_DRIVER_OK));
    assert!(!r.dev.activated());
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    // The config change was signalled through the ISR (no MSI-X).
    assert_eq!(r.read(0x1000, 1), 2);
}

#[test]
fn status_zero_resets() {
    let mut r = rig();
    r.write(0x10, 2, 0);
    r.bring_up();
    r.write(0x3000, 2, 0);
    r.write(0x14, 1, 0);
    assert_eq!(r.status(), 0);
    assert!(!r.dev.activated());
    assert_eq!(r.record.lock().unwrap().resets, 1);
    assert_eq!(r.read(0x10, 2), u64::from(NO_VECTOR));
    r.write(0x16, 2, 0);
    assert_eq!(r.read(0x18, 2), 256);
    assert_eq!(r.read(0x1c, 2), 0);
    assert_eq!(r.read(0x20, 8), 0);
    r.write(0x08, 4, 0);
    assert_eq!(r.read(0x0c, 4), 0);
    // The unconsumed kick was dropped.
    assert!(r.dev.notify_event(0).unwrap().read().is_err());

    // And the driver can start over.
    r.bring_up();
    assert_eq!(r.activations().len(), 2);
}

#[test]
fn msix_vectors_and_delivery() {
    let mut r = rig();
    let msix_cap = find_cap(&mut r.dev, MSIX_CAP_ID)[0];
    // Three vectors: two queues and config.
    assert_eq!(r.dev.config().read_reg(msix_cap / 4) >> 16, 2);
    assert_eq!(r.dev.config().read_reg(msix_cap / 4 + 1), 0x4000);
    assert_eq!(r.dev.config().read_reg(msix_cap / 4 + 2), 0x5000);

    r.write(0x10, 2, 2);
    assert_eq!(r.read(0x10, 2), 2);
    r.write(0x10, 2, 3);
    assert_eq!(r.read(0x10, 2), u64::from(NO_VECTOR));
    r.write(0x10, 2, 2);
    r.write(0x16, 2, 0);
    r.write(0x1a, 2, 0);
    assert_eq!(r.read(0x1a, 2), 0);
    r.write(0x16, 2, 1);
    r.write(0x1a, 2, 7);
    assert_eq!(r.read(0x1a, 2), u64::from(NO_VECTOR));
    r.write(0x1a, 2, 1);

    // Program the table through the BAR and enable MSI-X.
    for vector in 0..3u64 {
        let entry = 0x4000 + vector * MSIX_TABLE_ENTRY_SIZE;
        r.write(entry, 8, 0xfee0_0000);
        r.write(entry + 8, 4, 0x40 + vector);
        r.write(entry + 12, 4, 0);
    }
    assert_eq!(r.read(0x4000 + 16 + 8, 4), 0x41);
    r.dev
        .config_write(msix_cap / 4, 2, &MSIX_CONTROL_ENABLE.to_le_bytes());
    assert_eq!(r.msi.route(1), Some((0xfee0_0000, 0x41, false)));

    r.bring_up();
    let interrupt = r.record.lock().unwrap().interrupt.clone().unwrap();
    interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(r.msi.take_triggered(), [1, 0, 2]);
    // No ISR with MSI-X, but config changes move the generation.
    assert_eq!(r.read(0x1000, 1), 0);
    assert_eq!(r.read(0x15, 1), 1);

    // Masked entry: pending bit in the PBA, delivered on unmask.
    r.write(0x4000 + 12, 4, 1);
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(r.read(0x5000, 8), 1);
    assert!(r.msi.take_triggered().is_empty());
    r.write(0x4000 + 12, 4, 0);
    assert_eq!(r.msi.take_triggered(), [0]);

    // A queue with no vector gets nothing.
    r.write(0x16, 2, 1);
    r.write(0x1a, 2, u64::from(NO_VECTOR));
    interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert!(r.msi.take_triggered().is_empty());
}

#[test]
fn isr_read_clears_and_intx() {
    let mut r = rig();
    r.bring_up();
    let interrupt = r.record.lock().unwrap().interrupt.clone().unwrap();
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    let intx = r.dev.interrupt().intx().unwrap().event_fd();
    assert_eq!(intx.read().unwrap(), 1);
    assert!(r.dev.interrupt().intx_pending());
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(r.read(0x1000, 1), 3);
    assert_eq!(r.read(0x1000, 1), 0);
    assert!(!r.dev.interrupt().intx_pending());
    // Writes to the ISR are ignored.
    interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    r.write(0x1000, 1, 0);
    assert_eq!(r.read(0x1000, 1), 1);
}

#[test]
fn device_config_passthrough() {
    let mut r = rig();
    r.write(0x2002, 2, 0xbeef);
    assert_eq!(r.read(0x2000, 4), 0xbeef_0000);
    assert_eq!(r.read(0x2008, 4), 0);
    // Outside the BAR.
    assert_eq!(r.read(0x8000, 4), 0xffff_ffff);
}

/// Walks the capability list of `dev` through its configuration space and
/// returns the offsets of capabilities with `id`.
fn find_cap(dev: &mut dyn PciDevice, id: u8) -> Vec<usize> {
    let mut found = Vec::new();
    let mut at = (dev.config_read(CAPABILITIES_POINTER / 4) & 0xfc) as usize;
    while at != 0 {
        let header = dev.config_read(at / 4);
        if header & 0xff == u32::from(id) {
            found.push(at);
        }
        at = (header >> 8 & 0xfc) as usize;
    }
    found
}

#[test]
fn enumeration_through_ecam() {
    let r = rig();
    let handle: Arc<Mutex<VirtioPciDevice>> = Arc::new(Mutex::new(r.dev));
    let mut root = PciRoot::new();
    let slot = devfn(3, 0).unwrap();
    root.add_device(slot, handle.clone() as PciDeviceHandle)
        .unwrap();
    let mut ecam = Ecam::new(Arc::new(Mutex::new(root)), 1).unwrap();
    let base = MmioAddress(0xb000_0000);
    let fn_base = 3u64 << 15;
    let mut read = |reg: u64| {
        let mut b = [0u8; 4];
        ecam.mmio_read(base, fn_base + reg, &mut b);
        u32::from_le_bytes(b)
    };
    assert_eq!(read(0), 0x1042_1af4);
    assert_ne!(read(0x4) >> 16 & 0x10, 0, "capability list bit");

    // Walk the list: (id, cfg_type, bar, offset, length).
    let mut caps = Vec::new();
    let mut at = u64::from(read(0x34) & 0xfc);
    while at != 0 {
        let header = read(at);
        let id = header & 0xff;
        if id == u32::from(CAP_ID_VENDOR) {
            let cfg_type = header >> 24;
            let bar = read(at + 4) & 0xff;
            caps.push((id, cfg_type, bar, read(at + 8), read(at + 12)));
            if cfg_type == u32::from(CFG_TYPE_NOTIFY) {
                assert_eq!(read(at + 16), NOTIFY_OFF_MULTIPLIER);
            }
        } else {
            caps.push((id, 0, 0, 0, 0));
        }
        at = u64::from(header >> 8 & 0xfc);
    }
    assert_eq!(
        caps,
        [
            (9, 1, 0, 0x0000, 0x1000),
            (9, 2, 0, 0x3000, 8),
            (9, 3, 0, 0x1000, 0x1000),
            (9, 4, 0, 0x2000, 0x1000),
            (9, 5, 0, 0, 0),
            (0x11, 0, 0, 0, 0),
        ]
    );

    // BAR size probe through ECAM.
    let mut write = |reg: u64, value: u32| {
        ecam.mmio_write(base, fn_base + reg, &value.to_le_bytes());
    };
    write(0x10, u32::MAX);
    write(0x14, u32::MAX);
    let mut b = [0u8; 4];
    ecam.mmio_read(base, fn_base + 0x10, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xffff_8004);
}

#[test]
fn pci_cfg_access_window() {
    let mut r = rig();
    let cap = find_cap(&mut r.dev, CAP_ID_VENDOR)
        .into_iter()
        .find(|&at| r.dev.config_read(at / 4) >> 24 == u32::from(CFG_TYPE_PCI))
        .unwrap();
    let reg = |field: usize| (cap + field) / 4;
    // Read num_queues (common config 0x12, 2 bytes).
    r.dev.config_write(reg(CAP_BAR), 0, &[0]);
    r.dev
        .config_write(reg(CAP_OFFSET), 0, &0x12u32.to_le_bytes());
    r.dev.config_write(reg(CAP_LENGTH), 0, &2u32.to_le_bytes());
    assert_eq!(r.dev.config_read(reg(CAP_PCI_CFG_DATA)), 2);
    // Write queue_select through the window.
    r.dev
        .config_write(reg(CAP_OFFSET), 0, &0x16u32.to_le_bytes());
    r.dev
        .config_write(reg(CAP_PCI_CFG_DATA), 0, &1u32.to_le_bytes());
    assert_eq!(r.read(0x16, 2), 1);
    // A window on another BAR reads zero.
    r.dev.config_write(reg(CAP_BAR), 0, &[2]);
    assert_eq!(r.dev.config_read(reg(CAP_PCI_CFG_DATA)), 0);
}

#[test]
fn machine_reset() {
    let mut r = rig();
    r.dev.config_write(COMMAND / 4, 0, &[COMMAND_MEMORY as u8]);
    r.bring_up();
    r.dev.reset();
    assert_eq!(r.status(), 0);
    assert!(!r.dev.config().memory_enabled());
    assert_eq!(r.dev.bar_address(), BAR_ADDRESS);
    assert_eq!(r.record.lock().unwrap().resets, 1);
}

#[test]
fn save_and_restore_reactivates() {
    let mut r = rig();
    r.bring_up();
    // The device completed 5 requests on queue 0: used idx at used + 2.
    r.mem.write_obj(5u16, GuestAddress(0x1_2002)).unwrap();
    r.write(0x4000 + 8, 4, 0x77);
    let state = r.dev.save_state();
    assert!(state.activated);

    let mut fresh = rig();
    fresh.dev.restore_state(state.clone()).unwrap();
    assert_eq!(
        fresh.activations(),
        [vec![
            (0, 128, 0x1_0000, 0x1_1000, 0x1_2000, 0),
            (1, 64, 0x2_0000, 0x2_1000, 0x2_2000, 0)
        ]]
    );
    // A different guest memory: the fresh rig has its own, so ring
    // positions start at 0 there; the saved registers are back.
    assert_eq!(fresh.dev.save_state(), state);
    assert_eq!(fresh.read(0x4000 + 8, 4), 0x77);
    // Restoring into an active device is refused.
    assert!(matches!(
        fresh.dev.restore_state(state),
        Err(VirtioPciError::Activate(VirtioDeviceError::AlreadyActive))
    ));
}

#[test]
fn restore_picks_up_ring_position() {
    let mut r = rig();
    r.bring_up();
    let state = r.dev.save_state();
    r.dev.reset();
    // Same memory: the used ring says 5 entries were completed.
    r.mem.write_obj(5u16, GuestAddress(0x1_2002)).unwrap();
    r.dev.restore_state(state).unwrap();
    assert_eq!(r.activations()[1][0].5, 5);
}
