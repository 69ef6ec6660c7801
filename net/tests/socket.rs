//! The socket backend: stream pairs on 127.0.0.1 with frames up to QEMU's limit both ways,
//! a stream kept whole through partial writes and trickled reads, listening again after a
//! disconnect, UDP and multicast pairs, `fd=` sockets and QEMU's error messages.

mod common;

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

use common::{send_patiently, wait_readable, wait_tx_ready, BUF_LEN};
use petrel_net::socket::NET_BUFSIZE;
use petrel_net::{NetBackend, SendStatus, SocketBackend, SocketOptions};

/// A frame of `len` bytes whose contents tell `seq` and the position.
fn frame(len: usize, seq: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
    if len >= 4 {
        f[..4].copy_from_slice(&seq.to_be_bytes());
    }
    f
}

fn opts(set: impl FnOnce(&mut SocketOptions)) -> SocketOptions {
    let mut o = SocketOptions {
        id: "s".into(),
        ..SocketOptions::default()
    };
    set(&mut o);
    o
}

fn listen_any() -> SocketBackend {
    SocketBackend::open(&opts(|o| o.listen = Some("127.0.0.1:0".into()))).unwrap()
}

fn connect_to(listener: &SocketBackend) -> SocketBackend {
    let port = listener.listen_addr().unwrap().port();
    SocketBackend::open(&opts(|o| o.connect = Some(format!("127.0.0.1:{port}")))).unwrap()
}

/// Lets both backends do their own work (accepting, connecting, flushing) until
/// `done` holds, collecting the frames `b` receives. Panics after 10 s.
fn pump(
    a: &mut dyn NetBackend,
    b: &mut dyn NetBackend,
    mut done: impl FnMut(&dyn NetBackend, &dyn NetBackend, &[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = vec![0u8; BUF_LEN];
    while !done(a, b, &got) {
        assert!(
            Instant::now() < deadline,
            "timed out; got {} frames",
            got.len()
        );
        wait_readable(a.rx_fd(), Duration::from_millis(5));
        if let Some(len) = a.recv(&mut buf).unwrap() {
            panic!("unexpected frame of {len} bytes on the sending side");
        }
        while let Some(len) = b.recv(&mut buf).unwrap() {
            got.push(buf[..len].to_vec());
        }
    }
    got
}

/// A connected listen/connect pair: (listening side, connecting side).
fn stream_pair() -> (SocketBackend, SocketBackend) {
    let mut server = listen_any();
    // A handle taken now follows the connection.
    let info = server.info();
    assert_eq!(info.get(), "", "QEMU shows nothing until a peer connects");
    let mut client = connect_to(&server);
    pump(&mut client, &mut server, |_, _, _| !info.get().is_empty());
    (server, client)
}

fn send_all(from: &mut dyn NetBackend, frames: &[Vec<u8>]) {
    for f in frames {
        common::send(from, f);
    }
}

/// Sends `frames` from `from`, receiving on `to` while `from` refuses one (the kernel's
/// buffers are full), and checks they all arrive unchanged.
fn transfer(from: &mut dyn NetBackend, to: &mut dyn NetBackend, frames: &[Vec<u8>]) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; BUF_LEN];
    for f in frames {
        let deadline = Instant::now() + Duration::from_secs(10);
        while from.try_send(&[IoSlice::new(f)]).unwrap() == SendStatus::Busy {
            assert!(Instant::now() < deadline, "the sender never got room");
            while let Some(len) = to.recv(&mut buf).unwrap() {
                got.push(buf[..len].to_vec());
            }
            wait_tx_ready(from, Duration::from_millis(5));
        }
    }
    let before = got.len();
    got.extend(pump(from, to, |_, _, more| {
        before + more.len() >= frames.len()
    }));
    assert_eq!(got.len(), frames.len());
    for (g, f) in got.iter().zip(frames) {
        assert!(g == f, "frame of {} bytes arrived changed", f.len());
    }
}

const SIZES: [usize; 6] = [60, 64, 1514, 9014, 65535, NET_BUFSIZE];

#[test]
fn socket_stream_pair_carries_frames_of_every_size_both_ways() {
    let (mut server, mut client) = stream_pair();
    let port = server.listen_addr().unwrap().port();
    assert_eq!(
        client.info().get(),
        format!("socket: connect to 127.0.0.1:{port}")
    );
    assert!(
        server
            .info()
            .get()
            .starts_with("socket: connection from 127.0.0.1:"),
        "{}",
        server.info().get()
    );
    assert_eq!(server.kind(), "socket");
    assert!(!server.vnet_hdr());
    let frames: Vec<_> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(n, i as u32))
        .collect();
    transfer(&mut client, &mut server, &frames);
    transfer(&mut server, &mut client, &frames);
    // A frame split over several slices travels as one.
    let f = frame(1514, 77);
    send_patiently(
        &mut client,
        &[
            IoSlice::new(&f[..14]),
            IoSlice::new(&f[14..100]),
            IoSlice::new(&f[100..]),
        ],
    );
    let got = pump(&mut client, &mut server, |_, _, got| !got.is_empty());
    assert_eq!(got, vec![f]);
    // Longer than a QEMU peer accepts: dropped, and the stream goes on.
    let small = frame(100, 5);
    send_all(&mut client, &[frame(NET_BUFSIZE + 1, 4), small.clone()]);
    let got = pump(&mut client, &mut server, |_, _, got| !got.is_empty());
    assert_eq!(got, vec![small]);
}

#[test]
fn socket_stream_receive_truncates_to_the_buffer_and_says_so() {
    let (mut server, mut client) = stream_pair();
    let f = frame(1514, 1);
    send_all(&mut client, &[f.clone(), frame(60, 2)]);
    let mut small = [0u8; 100];
    let deadline = Instant::now() + Duration::from_secs(5);
    let len = loop {
        assert!(Instant::now() < deadline);
        wait_readable(server.rx_fd(), Duration::from_millis(10));
        if let Some(len) = server.recv(&mut small).unwrap() {
            break len;
        }
    };
    assert_eq!(
        (len, &small[..]),
        (1514, &f[..100]),
        "the start of the frame, and its whole length"
    );
    let next = pump(&mut client, &mut server, |_, _, got| !got.is_empty());
    assert_eq!(
        next,
        vec![frame(60, 2)],
        "the rest of the long frame was not left behind"
    );
}

#[test]
fn socket_listen_goes_back_to_listening_when_the_peer_leaves() {
    let (mut server, client) = stream_pair();
    let info = server.info();
    drop(client);
    // Frames sent while nobody is connected are dropped.
    let mut buf = vec![0u8; BUF_LEN];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !info.get().is_empty() {
        assert!(Instant::now() < deadline, "disconnect not noticed");
        wait_readable(server.rx_fd(), Duration::from_millis(10));
        assert_eq!(server.recv(&mut buf).unwrap(), None);
    }
    send_all(&mut server, &[frame(60, 0)]);
    let mut again = connect_to(&server);
    pump(&mut again, &mut server, |_, s, _| {
        !s.info().get().is_empty()
    });
    let frames = vec![frame(1514, 1), frame(60, 2)];
    transfer(&mut again, &mut server, &frames);
    transfer(&mut server, &mut again, &frames);
}

#[test]
fn socket_connect_refused_leaves_the_link_down() {
    // A port nobody listens on: QEMU reports no error; the connection just never comes.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut client =
        SocketBackend::open(&opts(|o| o.connect = Some(format!("127.0.0.1:{port}")))).unwrap();
    assert_eq!(
        client.info().get(),
        format!("socket: connect to 127.0.0.1:{port}")
    );
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.info().get().is_empty() {
        assert!(Instant::now() < deadline, "refusal not noticed");
        wait_readable(client.rx_fd(), Duration::from_millis(10));
        assert_eq!(client.recv(&mut buf).unwrap(), None);
    }
    assert_eq!(
        client.try_send(&[IoSlice::new(&frame(60, 0))]).unwrap(),
        SendStatus::Sent,
        "dropped without a connection"
    );
}

/// Parses a QEMU-framed byte stream into its frames; panics on a torn frame.
fn deframe(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 4, "torn length prefix");
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(bytes.len() >= 4 + len, "torn frame: {len} announced");
        frames.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    frames
}

#[test]
fn socket_stream_stays_whole_through_partial_writes() {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let mut client =
        SocketBackend::open(&opts(|o| o.connect = Some(format!("127.0.0.1:{port}")))).unwrap();
    let (mut conn, _) = peer.accept().unwrap();
    // Far more than the kernel's buffers hold: while the peer does not read, the socket
    // takes parts of frames, then nothing, and the backend refuses the next frame until
    // the part that waits has gone.
    let count = 400u32;
    let mut seq = 0;
    let mut refused = 0;
    while seq < count {
        if client
            .try_send(&[IoSlice::new(&frame(65535, seq))])
            .unwrap()
            == SendStatus::Busy
        {
            refused += 1;
            break;
        }
        seq += 1;
    }
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    });
    // The refused frame and the rest, each offered until the backend takes it.
    for seq in seq..count {
        refused += send_patiently(&mut client, &[IoSlice::new(&frame(65535, seq))]);
    }
    // The NIC's part: recv() when rx_fd wakes it, which sends what is still waiting.
    let mut buf = vec![0u8; BUF_LEN];
    while !reader.is_finished() {
        if wait_readable(client.rx_fd(), Duration::from_millis(20)) {
            assert_eq!(client.recv(&mut buf).unwrap(), None);
        }
    }
    let frames = deframe(&reader.join().unwrap());
    eprintln!(
        "{} of {count} frames arrived whole, {refused} refusals",
        frames.len()
    );
    assert!(frames.len() > 10, "only {} frames arrived", frames.len());
    assert!(
        refused > 0,
        "never refused: the test did not fill the socket"
    );
    assert_eq!(
        frames.len(),
        count as usize,
        "a refused frame is offered again, so none is lost"
    );
    let mut last = None;
    for f in &frames {
        let seq = u32::from_be_bytes(f[..4].try_into().unwrap());
        assert!(*f == frame(65535, seq), "frame {seq} arrived changed");
        assert!(last.is_none_or(|l| seq > l), "frame {seq} out of order");
        last = Some(seq);
    }
}

#[test]
fn socket_stream_reassembles_trickled_frames() {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let mut client =
        SocketBackend::open(&opts(|o| o.connect = Some(format!("127.0.0.1:{port}")))).unwrap();
    let (mut conn, _) = peer.accept().unwrap();
    conn.set_nodelay(true).unwrap();
    let frames: Vec<_> = [1514, 60, 65535, 1, 300]
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(n, i as u32))
        .collect();
    let mut bytes = Vec::new();
    for f in &frames {
        bytes.extend_from_slice(&(f.len() as u32).to_be_bytes());
        bytes.extend_from_slice(f);
    }
    let writer = std::thread::spawn(move || {
        // Odd-sized pieces that cut length prefixes and frames anywhere.
        for (i, piece) in bytes.chunks(997).enumerate() {
            if i < 4 {
                for b in piece.chunks(1) {
                    conn.write_all(b).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
            } else {
                conn.write_all(piece).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        conn
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; BUF_LEN];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < frames.len() {
        assert!(Instant::now() < deadline, "got {} frames", got.len());
        wait_readable(client.rx_fd(), Duration::from_millis(10));
        while let Some(len) = client.recv(&mut buf).unwrap() {
            got.push(buf[..len].to_vec());
        }
    }
    assert_eq!(got, frames);
    drop(writer.join().unwrap());
}

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn socket_udp_pair_exchanges_datagrams() {
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let udp = |local: u16, remote: u16| {
        SocketBackend::open(&opts(|o| {
            o.udp = Some(format!("127.0.0.1:{remote}"));
            o.localaddr = Some(format!("127.0.0.1:{local}"));
        }))
        .unwrap()
    };
    let mut a = udp(pa, pb);
    let mut b = udp(pb, pa);
    assert_eq!(a.info().get(), format!("socket: udp=127.0.0.1:{pb}"));
    let frames: Vec<_> = [60, 1514, 9014, 65000]
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(n, i as u32))
        .collect();
    for f in &frames {
        transfer(&mut a, &mut b, std::slice::from_ref(f));
        transfer(&mut b, &mut a, std::slice::from_ref(f));
    }
}

#[test]
fn socket_udp_receive_truncates_to_the_buffer_and_says_so() {
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let mut a = SocketBackend::open(&opts(|o| {
        o.udp = Some(format!("127.0.0.1:{pb}"));
        o.localaddr = Some(format!("127.0.0.1:{pa}"));
    }))
    .unwrap();
    let peer = UdpSocket::bind(("127.0.0.1", pb)).unwrap();
    let f = frame(9014, 3);
    peer.send_to(&f, ("127.0.0.1", pa)).unwrap();
    peer.send_to(&frame(60, 4), ("127.0.0.1", pa)).unwrap();
    let mut small = [0u8; 100];
    assert!(wait_readable(a.rx_fd(), Duration::from_secs(5)));
    assert_eq!(
        a.recv(&mut small).unwrap(),
        Some(9014),
        "the datagram's whole length"
    );
    assert_eq!(&small[..], &f[..100]);
    assert_eq!(
        common::recv_one(&mut a, Duration::from_secs(5)),
        Some(frame(60, 4)),
        "the next datagram is whole"
    );
}

#[test]
fn socket_mcast_pair_sees_each_others_frames() {
    let port = free_udp_port();
    let group = format!(
        "239.255.{}.{}:{port}",
        std::process::id() % 250,
        1 + port % 250
    );
    // The loopback interface, as the QMP tests' mcast case has it: the group is joined
    // there, so no multicast route is needed.
    let open = || {
        SocketBackend::open(&opts(|o| {
            o.mcast = Some(group.clone());
            o.localaddr = Some("127.0.0.1".into());
        }))
    };
    let mut a = open().unwrap();
    let mut b = open().unwrap();
    let (ip, _) = group.split_once(':').unwrap();
    assert_eq!(a.info().get(), format!("socket: mcast={ip}:{port}"));
    let f = frame(1514, 9);
    common::send(&mut a, &f);
    // With loopback on, every member sees the frame, the sender included.
    for side in [&mut b, &mut a] {
        let got = common::recv_one(side, Duration::from_secs(5)).expect("multicast frame");
        assert_eq!(got, f);
    }
}

#[test]
fn socket_fd_takes_stream_and_datagram_sockets() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = ours.into_raw_fd();
    let mut stream = SocketBackend::open(&opts(|o| o.fd = Some(fd))).unwrap();
    assert_eq!(stream.info().get(), format!("socket: fd={fd}"));
    let mut theirs = theirs;
    let f = frame(1514, 3);
    theirs.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
    theirs.write_all(&f).unwrap();
    assert_eq!(
        common::recv_one(&mut stream, Duration::from_secs(5)),
        Some(f.clone())
    );
    common::send(&mut stream, &f);
    let mut back = vec![0u8; 4 + f.len()];
    theirs.read_exact(&mut back).unwrap();
    assert_eq!(deframe(&back), vec![f.clone()]);

    let (ours, theirs) = UnixDatagram::pair().unwrap();
    let fd = ours.into_raw_fd();
    let mut dgram = SocketBackend::open(&opts(|o| o.fd = Some(fd))).unwrap();
    assert_eq!(dgram.info().get(), format!("socket: fd={fd} unix"));
    theirs.send(&f).unwrap();
    assert_eq!(
        common::recv_one(&mut dgram, Duration::from_secs(5)),
        Some(f.clone())
    );
    common::send(&mut dgram, &f);
    let mut back = vec![0u8; 2000];
    let n = theirs.recv(&mut back).unwrap();
    assert_eq!(&back[..n], &f[..]);
}

#[test]
fn socket_errors_are_qemus() {
    let err = |o: SocketOptions| SocketBackend::open(&o).unwrap_err().to_string();
    assert_eq!(
        err(opts(|_| {})),
        "exactly one of listen=, connect=, mcast= or udp= is required"
    );
    assert_eq!(
        err(opts(|o| {
            o.listen = Some(":1".into());
            o.connect = Some("127.0.0.1:1".into());
        })),
        "exactly one of listen=, connect=, mcast= or udp= is required"
    );
    assert_eq!(
        err(opts(|o| {
            o.listen = Some(":1".into());
            o.localaddr = Some("127.0.0.1:5".into());
        })),
        "localaddr= is only valid with mcast= or udp="
    );
    assert_eq!(
        err(opts(|o| o.udp = Some("127.0.0.1:5555".into()))),
        "localaddr= is mandatory with udp="
    );
    assert_eq!(
        err(opts(|o| o.listen = Some("foo".into()))),
        "host address 'foo' doesn't contain ':' separating host from port"
    );
    assert_eq!(
        err(opts(|o| o.listen = Some("1.2.3.4:5555".into()))),
        "can't bind ip=1.2.3.4 to socket: Cannot assign requested address"
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert_eq!(
        err(opts(|o| o.listen = Some(format!("127.0.0.1:{port}")))),
        "can't bind ip=127.0.0.1 to socket: Address already in use"
    );
    assert_eq!(
        err(opts(|o| o.mcast = Some("127.0.0.1:5555".into()))),
        "specified mcastaddr 127.0.0.1 (0x7f000001) does not contain a multicast address"
    );
    assert_eq!(
        err(opts(|o| {
            o.mcast = Some("230.0.0.1:5555".into());
            o.localaddr = Some("foo".into());
        })),
        "localaddr 'foo' is not a valid IPv4 address"
    );
    assert_eq!(
        err(opts(|o| {
            o.udp = Some("127.0.0.1:5555".into());
            o.localaddr = Some("foo".into());
        })),
        "host address 'foo' doesn't contain ':' separating host from port"
    );
    // Far above any open descriptor (tests run in parallel and reuse numbers).
    let closed = 1 << 30;
    assert_eq!(
        err(opts(|o| o.fd = Some(closed))),
        format!("s: Can't use file descriptor {closed}: Bad file descriptor")
    );
    let file = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
    assert_eq!(
        err(opts(|o| o.fd = Some(file))),
        "can't get socket option SO_TYPE"
    );
}
