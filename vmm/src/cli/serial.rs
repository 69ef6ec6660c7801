//! The `-serial DEV` device syntax (QEMU's "compat" chardev syntax).

use super::chardev::{socket, SocketAddress};
use super::config::{ChardevBackend, ChardevSpec};
use super::error::ArgError;
use super::opts::{Opts, Syntax};

/// One `-serial` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SerialArg {
    /// `none`: no port, and no default port. It does not take a COM number: in QEMU
    /// `-serial none -serial stdio` puts stdio on COM1.
    None,
    /// A port on this backend.
    Port(ChardevSpec),
}

/// Parses a `-serial` argument.
///
/// `mon:DEV` is `DEV`: QEMU multiplexes its HMP monitor onto the device, and petrel has no
/// HMP monitor. As in QEMU, `mon:stdio` passes Ctrl-C to the guest (`signal=off`).
pub(crate) fn parse_serial(arg: &str) -> Result<SerialArg, ArgError> {
    if arg == "none" {
        return Ok(SerialArg::None);
    }
    if let Some(id) = arg.strip_prefix("chardev:") {
        return Ok(SerialArg::Port(ChardevSpec::Chardev(id.to_owned())));
    }
    let (monitor, dev) = match arg.strip_prefix("mon:") {
        Some(dev) => (true, dev),
        None => (false, arg),
    };
    let backend = if dev == "stdio" {
        ChardevBackend::Stdio { signal: !monitor }
    } else if dev == "null" {
        ChardevBackend::Null
    } else if let Some(path) = dev.strip_prefix("file:") {
        // The rest is the path, commas included, exactly as in QEMU.
        if path.is_empty() {
            return Err(ArgError::MissingParameter("path"));
        }
        ChardevBackend::File {
            path: path.into(),
            append: false,
        }
    } else if let Some(rest) = dev.strip_prefix("unix:") {
        unix(rest)?
    } else if let Some(rest) = dev.strip_prefix("tcp:") {
        tcp(rest)?
    } else {
        return Err(ArgError::UnsupportedSerial(arg.to_owned()));
    };
    Ok(SerialArg::Port(ChardevSpec::Backend(backend)))
}

/// `unix:path[,server=on|off][,wait=on|off]` after the `unix:`.
pub(crate) fn unix(rest: &str) -> Result<ChardevBackend, ArgError> {
    let opts = Opts::parse(rest, Some("path"), Syntax::QemuOpts)?;
    opts.check_known(&["path", "server", "wait"])?;
    let path = opts.get("path").unwrap_or("");
    socket(SocketAddress::Unix(path), &opts)
}

/// `tcp:[host]:port[,server=on|off][,wait=on|off]`. As in QEMU, the host is what precedes
/// the first `:` (so no IPv6 literal), and the port runs up to the first `,`.
pub(crate) fn tcp(rest: &str) -> Result<ChardevBackend, ArgError> {
    let (host, after_host) = rest
        .split_once(':')
        .ok_or_else(|| ArgError::InvalidPort(rest.to_owned()))?;
    let (port, options) = after_host.split_once(',').unwrap_or((after_host, ""));
    let opts = Opts::parse(options, None, Syntax::QemuOpts)?;
    opts.check_known(&["server", "wait"])?;
    socket(SocketAddress::Tcp { host, port }, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(arg: &str) -> ChardevBackend {
        match parse_serial(arg) {
            Ok(SerialArg::Port(ChardevSpec::Backend(b))) => b,
            other => panic!("{arg}: {other:?}"),
        }
    }

    #[test]
    fn simple_devices() {
        assert_eq!(parse_serial("none"), Ok(SerialArg::None));
        assert_eq!(port("stdio"), ChardevBackend::Stdio { signal: true });
        assert_eq!(port("mon:stdio"), ChardevBackend::Stdio { signal: false });
        assert_eq!(port("null"), ChardevBackend::Null);
        assert_eq!(port("mon:null"), ChardevBackend::Null);
        assert_eq!(
            parse_serial("chardev:c0"),
            Ok(SerialArg::Port(ChardevSpec::Chardev("c0".into())))
        );
    }

    #[test]
    fn file_path_is_taken_verbatim() {
        assert_eq!(
            port("file:/tmp/serial,1.log"),
            ChardevBackend::File {
                path: "/tmp/serial,1.log".into(),
                append: false
            }
        );
        assert_eq!(
            parse_serial("file:"),
            Err(ArgError::MissingParameter("path"))
        );
    }

    #[test]
    fn unix() {
        assert_eq!(
            port("unix:/tmp/s"),
            ChardevBackend::UnixSocket {
                path: "/tmp/s".into(),
                server: false,
                wait: false
            }
        );
        assert_eq!(
            port("unix:/tmp/s,server=on,wait=off"),
            ChardevBackend::UnixSocket {
                path: "/tmp/s".into(),
                server: true,
                wait: false
            }
        );
        assert_eq!(
            port("unix:/tmp/a,,b,server,nowait"),
            ChardevBackend::UnixSocket {
                path: "/tmp/a,b".into(),
                server: true,
                wait: false
            }
        );
        assert_eq!(
            port("mon:unix:/tmp/s,server"),
            ChardevBackend::UnixSocket {
                path: "/tmp/s".into(),
                server: true,
                wait: true
            }
        );
        assert_eq!(
            parse_serial("unix:/tmp/s,nowait"),
            Err(ArgError::WaitWithoutServer)
        );
        assert_eq!(
            parse_serial("unix:"),
            Err(ArgError::MissingParameter("path"))
        );
        assert_eq!(
            parse_serial("unix:/s,reconnect=1"),
            Err(ArgError::UnknownParameter("reconnect".into()))
        );
    }

    #[test]
    fn tcp() {
        assert_eq!(
            port("tcp:127.0.0.1:4444,server=on,wait=off"),
            ChardevBackend::TcpSocket {
                host: "127.0.0.1".into(),
                port: 4444,
                server: true,
                wait: false
            }
        );
        assert_eq!(
            port("tcp::4444,server"),
            ChardevBackend::TcpSocket {
                host: "0.0.0.0".into(),
                port: 4444,
                server: true,
                wait: true
            }
        );
        assert_eq!(
            port("tcp:localhost:23"),
            ChardevBackend::TcpSocket {
                host: "localhost".into(),
                port: 23,
                server: false,
                wait: false
            }
        );
        assert_eq!(
            parse_serial("tcp:host"),
            Err(ArgError::InvalidPort("host".into()))
        );
        assert_eq!(
            parse_serial("tcp:host:telnet"),
            Err(ArgError::InvalidPort("telnet".into()))
        );
        assert_eq!(
            parse_serial("tcp::1,nodelay"),
            Err(ArgError::UnknownParameter("delay".into()))
        );
    }

    #[test]
    fn unsupported() {
        for dev in [
            "vc",
            "pty",
            "pipe:/tmp/p",
            "udp::1",
            "telnet::1,server",
            "/dev/ttyS0",
            "",
            "mon:",
            "stdio,signal=off",
        ] {
            assert_eq!(
                parse_serial(dev),
                Err(ArgError::UnsupportedSerial(dev.into())),
                "{dev}"
            );
        }
    }
}
