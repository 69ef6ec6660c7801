//! Backpressure: backends that cannot take a frame now answer `Busy` from `try_send`, keep
//! nothing of it, and signal `tx_ready` once they can; a sender that waits for that loses
//! nothing. The user backend under a flood faster than libslirp drains it, a datagram
//! socket whose peer does not read, and a stream socket whose peer does not read.

mod common;

use std::io::{IoSlice, Read};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use common::frames::{ethernet, ipv4, udp, GUEST_MAC};
use common::{wait_readable, wait_tx_ready, BUF_LEN};
use petrel_net::{
    NetBackend, SendStatus, SocketBackend, SocketOptions, TxReady, UserBackend, UserOptions,
};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const WAIT: Duration = Duration::from_secs(10);

/// Offers `frame` until the backend takes it; returns how many times it was refused.
fn send_patiently(backend: &mut dyn NetBackend, frame: &[u8]) -> usize {
    common::send_patiently(backend, &[IoSlice::new(frame)])
}

/// A frame of `len` bytes starting with `seq`.
fn numbered(len: usize, seq: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13)).collect();
    f[..4].copy_from_slice(&seq.to_be_bytes());
    f
}

/// A UDP socket on 127.0.0.1 with a receive buffer for a whole flood.
fn roomy_udp_receiver() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bytes: libc::c_int = 64 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and an int option value that lives for the call.
        let ret = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &bytes as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped at rmem_max.
        if ret == 0 {
            break;
        }
    }
    sock
}

#[test]
fn user_flood_reaches_the_host_whole_and_in_order() {
    const FRAMES: u32 = 20_000;
    let receiver = roomy_udp_receiver();
    let port = receiver.local_addr().unwrap().port();
    receiver.set_read_timeout(Some(WAIT)).unwrap();
    let counter = thread::spawn(move || {
        let mut next = 0u32;
        let mut buf = [0u8; 2048];
        while next < FRAMES {
            let Ok(n) = receiver.recv(&mut buf) else {
                break;
            };
            assert_eq!(n, 64, "datagram of {n} bytes");
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert_eq!(seq, next, "datagram out of order or missing");
            next += 1;
        }
        next
    });

    let mut u = UserBackend::open(&UserOptions {
        id: "flood".into(),
        ..UserOptions::default()
    })
    .unwrap();
    let mut refused = 0;
    let started = Instant::now();
    for seq in 0..FRAMES {
        let payload = numbered(64, seq);
        let frame = ethernet(
            SLIRP_MAC,
            GUEST_MAC,
            0x0800,
            &ipv4(GUEST_IP, HOST_IP, 17, &udp(40000, port, &payload)),
        );
        refused += send_patiently(&mut u, &frame);
    }
    let got = counter.join().unwrap();
    assert_eq!(got, FRAMES, "datagrams that reached the host");
    assert!(
        refused > 0,
        "{FRAMES} frames in {:?} never filled the queue: the test proves nothing",
        started.elapsed()
    );
    // Nothing came back for the guest but what libslirp says on its own (ARP).
    let mut buf = vec![0u8; BUF_LEN];
    while let Some(len) = u.recv(&mut buf).unwrap() {
        assert_eq!(&buf[12..14], &[0x08, 0x06], "frame of {len} bytes");
    }
}

#[test]
fn datagram_socket_whose_peer_does_not_read_refuses_then_resumes() {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    let fd = ours.into_raw_fd();
    let mut s = SocketBackend::open(&SocketOptions {
        id: "d".into(),
        fd: Some(fd),
        ..SocketOptions::default()
    })
    .unwrap();
    // A unix datagram socket holds a few datagrams for a reader that does not read.
    let mut sent = 0u32;
    while s.try_send(&[IoSlice::new(&numbered(100, sent))]).unwrap() == SendStatus::Sent {
        sent += 1;
        assert!(sent < 100_000, "the socket never filled");
    }
    assert_eq!(s.tx_ready(), Some(TxReady::Writable(fd)));
    assert!(!wait_tx_ready(&s, Duration::from_millis(20)), "still full");
    // The peer reads in its own time; every frame, the refused one too, arrives in order.
    let total = sent + 50;
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 256];
        peer.set_read_timeout(Some(WAIT)).unwrap();
        for seq in 0..total {
            let n = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], numbered(100, seq), "datagram {seq}");
            thread::sleep(Duration::from_micros(200));
        }
    });
    let mut refused = 0;
    for seq in sent..total {
        refused += send_patiently(&mut s, &numbered(100, seq));
    }
    reader.join().unwrap();
    assert!(refused > 0, "the slow reader made the sender wait");
}

#[test]
fn stream_socket_whose_peer_does_not_read_refuses_then_resumes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = SocketBackend::open(&SocketOptions {
        id: "c".into(),
        connect: Some(format!("127.0.0.1:{port}")),
        ..SocketOptions::default()
    })
    .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    // Frames go until the kernel's buffers are full and part of one waits.
    const LEN: usize = 60_000;
    let mut sent = 0u32;
    let deadline = Instant::now() + WAIT;
    while s.try_send(&[IoSlice::new(&numbered(LEN, sent))]).unwrap() == SendStatus::Sent {
        sent += 1;
        assert!(Instant::now() < deadline, "the connection never filled");
    }
    assert!(sent > 0);
    assert!(
        matches!(s.tx_ready(), Some(TxReady::Readable(_))),
        "waits for the connection"
    );
    // The peer reads everything; each frame arrives whole, the refused one too.
    let total = sent + 20;
    let reader = thread::spawn(move || {
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let mut frame = vec![0u8; LEN];
        for seq in 0..total {
            let mut len = [0u8; 4];
            peer.read_exact(&mut len).unwrap();
            assert_eq!(u32::from_be_bytes(len) as usize, LEN);
            peer.read_exact(&mut frame).unwrap();
            assert!(frame == numbered(LEN, seq), "frame {seq} arrived changed");
        }
    });
    for seq in sent..total {
        send_patiently(&mut s, &numbered(LEN, seq));
    }
    // The last frame's tail may wait in the backend; it goes as the backend is serviced.
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; BUF_LEN];
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "the last frames never left");
        wait_readable(s.rx_fd(), Duration::from_millis(5));
        assert_eq!(s.recv(&mut buf).unwrap(), None);
    }
    reader.join().unwrap();
}
