//! The addresses of `-netdev socket` options, read as QEMU's `parse_host_port` reads them:
//! `host:port` with an IPv4 host in `inet_aton` form or a name to resolve, an empty host
//! meaning any address, and a port in `strtol` form.

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};

use super::SocketError;

/// The C library's address parser, which `libc` does not declare.
mod c {
    extern "C" {
        /// `int inet_aton(const char *cp, struct in_addr *inp)`.
        pub fn inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
    }
}

/// Parses `host:port`.
pub fn parse_host_port(s: &str) -> Result<SocketAddrV4, SocketError> {
    let Some((host, port)) = s.split_once(':') else {
        return Err(SocketError::NoPortSeparator(s.to_owned()));
    };
    let ip = if host.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else if host.starts_with(|c: char| c.is_ascii_digit()) {
        inet_aton(host).ok_or_else(|| SocketError::BadHost(host.to_owned()))?
    } else {
        resolve(host).ok_or_else(|| SocketError::Resolve(host.to_owned()))?
    };
    let port = strtol(port).ok_or_else(|| SocketError::BadPort(port.to_owned()))?;
    // QEMU stores the number with htons(), keeping its low 16 bits.
    Ok(SocketAddrV4::new(ip, port as u16))
}

/// The C library's `inet_aton`: dotted quads and their shorter, octal and hexadecimal
/// forms.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let text = CString::new(s).ok()?;
    let mut addr = libc::in_addr { s_addr: 0 };
    // SAFETY: `text` is a NUL-terminated string and `addr` an in_addr, both live for the
    // call, which only reads the one and writes the other.
    let ok = unsafe { c::inet_aton(text.as_ptr(), &mut addr) };
    (ok != 0).then(|| Ipv4Addr::from(u32::from_be(addr.s_addr)))
}

/// The first IPv4 address of a host name.
fn resolve(host: &str) -> Option<Ipv4Addr> {
    (host, 0).to_socket_addrs().ok()?.find_map(|a| match a {
        std::net::SocketAddr::V4(v4) => Some(*v4.ip()),
        std::net::SocketAddr::V6(_) => None,
    })
}

/// `strtol(s, &end, 0)` where only a string without digits fails: leading white space, a
/// sign, `0x` for hexadecimal and a leading `0` for octal; what follows the number is
/// ignored.
fn strtol(s: &str) -> Option<i64> {
    let s = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(hex) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        if hex.starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, hex)
        } else {
            // "0x" without hex digits is the number 0 followed by "x".
            (8, s)
        }
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let value = digits[..end].chars().fold(0i64, |acc, c| {
        acc.saturating_mul(i64::from(radix))
            .saturating_add(i64::from(c.to_digit(radix).unwrap_or(0)))
    });
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("127.0.0.1:5555").unwrap(),
            "127.0.0.1:5555".parse().unwrap()
        );
        assert_eq!(
            parse_host_port(":80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(
            parse_host_port("10.1:0x10").unwrap(),
            "10.0.0.1:16".parse().unwrap()
        );
        assert_eq!(
            parse_host_port("localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            parse_host_port("1.2.3.4:12junk").unwrap(),
            "1.2.3.4:12".parse().unwrap()
        );
    }

    #[test]
    fn qemu_messages() {
        let err = |s| parse_host_port(s).unwrap_err().to_string();
        assert_eq!(
            err("foo"),
            "host address 'foo' doesn't contain ':' separating host from port"
        );
        assert_eq!(
            err("999.1.1.1:5"),
            "host address '999.1.1.1' is not a valid IPv4 address"
        );
        assert_eq!(err("127.0.0.1:abc"), "port number 'abc' is invalid");
        assert_eq!(err("127.0.0.1:"), "port number '' is invalid");
        assert_eq!(
            err("nohost.invalid:5"),
            "can't resolve host address 'nohost.invalid'"
        );
    }

    #[test]
    fn strtol_like_c() {
        assert_eq!(strtol(" 42"), Some(42));
        assert_eq!(strtol("010"), Some(8));
        assert_eq!(strtol("0x"), Some(0));
        assert_eq!(strtol("-3"), Some(-3));
        assert_eq!(strtol("x1"), None);
    }
}
