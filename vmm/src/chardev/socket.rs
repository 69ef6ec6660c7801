//! Socket chardevs: a listening or connecting unix or TCP socket. One client at a time.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Mutex;

use super::ChardevError;

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

/// A socket backend.
pub struct SocketChardev {
    listener: Option<Listener>,
    client: Mutex<Option<Stream>>,
    path: Option<std::path::PathBuf>,
}

/// An integer socket option of `fd`.
fn sockopt(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn sock_err(addr: &str) -> impl Fn(io::Error) -> ChardevError + '_ {
    move |source| ChardevError::Socket {
        addr: addr.to_string(),
        source,
    }
}

impl SocketChardev {
    /// A unix socket at `path`: listening when `server`, else connecting.
    pub fn unix(path: &Path, server: bool, wait: bool) -> Result<SocketChardev, ChardevError> {
        let addr = format!("unix:{}", path.display());
        let err = sock_err(&addr);
        if !server {
            let s = UnixStream::connect(path).map_err(&err)?;
            return Ok(SocketChardev {
                listener: None,
                client: Mutex::new(Some(Stream::Unix(s))),
                path: None,
            });
        }
        // A stale socket file from an earlier run would make bind fail.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(path);
            }
        }
        let l = UnixListener::bind(path).map_err(&err)?;
        let me = SocketChardev {
            listener: Some(Listener::Unix(l)),
            client: Mutex::new(None),
            path: Some(path.to_path_buf()),
        };
        me.wait_if(wait, &format!("disconnected:{addr},server=on"))?;
        Ok(me)
    }

    /// A TCP socket at `host:port`: listening when `server`, else connecting.
    pub fn tcp(
        host: &str,
        port: u16,
        server: bool,
        wait: bool,
    ) -> Result<SocketChardev, ChardevError> {
        let addr = format!("tcp:{host}:{port}");
        let err = sock_err(&addr);
        if !server {
            let s = TcpStream::connect((host, port)).map_err(&err)?;
            return Ok(SocketChardev {
                listener: None,
                client: Mutex::new(Some(Stream::Tcp(s))),
                path: None,
            });
        }
        let l = TcpListener::bind((host, port)).map_err(&err)?;
        let me = SocketChardev {
            listener: Some(Listener::Tcp(l)),
            client: Mutex::new(None),
            path: None,
        };
        me.wait_if(wait, &format!("disconnected:{addr},server=on"))?;
        Ok(me)
    }

    /// A socket inherited as descriptor `fd`: listening or connected, unix or TCP.
    pub fn from_fd(fd: RawFd) -> Result<SocketChardev, ChardevError> {
        let addr = format!("fd={fd}");
        let err = sock_err(&addr);
        let domain = sockopt(fd, libc::SO_DOMAIN).map_err(&err)?;
        let listening = sockopt(fd, libc::SO_ACCEPTCONN).map_err(&err)? != 0;
        // SAFETY: the descriptor was handed to petrel for this chardev, which owns it from
        // now on; sockopt above proved it is an open socket.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let unix = domain == libc::AF_UNIX;
        let (listener, client) = match (listening, unix) {
            (true, true) => (Some(Listener::Unix(UnixListener::from(owned))), None),
            (true, false) => (Some(Listener::Tcp(TcpListener::from(owned))), None),
            (false, true) => (None, Some(Stream::Unix(UnixStream::from(owned)))),
            (false, false) => (None, Some(Stream::Tcp(TcpStream::from(owned)))),
        };
        Ok(SocketChardev {
            listener,
            client: Mutex::new(client),
            path: None,
        })
    }

    fn wait_if(&self, wait: bool, what: &str) -> Result<(), ChardevError> {
        if wait {
            eprintln!("petrel: waiting for connection on: {what}");
            self.accept().map_err(|source| ChardevError::Socket {
                addr: what.into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Accepts a pending client, replacing any previous one.
    pub fn accept(&self) -> io::Result<()> {
        let stream = match &self.listener {
            Some(Listener::Unix(l)) => Stream::Unix(l.accept()?.0),
            Some(Listener::Tcp(l)) => Stream::Tcp(l.accept()?.0),
            None => return Ok(()),
        };
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
        Ok(())
    }

    /// The descriptor the event loop should poll: the client if one is connected, else the
    /// listener.
    pub fn poll_fd(&self) -> RawFd {
        if let Some(c) = &*self.client.lock().unwrap_or_else(|e| e.into_inner()) {
            return c.fd();
        }
        match &self.listener {
            Some(Listener::Unix(l)) => l.as_raw_fd(),
            Some(Listener::Tcp(l)) => l.as_raw_fd(),
            None => -1,
        }
    }

    /// Whether a client is connected.
    pub fn connected(&self) -> bool {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Reads from the client; `Ok(0)` means it went away (and is dropped).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let n = match client.as_mut() {
            Some(Stream::Unix(s)) => s.read(buf),
            Some(Stream::Tcp(s)) => s.read(buf),
            None => Ok(0),
        };
        if matches!(n, Ok(0) | Err(_)) {
            *client = None;
        }
        n
    }

    /// Writes to the client if there is one; a failing client is dropped.
    pub fn write_all(&self, buf: &[u8]) {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let res = match client.as_mut() {
            Some(Stream::Unix(s)) => s.write_all(buf),
            Some(Stream::Tcp(s)) => s.write_all(buf),
            None => Ok(()),
        };
        if res.is_err() {
            *client = None;
        }
    }
}

impl Drop for SocketChardev {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}
