//! The addresses of a user netdev, worked out and checked as QEMU's `net_slirp_init` does:
//! `net=` sets the network and moves the host (.2), DNS (.3) and first DHCP address (.15)
//! into it, then `host=`, `dns=` and `dhcpstart=` override them.

use std::ffi::CString;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{UserError, UserOptions};
use crate::socket::inet_aton;

/// What the stack is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `restrict=on`: the guest reaches nothing outside but forwarded ports.
    pub restricted: bool,
    /// IPv4 on.
    pub ipv4: bool,
    /// The network's address (host bits clear).
    pub net: Ipv4Addr,
    /// Its mask.
    pub mask: Ipv4Addr,
    /// The gateway/host address.
    pub host: Ipv4Addr,
    /// The first address DHCP hands out.
    pub dhcp: Ipv4Addr,
    /// The DNS forwarder's address.
    pub dns: Ipv4Addr,
    /// IPv6 on.
    pub ipv6: bool,
    /// The IPv6 prefix (QEMU's default `fec0::/64`).
    pub prefix6: Ipv6Addr,
    /// Its length.
    pub prefix6_len: u8,
    /// The host's IPv6 address (prefix::2).
    pub host6: Ipv6Addr,
    /// The DNS forwarder's IPv6 address (prefix::3).
    pub dns6: Ipv6Addr,
    /// `hostname=`, given to the guest by DHCP.
    pub hostname: Option<CString>,
}

impl Settings {
    /// Checks `opts` and works out the addresses.
    pub fn from_options(opts: &UserOptions) -> Result<Self, UserError> {
        let (ipv4, ipv6) = ip_versions(opts.ipv4, opts.ipv6);
        if !ipv4 && (opts.net.is_some() || opts.host.is_some() || opts.dns.is_some()) {
            return Err(UserError::Ipv4Disabled);
        }
        if !ipv4 && !ipv6 {
            return Err(UserError::BothDisabled);
        }
        let (mut net, mut mask) = (Ipv4Addr::new(10, 0, 2, 0), Ipv4Addr::new(255, 255, 255, 0));
        if let Some(vnet) = &opts.net {
            (net, mask) = parse_network(vnet)?;
        }
        let in_net = |low: u32| Ipv4Addr::from(u32::from(net) | (low & !u32::from(mask)));
        let mut host = in_net(0x0202);
        let mut dhcp = in_net(0x020f);
        let mut dns = in_net(0x0203);
        let belongs = |a: Ipv4Addr| u32::from(a) & u32::from(mask) == u32::from(net);

        if let Some(h) = &opts.host {
            host = inet_aton(h).ok_or(UserError::Parse("host"))?;
        }
        if !belongs(host) {
            return Err(UserError::HostOutside);
        }
        if let Some(d) = &opts.dns {
            dns = inet_aton(d).ok_or(UserError::Parse("DNS"))?;
        }
        if opts.restrict && !belongs(dns) {
            return Err(UserError::DnsOutside);
        }
        if dns == host {
            return Err(UserError::DnsIsHost);
        }
        if let Some(d) = &opts.dhcpstart {
            dhcp = inet_aton(d).ok_or(UserError::Parse("DHCP start address"))?;
        }
        if !belongs(dhcp) {
            return Err(UserError::DhcpOutside);
        }
        if dhcp == host || dhcp == dns {
            return Err(UserError::DhcpClash);
        }
        let hostname = match &opts.hostname {
            Some(h) if h.len() > 255 => return Err(UserError::HostnameTooLong),
            Some(h) => Some(CString::new(h.as_str()).map_err(|_| UserError::HostnameNul)?),
            None => None,
        };
        let prefix6 = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0);
        let with_low = |low: u16| {
            let mut seg = prefix6.segments();
            seg[7] |= low;
            Ipv6Addr::from(seg)
        };
        Ok(Settings {
            restricted: opts.restrict,
            ipv4,
            net,
            mask,
            host,
            dhcp,
            dns,
            ipv6,
            prefix6,
            prefix6_len: 64,
            host6: with_low(2),
            dns6: with_low(3),
            hostname,
        })
    }

    /// QEMU's `info network` text.
    pub fn info(&self) -> String {
        format!(
            "net={},restrict={}",
            self.net,
            if self.restricted { "on" } else { "off" }
        )
    }
}

/// Which IP versions are on: both by default; naming only one turns the other off.
fn ip_versions(ipv4: Option<bool>, ipv6: Option<bool>) -> (bool, bool) {
    let v4 = !(ipv6 == Some(true) && ipv4.is_none() || ipv4 == Some(false));
    let v6 = !(ipv4 == Some(true) && ipv6.is_none() || ipv6 == Some(false));
    (v4, v6)
}

/// `net=addr[/mask]`, the mask as a length or a dotted quad; without one, the classful
/// mask of the address (as QEMU guesses it).
fn parse_network(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), UserError> {
    let (net, mask) = match s.split_once('/') {
        None => {
            let net = inet_aton(s).ok_or(UserError::Netmask)?;
            (net, classful_mask(net))
        }
        Some((addr, mask)) => {
            let net = inet_aton(addr).ok_or(UserError::Netmask)?;
            let mask = match mask.parse::<i64>() {
                Ok(bits) if !(4..=32).contains(&bits) => return Err(UserError::NetmaskRange),
                Ok(bits) => Ipv4Addr::from(u32::MAX << (32 - bits)),
                Err(_) if mask.is_empty() => return Err(UserError::NetmaskRange),
                Err(_) => inet_aton(mask).ok_or(UserError::NetmaskTrailing)?,
            };
            (net, mask)
        }
    };
    Ok((Ipv4Addr::from(u32::from(net) & u32::from(mask)), mask))
}

/// The mask QEMU guesses for `net=` without one, first match wins: (bits to look at,
/// their value, mask).
const GUESSED_MASKS: [(u32, u32, u32); 6] = [
    (0x8000_0000, 0x0000_0000, 0xff00_0000), // class A
    (0xfff0_0000, 0xac10_0000, 0xfff0_0000), // private 172.16.0.0/12
    (0xc000_0000, 0x8000_0000, 0xffff_0000), // class B
    (0xffff_0000, 0xc0a8_0000, 0xffff_0000), // private 192.168.0.0/16
    (0xffff_0000, 0xc612_0000, 0xfffe_0000), // tests 198.18.0.0/15
    (0xe000_0000, 0xe000_0000, 0xffff_ff00), // class D and E
];

fn classful_mask(addr: Ipv4Addr) -> Ipv4Addr {
    let a = u32::from(addr);
    let mask = GUESSED_MASKS
        .iter()
        .find(|(bits, value, _)| a & bits == *value)
        .map_or(0xffff_fff0, |(_, _, mask)| *mask);
    Ipv4Addr::from(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(set: impl FnOnce(&mut UserOptions)) -> Result<Settings, String> {
        let mut o = UserOptions::default();
        set(&mut o);
        Settings::from_options(&o).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_qemus() {
        let s = settings(|_| {}).unwrap();
        assert_eq!(s.net, Ipv4Addr::new(10, 0, 2, 0));
        assert_eq!(s.mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.host, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(s.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(s.dhcp, Ipv4Addr::new(10, 0, 2, 15));
        assert!(s.ipv4 && s.ipv6);
        assert_eq!(s.host6, "fec0::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(s.info(), "net=10.0.2.0,restrict=off");
    }

    #[test]
    fn net_moves_the_addresses() {
        let s = settings(|o| o.net = Some("192.168.7.0/24".into())).unwrap();
        assert_eq!(s.host, Ipv4Addr::new(192, 168, 7, 2));
        assert_eq!(s.dhcp, Ipv4Addr::new(192, 168, 7, 15));
        let s = settings(|o| o.net = Some("10.0.2.5".into())).unwrap();
        assert_eq!(s.mask, Ipv4Addr::new(255, 0, 0, 0), "class A");
        assert_eq!(s.host, Ipv4Addr::new(10, 0, 2, 2));
        let s = settings(|o| o.net = Some("172.16.9.1/255.255.0.0".into())).unwrap();
        assert_eq!(s.net, Ipv4Addr::new(172, 16, 0, 0));
        assert_eq!(s.info(), "net=172.16.0.0,restrict=off");
    }

    #[test]
    fn qemu_messages() {
        let err = |set: fn(&mut UserOptions)| settings(set).unwrap_err();
        assert_eq!(
            err(|o| o.net = Some("10.0.2.0/33".into())),
            "Invalid netmask provided (must be in range 4-32)"
        );
        assert_eq!(
            err(|o| o.net = Some("foo".into())),
            "Failed to parse netmask"
        );
        assert_eq!(
            err(|o| o.net = Some("10.0.2.0/255.x".into())),
            "Failed to parse netmask (trailing chars)"
        );
        assert_eq!(
            err(|o| o.host = Some("10.0.3.2".into())),
            "Host doesn't belong to network"
        );
        assert_eq!(err(|o| o.host = Some("x".into())), "Failed to parse host");
        assert_eq!(
            err(|o| o.dhcpstart = Some("10.0.3.15".into())),
            "DHCP doesn't belong to network"
        );
        assert_eq!(
            err(|o| o.dhcpstart = Some("10.0.2.2".into())),
            "DHCP must be different from host and DNS"
        );
        assert_eq!(
            err(|o| o.dns = Some("10.0.2.2".into())),
            "DNS must be different from host"
        );
        assert!(settings(|o| o.dns = Some("10.0.3.3".into())).is_ok());
        assert_eq!(
            err(|o| {
                o.dns = Some("10.0.3.3".into());
                o.restrict = true;
            }),
            "DNS doesn't belong to network"
        );
        assert_eq!(
            err(|o| {
                o.ipv4 = Some(false);
                o.net = Some("10.0.2.0/24".into());
            }),
            "IPv4 disabled but netmask/host/dns provided"
        );
        assert_eq!(
            err(|o| {
                o.ipv4 = Some(false);
                o.ipv6 = Some(false);
            }),
            "IPv4 and IPv6 disabled"
        );
        assert_eq!(
            err(|o| o.hostname = Some("a".repeat(256))),
            "'vhostname' parameter cannot exceed 255 bytes"
        );
    }

    #[test]
    fn naming_one_ip_version_turns_the_other_off() {
        assert_eq!(ip_versions(None, None), (true, true));
        assert_eq!(ip_versions(Some(true), None), (true, false));
        assert_eq!(ip_versions(None, Some(true)), (false, true));
        assert_eq!(ip_versions(None, Some(false)), (true, false));
        assert_eq!(ip_versions(Some(true), Some(true)), (true, true));
    }
}
