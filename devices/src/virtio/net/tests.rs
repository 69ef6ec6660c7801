//! A simulated driver and a fake backend moving frames through the device.

mod backpressure;
mod datapath;
mod filtering;
mod harness;
mod transport;

use std::sync::atomic::{AtomicUsize, Ordering};

use petrel_net::{Offloads, VNET_HDR_LEN};
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};

use self::harness::{backend, start, Driver, Peer, QUIET};
use super::features::bit;
use super::*;
use crate::virtio::test_util::{wait_for, InterruptRecorder};
use crate::virtio::{VirtioInterruptType, VIRTIO_F_VERSION_1};

const OUR_MAC: [u8; 6] = DEFAULT_MAC;
const STRANGER: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
const BROADCAST: [u8; 6] = [0xff; 6];
const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];

const CLASS_RX: u8 = VIRTIO_NET_CTRL_RX as u8;
const CLASS_MAC: u8 = VIRTIO_NET_CTRL_MAC as u8;
const CLASS_VLAN: u8 = VIRTIO_NET_CTRL_VLAN as u8;
const CLASS_ANNOUNCE: u8 = VIRTIO_NET_CTRL_ANNOUNCE as u8;
const CLASS_MQ: u8 = VIRTIO_NET_CTRL_MQ as u8;
const CLASS_OFFLOADS: u8 = VIRTIO_NET_CTRL_GUEST_OFFLOADS as u8;
const CTRL_OK: u8 = VIRTIO_NET_OK as u8;
const CTRL_ERR: u8 = VIRTIO_NET_ERR as u8;

/// An Ethernet frame to `dst` of `len` bytes with a recognisable payload.
fn eth(dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&STRANGER);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| (i % 251) as u8));
    f
}

/// The same frame with an 802.1Q tag for VLAN `id`.
fn tagged(dst: [u8; 6], id: u16) -> Vec<u8> {
    let mut f = eth(dst, 64);
    let tag = [0x81, 0x00, (id >> 8) as u8, id as u8];
    f.splice(12..12, tag);
    f
}

/// A zero virtio-net header followed by `frame`.
fn with_hdr(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; VNET_HDR_LEN];
    v.extend_from_slice(frame);
    v
}

fn device(vnet_hdr: bool) -> (VirtioNet, Peer) {
    let (b, peer) = backend(vnet_hdr);
    let dev = VirtioNet::new("net0", Some(b), &NetParams::default()).unwrap();
    (dev, peer)
}

/// A device over a fake backend, brought up by a driver that accepted
/// every feature but `refused`.
fn running(vnet_hdr: bool, refused: u64) -> (VirtioNet, NetControl, Driver, Peer) {
    let (mut dev, peer) = device(vnet_hdr);
    let drv = start(&mut dev, refused, false);
    let ctl = dev.control();
    (dev, ctl, drv, peer)
}

/// Injects `frame` with one receive buffer posted; returns whether the
/// guest got it (checking what it got), or the device dropped it.
fn delivered(drv: &mut Driver, ctl: &NetControl, peer: &Peer, frame: &[u8]) -> bool {
    let before = ctl.stats();
    drv.post_rx(4096);
    drv.rx.kick();
    peer.inject_frame(frame);
    wait_for("the frame's fate", || {
        let s = ctl.stats();
        s.rx_packets + s.rx_dropped > before.rx_packets + before.rx_dropped
    });
    if ctl.stats().rx_packets == before.rx_packets {
        return false;
    }
    let (head, len) = drv.rx.wait_used(&drv.mem);
    assert_eq!(len as usize, VNET_HDR_LEN + frame.len());
    let addr = drv.rx_buf(head) + VNET_HDR_LEN as u64;
    assert_eq!(drv.read(addr, frame.len()), frame);
    true
}

#[test]
fn features_follow_the_backend() {
    let always = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_VLAN,
        VIRTIO_NET_F_CTRL_RX_EXTRA,
        VIRTIO_NET_F_CTRL_MAC_ADDR,
        VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
    ];
    let offloads = [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_GUEST_UFO,
    ];
    let with: u64 = always.iter().chain(&offloads).map(|&b| bit(b)).sum();
    let without: u64 = always.iter().map(|&b| bit(b)).sum();
    assert_eq!(device(true).0.features(), with);
    assert_eq!(device(false).0.features(), without);
    let bare = VirtioNet::new("net1", None, &NetParams::default()).unwrap();
    assert_eq!(bare.features(), without);
    assert_eq!(bare.queue_max_sizes(), &[256, 256, 64]);
    assert_eq!(bare.device_type(), TYPE_NET);
    let params = NetParams {
        host_mtu: Some(1400),
        ..NetParams::default()
    };
    let mtu = VirtioNet::new("net2", None, &params).unwrap();
    assert_eq!(mtu.features(), without | bit(VIRTIO_NET_F_MTU));
}

#[test]
fn queue_sizes_are_checked_as_qemu_does() {
    let bad = |rx, tx| {
        let params = NetParams {
            rx_queue_size: rx,
            tx_queue_size: tx,
            ..NetParams::default()
        };
        VirtioNet::new("n", None, &params)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        bad(128, 256).unwrap(),
        "Invalid rx_queue_size (= 128), must be a power of 2 between 256 and 1024."
    );
    assert!(bad(1000, 256).is_some());
    assert_eq!(
        bad(256, 2048).unwrap(),
        "Invalid tx_queue_size (= 2048), must be a power of 2 between 256 and 1024"
    );
    // A larger transmit queue is accepted and brought back to 256.
    let params = NetParams {
        rx_queue_size: 1024,
        tx_queue_size: 1024,
        ..NetParams::default()
    };
    let dev = VirtioNet::new("n", None, &params).unwrap();
    assert_eq!(dev.queue_max_sizes(), &[1024, 256, 64]);
}

#[test]
fn config_space_holds_mac_status_and_mtu() {
    let params = NetParams {
        mac: [2, 0, 0, 0, 0, 9],
        ..NetParams::default()
    };
    let dev = VirtioNet::new("n", None, &params).unwrap();
    let mut b = [0xffu8; 16];
    dev.read_config(0, &mut b);
    assert_eq!(b, [2, 0, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let params = NetParams {
        host_mtu: Some(9000),
        ..params
    };
    let dev = VirtioNet::new("n", None, &params).unwrap();
    dev.read_config(0, &mut b);
    let mtu = 9000u16.to_le_bytes();
    assert_eq!(
        b,
        [2, 0, 0, 0, 0, 9, 1, 0, 1, 0, mtu[0], mtu[1], 0, 0, 0, 0]
    );
    let mut status = [0u8; 2];
    dev.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status), 1);
}

#[test]
fn accepted_features_tell_the_backend_its_offloads() {
    let (mut dev, peer) = device(true);
    let features = dev.features() & !bit(VIRTIO_NET_F_GUEST_UFO) & !bit(VIRTIO_NET_F_GUEST_ECN);
    dev.ack_features(features);
    assert_eq!(
        peer.offloads.lock().unwrap().last(),
        Some(&Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            tso_ecn: false,
            ufo: false,
        })
    );
}

#[test]
fn set_link_changes_status_and_raises_a_config_interrupt() {
    let (mut dev, ctl, mut drv, peer) = running(false, 0);
    ctl.set_link(false);
    assert!(!ctl.link_up());
    let mut status = [0u8; 2];
    dev.read_config(6, &mut status);
    assert_eq!(status, [0, 0]);
    assert_eq!(
        drv.irq.take_after(0, QUIET),
        vec![VirtioInterruptType::Config]
    );
    // No change, no interrupt.
    ctl.set_link(false);
    assert!(drv.irq.take_after(0, QUIET).is_empty());
    // Link down: frames sent are completed and dropped, frames received
    // are dropped.
    drv.send(&with_hdr(&eth(STRANGER, 64)), &[]);
    assert!(peer.nothing_sent());
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 64)));
    drv.irq.take_after(0, QUIET);
    ctl.set_link(true);
    assert_eq!(
        drv.irq.take_after(0, QUIET),
        vec![VirtioInterruptType::Config]
    );
    drv.send(&with_hdr(&eth(STRANGER, 64)), &[]);
    assert_eq!(peer.sent(), eth(STRANGER, 64));
    // The frame the buffer posted above waits for now comes through.
    let frame = eth(OUR_MAC, 70);
    peer.inject(&frame);
    assert_eq!(
        drv.rx.wait_used(&drv.mem).1 as usize,
        VNET_HDR_LEN + frame.len()
    );
    // Without VIRTIO_NET_F_STATUS the status changes silently.
    dev.reset().unwrap();
    let drv = start(&mut dev, bit(VIRTIO_NET_F_STATUS), false);
    ctl.set_link(false);
    assert!(drv.irq.take_after(0, QUIET).is_empty());
    assert_eq!(dev.config().status, 0);
}

#[test]
fn link_down_drops_a_frame_waiting_for_buffers() {
    let (_dev, ctl, mut drv, peer) = running(false, 0);
    peer.inject(&eth(OUR_MAC, 64));
    assert!(drv.rx.stays_unused(&drv.mem));
    ctl.set_link(false);
    wait_for("the drop", || ctl.stats().rx_dropped == 1);
    ctl.set_link(true);
    let frame = eth(OUR_MAC, 90);
    assert!(delivered(&mut drv, &ctl, &peer, &frame));
}

#[test]
fn set_backend_detaches_and_attaches() {
    let (mut dev, ctl, mut drv, peer) = running(true, 0);
    ctl.set_backend(None);
    let frame = with_hdr(&eth(STRANGER, 64));
    drv.send(&frame, &[]);
    assert!(peer.nothing_sent());
    assert_eq!(ctl.stats().tx_dropped, 1);
    // A new backend gets the guest offloads and the frames.
    let (b, other) = backend(true);
    ctl.set_backend(Some(b));
    drv.send(&frame, &[]);
    assert_eq!(other.sent(), frame);
    assert_eq!(other.offloads.lock().unwrap().len(), 1);
    assert!(delivered(&mut drv, &ctl, &other, &eth(OUR_MAC, 64)));
    // The backend outlives a reset, and a swap while inactive.
    dev.reset().unwrap();
    let (b, third) = backend(true);
    ctl.set_backend(Some(b));
    let mut drv = start(&mut dev, 0, false);
    drv.send(&frame, &[]);
    assert_eq!(third.sent(), frame);
    assert!(other.nothing_sent());
}

#[test]
fn reset_restores_the_filter_and_address() {
    let (mut dev, ctl, mut drv, _peer) = running(false, 0);
    drv.command(CLASS_RX, 0, &[0]);
    drv.command(CLASS_MAC, 1, &STRANGER);
    drv.command(CLASS_VLAN, 0, &7u16.to_le_bytes());
    assert!(!dev.state().filter.promisc);
    dev.reset().unwrap();
    assert!(!dev.is_active());
    assert_eq!(dev.acked_features(), 0);
    assert_eq!(dev.state().filter, RxFilter::new(OUR_MAC));
    assert_eq!(ctl.mac(), OUR_MAC);
    // Reset twice is fine; the device comes back.
    dev.reset().unwrap();
    let mut drv = start(&mut dev, 0, false);
    assert_eq!(drv.command(CLASS_RX, 0, &[1]), CTRL_OK);
}

#[test]
fn state_roundtrip() {
    let (dev, ctl, mut drv, _peer) = running(true, 0);
    drv.command(CLASS_RX, 1, &[1]);
    drv.command(CLASS_VLAN, 0, &9u16.to_le_bytes());
    drv.command(
        CLASS_OFFLOADS,
        0,
        &bit(VIRTIO_NET_F_GUEST_TSO4).to_le_bytes(),
    );
    ctl.set_link(false);
    let state = dev.state();
    assert_eq!(state.acked_features, dev.features());
    assert!(!state.link_up);
    assert_eq!(state.guest_offloads, bit(VIRTIO_NET_F_GUEST_TSO4));
    let (mut other, peer) = device(true);
    other.set_state(&state);
    assert_eq!(other.state(), state);
    assert!(!other.control().link_up());
    assert_eq!(
        peer.offloads.lock().unwrap().last(),
        Some(&Offloads {
            tso4: true,
            ..Offloads::default()
        })
    );
}

#[test]
fn activation_needs_both_data_queues() {
    let (mut dev, _peer) = device(false);
    let mem: GuestMemory =
        Arc::new(vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let irq = Arc::new(InterruptRecorder::default());
    let err = dev.activate(mem, Vec::new(), irq).unwrap_err();
    assert!(matches!(err, VirtioDeviceError::QueueNotEnabled(0)));
    assert!(!dev.is_active());
}
