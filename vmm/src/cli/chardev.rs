//! `-chardev backend,id=id[,...]` and the socket backend that `-serial unix:`/`tcp:` share.
//!
//! QEMU accepts any chardev key with any backend and ignores the ones a backend does not
//! use; petrel rejects them, so that a misspelt or misplaced key is noticed.

use std::path::PathBuf;

use super::config::{ChardevBackend, ListTopic};
use super::error::ArgError;
use super::opts::{is_help, Opts, Parsed, Syntax};

/// A socket address before validation.
pub(crate) enum SocketAddress<'a> {
    /// `path=`.
    Unix(&'a str),
    /// `host=` and `port=`.
    Tcp {
        /// Host name or address; empty means QEMU's default.
        host: &'a str,
        /// Port number as written.
        port: &'a str,
    },
}

/// Parses a `-chardev` argument into its id and backend.
pub(crate) fn parse_chardev(arg: &str) -> Result<Parsed<(String, ChardevBackend)>, ArgError> {
    let opts = Opts::parse(arg, Some("backend"), Syntax::QemuOpts)?;
    let backend = opts.get("backend");
    if backend.is_some_and(is_help) || opts.wants_help() {
        return Ok(Parsed::List(ListTopic::ChardevBackends));
    }
    let id = opts.get("id");
    if id.is_some_and(|id| !is_identifier(id)) {
        return Err(ArgError::InvalidId);
    }
    let id = id.ok_or(ArgError::MissingParameter("id"))?;
    let backend = match backend.ok_or(ArgError::MissingBackend)? {
        "null" => {
            opts.check_known(&["backend", "id"])?;
            ChardevBackend::Null
        }
        "stdio" => {
            opts.check_known(&["backend", "id", "signal"])?;
            ChardevBackend::Stdio {
                signal: opts.get_bool("signal")?.unwrap_or(true),
            }
        }
        "file" => {
            opts.check_known(&["backend", "id", "path", "append"])?;
            ChardevBackend::File {
                path: non_empty_path(opts.get("path"))?,
                append: opts.get_bool("append")?.unwrap_or(false),
            }
        }
        "socket" => {
            opts.check_known(&[
                "backend", "id", "path", "host", "port", "server", "wait", "fd",
            ])?;
            if let Some(fd) = opts.get("fd") {
                for other in ["path", "host", "port", "server", "wait"] {
                    if opts.get(other).is_some() {
                        return Err(ArgError::Conflict("fd", other));
                    }
                }
                let fd = fd
                    .parse::<i32>()
                    .ok()
                    .filter(|fd| *fd >= 0)
                    .ok_or_else(|| ArgError::ExpectsNumber("fd".into()))?;
                return Ok(Parsed::Value((
                    id.to_owned(),
                    ChardevBackend::SocketFd { fd },
                )));
            }
            let address = match (opts.get("path"), opts.get("host"), opts.get("port")) {
                (Some(_), Some(_), _) => return Err(ArgError::Conflict("path", "host")),
                (Some(_), None, Some(_)) => return Err(ArgError::Conflict("path", "port")),
                (Some(path), None, None) => SocketAddress::Unix(path),
                (None, Some(host), Some(port)) => SocketAddress::Tcp { host, port },
                (None, Some(_), None) => return Err(ArgError::MissingParameter("port")),
                (None, None, _) => return Err(ArgError::MissingParameter("path")),
            };
            socket(address, &opts)?
        }
        other => return Err(ArgError::UnsupportedBackend(other.to_owned())),
    };
    Ok(Parsed::Value((id.to_owned(), backend)))
}

/// A socket backend at `address` with the `server` and `wait` keys of `opts`.
///
/// `server` defaults to off and `wait` to on; as in QEMU since 6.0, `wait` on a client is an
/// error rather than ignored.
pub(crate) fn socket(address: SocketAddress<'_>, opts: &Opts) -> Result<ChardevBackend, ArgError> {
    let server = opts.get_bool("server")?.unwrap_or(false);
    let wait = opts.get_bool("wait")?;
    if !server && wait.is_some() {
        return Err(ArgError::WaitWithoutServer);
    }
    let wait = server && wait.unwrap_or(true);
    Ok(match address {
        SocketAddress::Unix(path) => ChardevBackend::UnixSocket {
            path: non_empty_path(Some(path))?,
            server,
            wait,
        },
        SocketAddress::Tcp { host, port } => {
            let host = match (host, server) {
                ("", true) => "0.0.0.0",
                ("", false) => "localhost",
                (host, _) => host,
            };
            ChardevBackend::TcpSocket {
                host: host.to_owned(),
                port: parse_port(port)?,
                server,
                wait,
            }
        }
    })
}

/// A path parameter, which must be present and non-empty.
fn non_empty_path(path: Option<&str>) -> Result<PathBuf, ArgError> {
    match path {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(ArgError::MissingParameter("path")),
    }
}

/// A decimal TCP port. QEMU also resolves service names; petrel takes numbers only.
fn parse_port(port: &str) -> Result<u16, ArgError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArgError::InvalidPort(port.to_owned()));
    }
    port.parse()
        .map_err(|_| ArgError::InvalidPort(port.to_owned()))
}

/// QEMU's `id_wellformed`: a letter, then letters, digits, `-`, `.` or `_`.
pub(crate) fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chardev(arg: &str) -> Result<(String, ChardevBackend), ArgError> {
        match parse_chardev(arg)? {
            Parsed::Value(v) => Ok(v),
            Parsed::List(topic) => panic!("unexpected {topic:?}"),
        }
    }

    fn backend(arg: &str) -> ChardevBackend {
        chardev(arg).unwrap().1
    }

    #[test]
    fn null_and_stdio() {
        assert_eq!(
            chardev("null,id=n0"),
            Ok(("n0".into(), ChardevBackend::Null))
        );
        assert_eq!(
            backend("stdio,id=s"),
            ChardevBackend::Stdio { signal: true }
        );
        assert_eq!(
            backend("stdio,id=s,signal=off"),
            ChardevBackend::Stdio { signal: false }
        );
        assert_eq!(
            backend("backend=stdio,id=s,nosignal"),
            ChardevBackend::Stdio { signal: false }
        );
    }

    #[test]
    fn file() {
        assert_eq!(
            backend("file,id=f,path=/tmp/a,,b"),
            ChardevBackend::File {
                path: "/tmp/a,b".into(),
                append: false
            }
        );
        assert_eq!(
            backend("file,id=f,path=log,append=on"),
            ChardevBackend::File {
                path: "log".into(),
                append: true
            }
        );
        assert_eq!(
            chardev("file,id=f"),
            Err(ArgError::MissingParameter("path"))
        );
        assert_eq!(
            chardev("file,id=f,path="),
            Err(ArgError::MissingParameter("path"))
        );
    }

    #[test]
    fn unix_sockets() {
        assert_eq!(
            backend("socket,id=s,path=/run/s.sock"),
            ChardevBackend::UnixSocket {
                path: "/run/s.sock".into(),
                server: false,
                wait: false
            }
        );
        assert_eq!(
            backend("socket,id=s,path=/run/s.sock,server=on"),
            ChardevBackend::UnixSocket {
                path: "/run/s.sock".into(),
                server: true,
                wait: true
            }
        );
        assert_eq!(
            backend("socket,id=s,path=/run/s.sock,server,nowait"),
            ChardevBackend::UnixSocket {
                path: "/run/s.sock".into(),
                server: true,
                wait: false
            }
        );
        assert_eq!(
            chardev("socket,id=s,path=/s,wait=off"),
            Err(ArgError::WaitWithoutServer)
        );
        assert_eq!(
            chardev("socket,id=s,path=/s,server=maybe"),
            Err(ArgError::ExpectsBool("server".into()))
        );
    }

    #[test]
    fn tcp_sockets() {
        assert_eq!(
            backend("socket,id=q,host=127.0.0.1,port=4444,server=on,wait=off"),
            ChardevBackend::TcpSocket {
                host: "127.0.0.1".into(),
                port: 4444,
                server: true,
                wait: false
            }
        );
        assert_eq!(
            backend("socket,id=q,host=,port=0,server=on"),
            ChardevBackend::TcpSocket {
                host: "0.0.0.0".into(),
                port: 0,
                server: true,
                wait: true
            }
        );
        assert_eq!(
            backend("socket,id=q,host=,port=23"),
            ChardevBackend::TcpSocket {
                host: "localhost".into(),
                port: 23,
                server: false,
                wait: false
            }
        );
        for port in ["65536", "ssh", "-1", ""] {
            assert_eq!(
                chardev(&format!("socket,id=q,host=h,port={port}")),
                Err(ArgError::InvalidPort(port.into()))
            );
        }
        assert_eq!(
            chardev("socket,id=q,host=h"),
            Err(ArgError::MissingParameter("port"))
        );
        assert_eq!(
            chardev("socket,id=q,path=/s,host=h"),
            Err(ArgError::Conflict("path", "host"))
        );
        assert_eq!(
            chardev("socket,id=q,path=/s,port=1"),
            Err(ArgError::Conflict("path", "port"))
        );
        assert_eq!(
            chardev("socket,id=q"),
            Err(ArgError::MissingParameter("path"))
        );
    }

    #[test]
    fn ids() {
        assert_eq!(chardev("null"), Err(ArgError::MissingParameter("id")));
        for bad in ["", "0abc", "a b", "a,,b", "é"] {
            assert_eq!(
                chardev(&format!("null,id={bad}")),
                Err(ArgError::InvalidId),
                "{bad}"
            );
        }
        assert!(chardev("null,id=a-b.c_d9").is_ok());
    }

    #[test]
    fn backends() {
        assert_eq!(chardev("id=x"), Err(ArgError::MissingBackend));
        for b in ["pty", "vc", "pipe", "udp", "ringbuf", "Stdio"] {
            assert_eq!(
                chardev(&format!("{b},id=x")),
                Err(ArgError::UnsupportedBackend(b.into()))
            );
        }
        assert_eq!(
            parse_chardev("help"),
            Ok(Parsed::List(ListTopic::ChardevBackends))
        );
        assert_eq!(
            parse_chardev("null,?"),
            Ok(Parsed::List(ListTopic::ChardevBackends))
        );
    }

    #[test]
    fn keys_of_other_backends_are_rejected() {
        assert_eq!(
            chardev("stdio,id=s,path=/x"),
            Err(ArgError::UnknownParameter("path".into()))
        );
        assert_eq!(
            chardev("null,id=s,mux=on"),
            Err(ArgError::UnknownParameter("mux".into()))
        );
        assert_eq!(
            chardev("socket,id=s,path=/x,reconnect=1"),
            Err(ArgError::UnknownParameter("reconnect".into()))
        );
    }
}
