//! Frames both ways: headers, checksums, buffers.

use super::*;

#[test]
fn tx_with_vnet_hdr_passes_header_and_frame() {
    let (dev, _ctl, mut drv, peer) = running(true, 0);
    let mut bytes = with_hdr(&eth(STRANGER, 100));
    bytes[0] = 1; // NEEDS_CSUM: the backend's business with a header.
    let (_, len) = drv.send(&bytes, &[]);
    assert_eq!(len, 0);
    assert_eq!(peer.sent(), bytes);
    let stats = dev.control().stats();
    assert_eq!((stats.tx_packets, stats.tx_bytes), (1, 100));
}

#[test]
fn tx_without_vnet_hdr_strips_the_header() {
    let (dev, _ctl, mut drv, peer) = running(false, 0);
    let frame = eth(STRANGER, 1514);
    // Header and frame split oddly: 5 + 9 (the header ends inside) + rest.
    drv.send(&with_hdr(&frame), &[5, 9]);
    assert_eq!(peer.sent(), frame);
    // A header in its own descriptor.
    drv.send(&with_hdr(&frame[..60]), &[VNET_HDR_LEN]);
    assert_eq!(peer.sent(), &frame[..60]);
    // Too short for a header: dropped, still completed.
    drv.send(&[0u8; 8], &[]);
    assert!(peer.nothing_sent());
    assert_eq!(dev.control().stats().tx_dropped, 1);
}

/// An IPv4/UDP frame whose checksum field holds the pseudo-header sum, as
/// a driver leaves it with `VIRTIO_NET_HDR_F_NEEDS_CSUM`; and the checksum
/// it should get.
fn partial_udp_frame() -> (Vec<u8>, u16) {
    let payload = b"hello, checksum!!";
    let udp_len = 8 + payload.len() as u16;
    let mut f = eth(STRANGER, 14);
    let ip_total = 20 + udp_len;
    f.extend_from_slice(&[
        0x45,
        0,
        (ip_total >> 8) as u8,
        ip_total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
    ]);
    f.extend_from_slice(&[0, 0, 10, 0, 2, 15, 10, 0, 2, 2]);
    f.extend_from_slice(&[
        0x30,
        0x39,
        0x00,
        0x35,
        (udp_len >> 8) as u8,
        udp_len as u8,
        0,
        0,
    ]);
    f.extend_from_slice(payload);
    let fold = |mut s: u32| {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    };
    let words = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    };
    let pseudo = words(&[10, 0, 2, 15, 10, 0, 2, 2]) + 17 + u32::from(udp_len);
    let partial = fold(pseudo);
    let full = !fold(pseudo + words(&f[34..]));
    f[40..42].copy_from_slice(&partial.to_be_bytes());
    (f, full)
}

#[test]
fn tx_completes_a_partial_checksum_for_a_backend_without_header() {
    let (_dev, _ctl, mut drv, peer) = running(false, 0);
    let (frame, csum) = partial_udp_frame();
    let mut bytes = with_hdr(&frame);
    bytes[0] = 1; // NEEDS_CSUM
    bytes[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    bytes[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset
    drv.send(&bytes, &[20, 7]);
    let sent = peer.sent();
    assert_eq!(u16::from_be_bytes([sent[40], sent[41]]), csum);
    assert_eq!(sent[..40], frame[..40]);
    assert_eq!(sent[42..], frame[42..]);
    // A segmentation offload frame cannot go to such a backend.
    bytes[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    drv.send(&bytes, &[]);
    assert!(peer.nothing_sent());
}

#[test]
fn rx_frame_lands_whole_in_one_buffer() {
    let (dev, _ctl, mut drv, peer) = running(false, bit(VIRTIO_NET_F_MRG_RXBUF));
    let big = drv.post_rx(rx::RX_BUF_LEN as u32);
    drv.rx.kick();
    let frame = eth(OUR_MAC, 1514);
    peer.inject(&frame);
    let (head, len) = drv.rx.wait_used(&drv.mem);
    assert_eq!((head, len as usize), (0, VNET_HDR_LEN + frame.len()));
    let got = drv.read(big, len as usize);
    // A zero header with num_buffers 1, then the frame.
    assert_eq!(got[..VNET_HDR_LEN], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(got[VNET_HDR_LEN..], frame);
    assert_eq!(
        drv.irq.take_after(0, QUIET),
        vec![VirtioInterruptType::Queue(0)]
    );
    // A buffer too small for the next frame: the frame is dropped and the
    // buffer serves the one after.
    let small = drv.post_rx(100);
    drv.rx.kick();
    peer.inject(&frame);
    wait_for("the drop", || dev.control().stats().rx_dropped == 1);
    let short = eth(OUR_MAC, 60);
    peer.inject(&short);
    let (head, len) = drv.rx.wait_used(&drv.mem);
    assert_eq!((head, len as usize), (1, VNET_HDR_LEN + short.len()));
    assert_eq!(drv.read(small + VNET_HDR_LEN as u64, short.len()), short);
}

#[test]
fn rx_frame_spreads_over_mergeable_buffers() {
    let (_dev, _ctl, mut drv, peer) = running(true, 0);
    let bufs: Vec<u64> = (0..4).map(|_| drv.post_rx(600)).collect();
    drv.rx.kick();
    let frame = eth(OUR_MAC, 1500);
    // The backend's header, with a stale num_buffers the device replaces.
    let mut bytes = vec![0u8; VNET_HDR_LEN];
    bytes[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
    bytes[10] = 0x77;
    bytes.extend_from_slice(&frame);
    peer.inject(&bytes);
    let used: Vec<(u32, u32)> = (0..3).map(|_| drv.rx.wait_used(&drv.mem)).collect();
    assert_eq!(used, vec![(0, 600), (1, 600), (2, 312)]);
    let mut got = drv.read(bufs[0], 600);
    got.extend(drv.read(bufs[1], 600));
    got.extend(drv.read(bufs[2], 312));
    assert_eq!(got[0], VIRTIO_NET_HDR_F_DATA_VALID as u8);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3);
    assert_eq!(got[VNET_HDR_LEN..], frame);
    // The fourth buffer is left for the next frame.
    assert!(drv.rx.stays_unused(&drv.mem));
    assert_eq!(
        drv.irq.take_after(0, QUIET),
        vec![VirtioInterruptType::Queue(0)]
    );
}

#[test]
fn rx_without_buffers_keeps_the_frame_until_buffers_arrive() {
    for event_idx in [false, true] {
        let (mut dev, peer) = device(false);
        let refused = if event_idx {
            0
        } else {
            bit(VIRTIO_RING_F_EVENT_IDX)
        };
        let mut drv = start(&mut dev, refused, event_idx);
        let first = eth(OUR_MAC, 2000);
        let second = eth(OUR_MAC, 80);
        peer.inject(&first);
        peer.inject(&second);
        assert!(drv.rx.stays_unused(&drv.mem));
        // Not enough room yet: still pending, and the driver is asked for
        // a kick when it posts more.
        let a = drv.post_rx(1024);
        drv.rx.kick();
        assert!(drv.rx.stays_unused(&drv.mem));
        if event_idx {
            let avail_event: u16 = drv.mem.read_obj(drv.rx.avail_event()).unwrap();
            assert_eq!(avail_event, 1);
        } else {
            assert_eq!(drv.rx.used_flags(&drv.mem), 0);
        }
        let stats = dev.control().stats();
        assert_eq!((stats.rx_packets, stats.rx_dropped), (0, 0));
        let b = drv.post_rx(1024);
        drv.rx.kick();
        assert_eq!(drv.rx.wait_used(&drv.mem), (0, 1024));
        assert_eq!(drv.rx.wait_used(&drv.mem), (1, 988));
        let mut got = drv.read(a, 1024);
        got.extend(drv.read(b, 988));
        assert_eq!(got[10], 2);
        assert_eq!(got[VNET_HDR_LEN..], first);
        // The second frame waited in the backend and follows.
        let c = drv.post_rx(1024);
        drv.rx.kick();
        assert_eq!(drv.rx.wait_used(&drv.mem), (2, 92));
        assert_eq!(drv.read(c + VNET_HDR_LEN as u64, second.len()), second);
        assert_eq!(dev.control().stats().rx_packets, 2);
    }
}

/// Receive chains the device cannot write to (a device-readable buffer, an
/// empty device-writable one) go back to the driver unused, and the frame
/// goes to the good buffer after them, alone in it: with or without
/// mergeable buffers, whether the bad chains came before the frame or the
/// frame before any good buffer.
#[test]
fn rx_chains_without_writable_space_are_given_back() {
    for refused in [0, bit(VIRTIO_NET_F_MRG_RXBUF)] {
        let (_dev, _ctl, mut drv, peer) = running(false, refused);
        let scratch = drv.alloc(64);
        let readable = drv.rx.add(&drv.mem, &[(scratch, 64, false)]);
        let empty = drv.rx.add(&drv.mem, &[(scratch, 0, true)]);
        let good = drv.post_rx(2048);
        drv.rx.kick();
        let frame = eth(OUR_MAC, 200);
        peer.inject(&frame);
        assert_eq!(drv.rx.wait_used(&drv.mem), (u32::from(readable), 0));
        assert_eq!(drv.rx.wait_used(&drv.mem), (u32::from(empty), 0));
        let (head, len) = drv.rx.wait_used(&drv.mem);
        assert_eq!(
            (drv.rx_buf(head), len as usize),
            (good, VNET_HDR_LEN + frame.len())
        );
        let got = drv.read(good, len as usize);
        // num_buffers: 1.
        assert_eq!(got[VNET_HDR_LEN - 2..VNET_HDR_LEN], [1, 0]);
        assert_eq!(got[VNET_HDR_LEN..], frame);

        // A frame waiting with only a bad chain posted: the chain comes back
        // at once, the frame with the next good buffer.
        let frame = eth(OUR_MAC, 300);
        peer.inject(&frame);
        let bad = drv.rx.add(&drv.mem, &[(scratch, 64, false)]);
        drv.rx.kick();
        assert_eq!(drv.rx.wait_used(&drv.mem), (u32::from(bad), 0));
        assert!(drv.rx.stays_unused(&drv.mem));
        let good = drv.post_rx(2048);
        drv.rx.kick();
        let (head, len) = drv.rx.wait_used(&drv.mem);
        assert_eq!(
            (drv.rx_buf(head), len as usize),
            (good, VNET_HDR_LEN + frame.len())
        );
        assert_eq!(drv.read(good + VNET_HDR_LEN as u64, frame.len()), frame);
    }
}
