//! Creating a netdev's backend from its QAPI `Netdev` JSON.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use petrel_net::{SocketBackend, SocketOptions, TapBackend, TapOptions, UserBackend, UserOptions};
use petrel_qmp::schema::types::{
    Netdev, NetdevBranch, NetdevSocketOptions, NetdevTapOptions, NetdevUserOptions,
};

use super::{NetdevError, Opened};

/// Opens the backend `netdev` describes; `fd` is the descriptor a monitor passed for a
/// `fd=` that named one.
pub fn open_backend(
    netdev: &serde_json::Value,
    fd: Option<OwnedFd>,
) -> Result<Opened, NetdevError> {
    let netdev: Netdev =
        serde_json::from_value(netdev.clone()).map_err(|e| NetdevError::Invalid(e.to_string()))?;
    let id = netdev.id;
    Ok(match netdev.branch {
        NetdevBranch::Tap(t) => {
            let fd = resolve_fd(t.fd.as_deref(), fd)?;
            Opened::plain(TapBackend::open(&tap_options(id, &t, fd)?).map_err(config)?)
        }
        NetdevBranch::Socket(s) => {
            let fd = resolve_fd(s.fd.as_deref(), fd)?;
            Opened::plain(SocketBackend::open(&socket_options(id, &s, fd)).map_err(config)?)
        }
        NetdevBranch::User(u) => {
            let user = UserBackend::open(&user_options(id, &u)?).map_err(config)?;
            Opened {
                user: Some(user.control()),
                backend: Box::new(user),
            }
        }
        other => {
            let kind = serde_json::to_value(&other)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(NetdevError::NotCompiled(kind));
        }
    })
}

fn config(e: impl Into<petrel_net::NetError>) -> NetdevError {
    NetdevError::Backend(e.into())
}

/// `fd=`: the descriptor passed with the request, or a number (an inherited descriptor, as
/// QEMU takes one).
fn resolve_fd(fd: Option<&str>, passed: Option<OwnedFd>) -> Result<Option<RawFd>, NetdevError> {
    let Some(fd) = fd else {
        return Ok(None);
    };
    if let Some(passed) = passed {
        return Ok(Some(passed.into_raw_fd()));
    }
    fd.parse::<RawFd>()
        .map(Some)
        .map_err(|_| NetdevError::FdNotFound(fd.to_string()))
}

/// Refuses an option petrel's backends do not implement, rather than ignoring it.
fn unsupported<T>(kind: &str, key: &str, value: &Option<T>) -> Result<(), NetdevError> {
    match value {
        Some(_) => Err(NetdevError::Unsupported(format!(
            "{kind} netdev option '{key}' is not supported"
        ))),
        None => Ok(()),
    }
}

fn tap_options(
    id: String,
    t: &NetdevTapOptions,
    fd: Option<RawFd>,
) -> Result<TapOptions, NetdevError> {
    unsupported("tap", "fds", &t.fds)?;
    unsupported("tap", "br", &t.br)?;
    unsupported("tap", "helper", &t.helper)?;
    unsupported("tap", "vhostfd", &t.vhostfd)?;
    unsupported("tap", "vhostfds", &t.vhostfds)?;
    unsupported("tap", "poll-us", &t.poll_us)?;
    if t.vhost == Some(true) || t.vhostforce == Some(true) {
        return Err(NetdevError::Unsupported(
            "vhost-net is not supported (petrel's virtio-net runs in the VMM)".into(),
        ));
    }
    if t.queues.is_some_and(|q| q > 1) {
        return Err(NetdevError::Unsupported(
            "multiqueue tap (queues= above 1) is not supported".into(),
        ));
    }
    Ok(TapOptions {
        id,
        ifname: t.ifname.clone(),
        fd,
        script: t.script.clone(),
        downscript: t.downscript.clone(),
        vnet_hdr: t.vnet_hdr,
        sndbuf: t.sndbuf,
    })
}

fn socket_options(id: String, s: &NetdevSocketOptions, fd: Option<RawFd>) -> SocketOptions {
    SocketOptions {
        id,
        fd,
        listen: s.listen.clone(),
        connect: s.connect.clone(),
        mcast: s.mcast.clone(),
        localaddr: s.localaddr.clone(),
        udp: s.udp.clone(),
    }
}

fn user_options(id: String, u: &NetdevUserOptions) -> Result<UserOptions, NetdevError> {
    unsupported("user", "tftp", &u.tftp)?;
    unsupported("user", "bootfile", &u.bootfile)?;
    unsupported("user", "dnssearch", &u.dnssearch)?;
    unsupported("user", "domainname", &u.domainname)?;
    unsupported("user", "ipv6-prefix", &u.ipv6_prefix)?;
    unsupported("user", "ipv6-prefixlen", &u.ipv6_prefixlen)?;
    unsupported("user", "ipv6-host", &u.ipv6_host)?;
    unsupported("user", "ipv6-dns", &u.ipv6_dns)?;
    unsupported("user", "smb", &u.smb)?;
    unsupported("user", "smbserver", &u.smbserver)?;
    unsupported("user", "tftp-server-name", &u.tftp_server_name)?;
    let strings = |v: &Option<Vec<petrel_qmp::schema::types::QapiString>>| {
        v.iter().flatten().map(|s| s.str.clone()).collect()
    };
    Ok(UserOptions {
        id,
        ipv4: u.ipv4,
        ipv6: u.ipv6,
        // `ip=` is QEMU's legacy spelling of `net=`.
        net: u.net.clone().or_else(|| u.ip.clone()),
        host: u.host.clone(),
        dns: u.dns.clone(),
        dhcpstart: u.dhcpstart.clone(),
        hostname: u.hostname.clone(),
        restrict: u.restrict.unwrap_or(false),
        hostfwd: strings(&u.hostfwd),
        guestfwd: strings(&u.guestfwd),
    })
}
