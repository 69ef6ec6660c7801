//! The device behind the virtio-pci transport, as a guest driver sees it.

use super::harness::{memory, VirtQueue, QSIZE};
use super::*;
use crate::pci::msix::tests::RecordingMsi;
use crate::virtio::pci::{
    VirtioPciDevice, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use crate::EventFdTrigger;

/// BAR 0 as the driver sees it: (offset, width) registers.
struct Bar(VirtioPciDevice);

const DEVICE_FEATURE_SELECT: (u64, usize) = (0x00, 4);
const DEVICE_FEATURES: (u64, usize) = (0x04, 4);
const FEATURE_SELECT: (u64, usize) = (0x08, 4);
const FEATURES: (u64, usize) = (0x0c, 4);
const NUM_QUEUES: (u64, usize) = (0x12, 2);
const STATUS: (u64, usize) = (0x14, 1);
const QUEUE_SELECT: (u64, usize) = (0x16, 2);
const QUEUE_SIZE: (u64, usize) = (0x18, 2);
const QUEUE_ENABLE: (u64, usize) = (0x1c, 2);
const ISR: (u64, usize) = (0x1000, 1);
const MAC: (u64, usize) = (0x2000, 6);
const NET_STATUS: (u64, usize) = (0x2006, 2);
const NET_MTU: (u64, usize) = (0x200a, 2);

impl Bar {
    /// `net` behind the transport over `mem`, with MSI-X and INTx.
    fn new(net: VirtioNet, mem: GuestMemory) -> Self {
        let msi = Arc::new(RecordingMsi::default());
        let intx = Some(EventFdTrigger::new().unwrap());
        Bar(VirtioPciDevice::new("virtio-net0", Box::new(net), mem, msi, intx).unwrap())
    }

    fn set(&mut self, (offset, len): (u64, usize), value: u64) {
        self.0.bar_write(offset, &value.to_le_bytes()[..len]);
    }

    fn get(&mut self, (offset, len): (u64, usize)) -> u64 {
        let mut b = [0u8; 8];
        self.0.bar_read(offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    /// The features the device offers.
    fn offered(&mut self) -> u64 {
        (0..2).fold(0, |f, half| {
            self.set(DEVICE_FEATURE_SELECT, half);
            f | self.get(DEVICE_FEATURES) << (32 * half)
        })
    }

    /// Resets the device and accepts `features`.
    fn negotiate(&mut self, features: u64) {
        self.set(STATUS, 0);
        self.set(STATUS, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
        for half in 0..2 {
            self.set(FEATURE_SELECT, half);
            self.set(FEATURES, (features >> (32 * half)) & 0xffff_ffff);
        }
        self.set(STATUS, u64::from(STATUS_FEATURES_OK));
    }

    /// The largest size of queue `index`.
    fn queue_size(&mut self, index: u64) -> u64 {
        self.set(QUEUE_SELECT, index);
        self.get(QUEUE_SIZE)
    }
}

#[test]
fn through_the_pci_transport() {
    let (net, peer) = device(false);
    let ctl = net.control();
    let mem = memory();
    let mut bar = Bar::new(net, mem.clone());
    bar.negotiate(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS));
    // The MAC address and status through the device configuration window.
    assert_eq!(bar.get(MAC).to_le_bytes()[..6], OUR_MAC);
    assert_eq!(bar.get(NET_STATUS), 1);
    let queue = |bar: &Bar, index| {
        let notify = bar.0.notify_event(index).unwrap().try_clone().unwrap();
        VirtQueue::new(index, notify)
    };
    let queues = [queue(&bar, 0), queue(&bar, 1), queue(&bar, 2)];
    for q in &queues[..2] {
        bar.set(QUEUE_SELECT, q.index() as u64);
        bar.set(QUEUE_SIZE, u64::from(QSIZE));
        for (offset, address) in [0x20, 0x28, 0x30].into_iter().zip(q.rings()) {
            bar.set((offset, 8), address);
        }
        bar.set(QUEUE_ENABLE, 1);
    }
    bar.set(STATUS, u64::from(STATUS_DRIVER_OK));
    assert_ne!(bar.get(STATUS) as u8 & STATUS_DRIVER_OK, 0);

    let mut drv = Driver::new(mem, queues);
    let frame = eth(STRANGER, 60);
    drv.send(&with_hdr(&frame), &[]);
    assert_eq!(peer.sent(), frame);
    assert!(delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 60)));
    // A link change raises a configuration interrupt: INTx, ISR bit 1.
    bar.get(ISR);
    ctl.set_link(false);
    assert_eq!(bar.get(NET_STATUS), 0);
    assert_eq!(bar.get(ISR), 2);
    // A driver reset stops the device.
    bar.set(STATUS, 0);
    assert_eq!(bar.get(STATUS), 0);
}

/// `-device virtio-net-pci,rx_queue_size=1024,tx_queue_size=1024,host_mtu=9000` as the guest
/// sees it: as in QEMU 7.2 without vhost-user, a receive queue of 1024 entries, a transmit
/// queue of 256, and VIRTIO_NET_F_MTU with the MTU in the configuration space.
#[test]
fn queue_sizes_and_mtu_as_the_guest_sees_them() {
    let params = NetParams {
        rx_queue_size: 1024,
        tx_queue_size: 1024,
        host_mtu: Some(9000),
        ..NetParams::default()
    };
    let mut bar = Bar::new(VirtioNet::new("n", None, &params).unwrap(), memory());
    assert_eq!(bar.get(NUM_QUEUES), 3);
    let sizes: Vec<u64> = (0..3).map(|index| bar.queue_size(index)).collect();
    assert_eq!(sizes, [1024, 256, 64]);
    let mtu = bit(VIRTIO_NET_F_MTU);
    assert_ne!(bar.offered() & mtu, 0);
    bar.negotiate(bit(VIRTIO_F_VERSION_1) | mtu);
    assert_eq!(bar.get(NET_MTU), 9000);

    // The defaults: QEMU's 256 and no MTU, the configuration space ending at `status`.
    let mut bar = Bar::new(
        VirtioNet::new("n", None, &NetParams::default()).unwrap(),
        memory(),
    );
    let sizes: Vec<u64> = (0..3).map(|index| bar.queue_size(index)).collect();
    assert_eq!(sizes, [256, 256, 64]);
    assert_eq!(bar.offered() & mtu, 0);
    bar.negotiate(bit(VIRTIO_F_VERSION_1));
    assert_eq!(bar.get(NET_MTU), 0);
}
