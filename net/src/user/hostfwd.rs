//! Host forwarding rules (`hostfwd=`, HMP `hostfwd_add`/`hostfwd_remove`), read as QEMU's
//! `slirp_hostfwd` reads them: `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`.

use std::net::Ipv4Addr;

use crate::socket::inet_aton;

/// One forwarding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    /// UDP rather than TCP.
    pub udp: bool,
    /// The host address to listen on (unspecified: all).
    pub host_addr: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The guest address (unspecified: the first DHCP address).
    pub guest_addr: Ipv4Addr,
    /// The guest port.
    pub guest_port: u16,
}

/// The part of a `hostfwd_remove` argument that names a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwdKey {
    /// UDP rather than TCP.
    pub udp: bool,
    /// The host address.
    pub host_addr: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
}

/// QEMU's `get_str_sep`: the text before `sep`, and the rest after it.
fn split(s: &str, sep: char) -> Option<(&str, &str)> {
    s.split_once(sep)
}

/// `tcp`, `udp` or empty (TCP).
fn protocol(s: &str) -> Option<bool> {
    match s {
        "" | "tcp" => Some(false),
        "udp" => Some(true),
        _ => None,
    }
}

/// An address field: empty means unspecified.
fn address(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() {
        Some(Ipv4Addr::UNSPECIFIED)
    } else {
        inet_aton(s)
    }
}

/// `qemu_strtoi(s, NULL, 0)`: an `int` in decimal, octal (`0` prefix) or hexadecimal
/// (`0x`), with nothing after it.
fn number(s: &str) -> Option<i64> {
    let (neg, digits) = sign(s)?;
    let (radix, digits) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    // from_str_radix would take a second sign.
    if !digits.starts_with(|c: char| c.is_digit(radix)) {
        return None;
    }
    int(neg, i64::from_str_radix(digits, radix).ok()?)
}

/// `qemu_strtoi(s, NULL, 10)`: a decimal `int` (leading zeros are decimal too), with
/// nothing after it.
fn decimal(s: &str) -> Option<i64> {
    let (neg, digits) = sign(s)?;
    int(neg, digits.parse::<i64>().ok()?)
}

/// `strtol`'s leading white space and sign: whether it is negative, and the digits, which
/// must begin with a digit.
fn sign(s: &str) -> Option<(bool, &str)> {
    let s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((neg, digits))
}

/// `value` with its sign, if it is an `int`.
fn int(neg: bool, value: i64) -> Option<i64> {
    let value = if neg { -value } else { value };
    i32::try_from(value).ok().map(i64::from)
}

/// Parses a `hostfwd=` rule; the error is QEMU's reason in parentheses.
pub fn parse(rule: &str) -> Result<HostFwd, &'static str> {
    let (proto, rest) = split(rule, ':').ok_or("No : separators")?;
    let udp = protocol(proto).ok_or("Bad protocol name")?;
    let (host, rest) = split(rest, ':').ok_or("Missing : separator")?;
    let host_addr = address(host).ok_or("Bad host address")?;
    let (port, rest) = split(rest, '-').ok_or("Bad host port separator")?;
    let host_port = number(port)
        .filter(|p| (0..=65535).contains(p))
        .ok_or("Bad host port")?;
    let (guest, port) = split(rest, ':').ok_or("Missing guest address")?;
    let guest_addr = address(guest).ok_or("Bad guest address")?;
    let guest_port = number(port)
        .filter(|p| (1..=65535).contains(p))
        .ok_or("Bad guest port")?;
    Ok(HostFwd {
        udp,
        host_addr,
        host_port: host_port as u16,
        guest_addr,
        guest_port: guest_port as u16,
    })
}

/// Parses a `hostfwd_remove` argument, `[tcp|udp]:[hostaddr]:hostport`; `None` is
/// QEMU's "invalid format".
pub fn parse_key(rule: &str) -> Option<HostFwdKey> {
    let (proto, rest) = split(rule, ':')?;
    let udp = protocol(proto)?;
    let (host, port) = split(rest, ':')?;
    let host_addr = address(host)?;
    // QEMU reads the port in decimal and passes any int through htons(); keep the low 16
    // bits as it does.
    let host_port = decimal(port)? as u16;
    Some(HostFwdKey {
        udp,
        host_addr,
        host_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_as_qemu_reads_them() {
        assert_eq!(
            parse("tcp::2222-:22").unwrap(),
            HostFwd {
                udp: false,
                host_addr: Ipv4Addr::UNSPECIFIED,
                host_port: 2222,
                guest_addr: Ipv4Addr::UNSPECIFIED,
                guest_port: 22,
            }
        );
        let r = parse("udp:127.0.0.1:0x10-10.0.2.9:53").unwrap();
        assert!(r.udp);
        assert_eq!(r.host_port, 16);
        assert_eq!(r.guest_addr, Ipv4Addr::new(10, 0, 2, 9));
        assert_eq!(parse(":127.0.0.1:5555-:80").unwrap().host_port, 5555);
    }

    #[test]
    fn reasons_as_qemu_gives_them() {
        assert_eq!(parse("foo"), Err("No : separators"));
        assert_eq!(parse("sctp::5555-:22"), Err("Bad protocol name"));
        assert_eq!(parse("tcp:5555"), Err("Missing : separator"));
        assert_eq!(parse("tcp:x:5555-:22"), Err("Bad host address"));
        assert_eq!(parse("tcp::5555"), Err("Bad host port separator"));
        assert_eq!(parse("tcp::22x-:22"), Err("Bad host port"));
        assert_eq!(parse("tcp::70000-:22"), Err("Bad host port"));
        assert_eq!(parse("tcp::5555-22"), Err("Missing guest address"));
        assert_eq!(parse("tcp::5555-y:22"), Err("Bad guest address"));
        assert_eq!(parse("tcp::5555-:0"), Err("Bad guest port"));
        assert_eq!(parse("tcp::0x+5-:22"), Err("Bad host port"));
        assert_eq!(parse("tcp::0+5-:22"), Err("Bad host port"));
    }

    #[test]
    fn remove_keys() {
        assert_eq!(
            parse_key("tcp::2222"),
            Some(HostFwdKey {
                udp: false,
                host_addr: Ipv4Addr::UNSPECIFIED,
                host_port: 2222
            })
        );
        assert_eq!(parse_key("udp:127.0.0.1:53").map(|k| k.udp), Some(true));
        assert_eq!(parse_key("tcp:2222"), None);
        assert_eq!(parse_key("icmp::1"), None);
        // Decimal only, as QEMU 7.2's hostfwd_remove reads it; -1 is port 65535.
        assert_eq!(parse_key("tcp::0x15b3"), None);
        assert_eq!(parse_key("tcp::5555x"), None);
        assert_eq!(parse_key("tcp::"), None);
        assert_eq!(parse_key("tcp::010").map(|k| k.host_port), Some(10));
        assert_eq!(parse_key("tcp::-1").map(|k| k.host_port), Some(65535));
        assert_eq!(parse_key("tcp:: 5").map(|k| k.host_port), Some(5));
    }
}
