//! Building and reading the few frames the tests exchange: ARP, IPv4/UDP (DHCP) and the
//! TCP SYN of a forwarded connection.

use std::net::Ipv4Addr;

/// The broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// The MAC address the tests' "guest" uses (QEMU's default NIC address).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;

/// An Ethernet header followed by `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The EtherType of an Ethernet frame.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?))
}

/// A broadcast ARP request "who has `target`, tell `sender_ip`".
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        BROADCAST,
        sender_mac,
        ETH_P_ARP,
        &arp_body(1, sender_mac, sender_ip, [0; 6], target),
    )
}

/// An ARP reply "`sender_ip` is at `sender_mac`" sent to `target_mac`/`target_ip`.
pub fn arp_reply(
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    ethernet(
        target_mac,
        sender_mac,
        ETH_P_ARP,
        &arp_body(2, sender_mac, sender_ip, target_mac, target_ip),
    )
}

fn arp_body(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0x00, 6, 4];
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(&sha);
    b.extend_from_slice(&spa.octets());
    b.extend_from_slice(&tha);
    b.extend_from_slice(&tpa.octets());
    b
}

/// An ARP packet's operation, sender MAC, sender IP and target IP.
pub fn parse_arp(frame: &[u8]) -> Option<(u16, [u8; 6], Ipv4Addr, Ipv4Addr)> {
    if ethertype(frame)? != ETH_P_ARP || frame.len() < 42 {
        return None;
    }
    let a = &frame[14..];
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha: [u8; 6] = a[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    Some((op, sha, spa, tpa))
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, checksum filled in) carrying `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram without checksum.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A DHCPDISCOVER from `mac` with transaction id `xid`, broadcast from 0.0.0.0:68.
pub fn dhcp_discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[28..34].copy_from_slice(&mac);
    bootp.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    bootp.extend_from_slice(&[53, 1, 1]); // DHCP message type: DISCOVER
    bootp.push(255);
    let dgram = udp(68, 67, &bootp);
    let packet = ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 17, &dgram);
    ethernet(BROADCAST, mac, ETH_P_IP, &packet)
}

/// The IPv4 header fields of a frame: protocol, source, destination and the payload.
pub fn parse_ipv4(frame: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, &[u8])> {
    if ethertype(frame)? != ETH_P_IP {
        return None;
    }
    let p = frame.get(14..)?;
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some((p[9], src, dst, p.get(ihl..total)?))
}

/// For a DHCP reply to `xid`: its message type and the address offered (`yiaddr`).
pub fn parse_dhcp_reply(frame: &[u8], xid: u32) -> Option<(u8, Ipv4Addr)> {
    let (proto, _, _, payload) = parse_ipv4(frame)?;
    if proto != 17 || payload.get(2..4)? != 68u16.to_be_bytes() {
        return None;
    }
    let bootp = payload.get(8..)?;
    if bootp.first()? != &2 || bootp.get(4..8)? != xid.to_be_bytes() {
        return None;
    }
    let yiaddr = Ipv4Addr::new(bootp[16], bootp[17], bootp[18], bootp[19]);
    let mut opts = bootp.get(240..)?;
    while let [code, rest @ ..] = opts {
        match code {
            0 => opts = rest,
            255 => break,
            _ => {
                let len = usize::from(*rest.first()?);
                let value = rest.get(1..1 + len)?;
                if *code == 53 {
                    return Some((*value.first()?, yiaddr));
                }
                opts = &rest[1 + len..];
            }
        }
    }
    None
}

/// For a TCP segment: destination address, destination port and whether only SYN (of
/// SYN/ACK) is set.
pub fn parse_tcp_syn(frame: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let (proto, _, dst, seg) = parse_ipv4(frame)?;
    if proto != 6 || seg.len() < 20 {
        return None;
    }
    let port = u16::from_be_bytes([seg[2], seg[3]]);
    let flags = seg[13];
    (flags & 0x12 == 0x02).then_some((dst, port))
}
