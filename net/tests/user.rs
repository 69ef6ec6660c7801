//! The user (libslirp) backend: DHCP, ARP for the host, host forwarding into the guest
//! (from options and at run time), the connection table and QEMU's messages.

mod common;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::frames::{
    arp_reply, arp_request, dhcp_discover, parse_arp, parse_dhcp_reply, parse_tcp_syn, GUEST_MAC,
};
use common::{recv_until, send};
use petrel_net::{NetBackend, UserBackend, UserOptions};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// libslirp's MAC address for its own addresses: 52:55 and the IPv4 address.
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const WAIT: Duration = Duration::from_secs(5);

fn user(set: impl FnOnce(&mut UserOptions)) -> UserBackend {
    let mut o = UserOptions {
        id: "u".into(),
        ..UserOptions::default()
    };
    set(&mut o);
    UserBackend::open(&o).unwrap()
}

/// A TCP port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends an ARP request for the host and returns the reply's sender MAC.
fn arp_for_host(u: &mut UserBackend, from: Ipv4Addr) -> [u8; 6] {
    send(u, &arp_request(GUEST_MAC, from, HOST_IP));
    recv_until(
        u,
        WAIT,
        |f| match parse_arp(f)? {
            (2, mac, ip, to) if ip == HOST_IP && to == from => Some(mac),
            _ => None,
        },
        |_, _| {},
    )
    .expect("no ARP reply for 10.0.2.2")
}

#[test]
fn user_dhcp_discover_gets_an_offer_for_10_0_2_15() {
    let mut u = user(|_| {});
    assert_eq!(u.kind(), "user");
    assert!(!u.vnet_hdr());
    assert_eq!(u.info().get(), "net=10.0.2.0,restrict=off");
    let xid = 0x1234_5678;
    send(&mut u, &dhcp_discover(GUEST_MAC, xid));
    let (kind, offered) =
        recv_until(&mut u, WAIT, |f| parse_dhcp_reply(f, xid), |_, _| {}).expect("no DHCP reply");
    assert_eq!(kind, 2, "DHCPOFFER");
    assert_eq!(offered, GUEST_IP);
}

#[test]
fn user_dhcp_follows_net_and_restrict() {
    let mut u = user(|o| {
        o.net = Some("192.168.7.0/24".into());
        o.restrict = true;
    });
    assert_eq!(u.info().get(), "net=192.168.7.0,restrict=on");
    let xid = 7;
    send(&mut u, &dhcp_discover(GUEST_MAC, xid));
    let (kind, offered) =
        recv_until(&mut u, WAIT, |f| parse_dhcp_reply(f, xid), |_, _| {}).expect("no DHCP reply");
    assert_eq!((kind, offered), (2, Ipv4Addr::new(192, 168, 7, 15)));
}

#[test]
fn user_answers_arp_for_the_host() {
    let mut u = user(|_| {});
    assert_eq!(arp_for_host(&mut u, GUEST_IP), SLIRP_MAC);
}

/// Waits for the SYN a forwarded connection sends into the guest, answering libslirp's
/// ARP requests for the guest on the way.
fn syn_towards_guest(u: &mut UserBackend) -> (Ipv4Addr, u16) {
    recv_until(u, WAIT, parse_tcp_syn, |u, f| {
        if let Some((1, mac, ip, target)) = parse_arp(f) {
            send(u, &arp_reply(GUEST_MAC, target, mac, ip));
        }
    })
    .expect("no SYN towards the guest")
}

#[test]
fn user_hostfwd_connection_reaches_the_guest_as_a_syn() {
    let port = free_port();
    let mut u = user(|o| o.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:22")]);
    arp_for_host(&mut u, GUEST_IP);
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("forwarded port listens");
    assert_eq!(syn_towards_guest(&mut u), (GUEST_IP, 22));
}

#[test]
fn user_hostfwd_added_and_removed_at_run_time() {
    let mut u = user(|_| {});
    let control = u.control();
    let port = free_port();
    let rule = format!("tcp:127.0.0.1:{port}-10.0.2.15:2222");
    control.hostfwd_add(&rule).unwrap();
    assert_eq!(
        control.hostfwd_add(&rule).unwrap_err().to_string(),
        format!("Could not set up host forwarding rule '{rule}'")
    );
    let table = control.connection_info().unwrap();
    assert!(table.contains("HOST_FORWARD"), "{table}");
    assert!(table.contains(&port.to_string()), "{table}");

    let _client = TcpStream::connect(("127.0.0.1", port)).expect("forwarded port listens");
    assert_eq!(syn_towards_guest(&mut u), (GUEST_IP, 2222));

    assert!(control
        .hostfwd_remove(&format!("tcp:127.0.0.1:{port}"))
        .unwrap());
    assert!(!control
        .hostfwd_remove(&format!("tcp:127.0.0.1:{port}"))
        .unwrap());
    assert_eq!(
        control.hostfwd_remove("nonsense").unwrap_err().to_string(),
        "invalid format"
    );
    assert_eq!(
        control.hostfwd_add("tcp::22x-:22").unwrap_err().to_string(),
        "Invalid host forwarding rule 'tcp::22x-:22' (Bad host port)"
    );
    let started = Instant::now();
    drop(u);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the thread stops promptly"
    );
    assert_eq!(
        control.connection_info().unwrap_err().to_string(),
        "user mode network stack not in use"
    );
}

#[test]
fn user_errors_are_qemus() {
    let err = |set: fn(&mut UserOptions)| {
        let mut o = UserOptions {
            id: "u".into(),
            ..UserOptions::default()
        };
        set(&mut o);
        UserBackend::open(&o).unwrap_err().to_string()
    };
    assert_eq!(
        err(|o| o.hostfwd = vec!["foo".into()]),
        "Invalid host forwarding rule 'foo' (No : separators)"
    );
    assert_eq!(
        err(|o| o.hostfwd = vec!["tcp:1.2.3.4:5555-:22".into()]),
        "Could not set up host forwarding rule 'tcp:1.2.3.4:5555-:22'"
    );
    assert_eq!(
        err(|o| o.host = Some("10.0.3.2".into())),
        "Host doesn't belong to network"
    );
    assert_eq!(
        err(|o| o.guestfwd = vec!["tcp:10.0.2.100:1234-cmd:cat".into()]),
        "guest forwarding rule 'tcp:10.0.2.100:1234-cmd:cat' refused: guestfwd= is not supported"
    );
}
