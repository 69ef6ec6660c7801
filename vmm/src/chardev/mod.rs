//! Character device backends (`-chardev`, `-serial`): where a serial port's output goes and
//! where its input comes from.

mod socket;
mod stdio;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::cli::ChardevBackend;
pub use socket::SocketChardev;
pub use stdio::{restore_terminal, StdinEvent, StdioInput};

/// Errors opening a character device backend.
#[derive(Debug, Error)]
pub enum ChardevError {
    /// The output file cannot be opened.
    #[error("cannot open chardev file '{path}'")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket cannot be created, bound or connected.
    #[error("cannot set up chardev socket '{addr}'")]
    Socket {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The terminal cannot be configured.
    #[error("cannot configure the terminal on stdin")]
    Terminal(#[source] io::Error),
}

/// Where output goes.
enum Sink {
    Stdout,
    File(File),
    Null,
    Socket(Arc<SocketChardev>),
}

/// An opened backend. Clones of its writer can be handed to devices; its input, if any, is
/// polled by the event loop.
pub struct Chardev {
    sink: Arc<Mutex<Sink>>,
    input: Option<ChardevInput>,
}

/// A source of input bytes the event loop polls.
pub enum ChardevInput {
    /// The process's stdin.
    Stdio(StdioInput),
    /// A socket, listening or connected.
    Socket(Arc<SocketChardev>),
}

impl Chardev {
    /// Opens `backend`. A listening socket with `wait=on` blocks here until a client connects,
    /// as QEMU does.
    pub fn open(backend: &ChardevBackend) -> Result<Chardev, ChardevError> {
        let (sink, input) = match backend {
            ChardevBackend::Stdio { signal } => (
                Sink::Stdout,
                Some(ChardevInput::Stdio(StdioInput::new(*signal)?)),
            ),
            ChardevBackend::File { path, append } => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(path)
                    .map_err(|source| ChardevError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                (Sink::File(file), None)
            }
            ChardevBackend::Null => (Sink::Null, None),
            ChardevBackend::UnixSocket { path, server, wait } => {
                let s = Arc::new(SocketChardev::unix(path, *server, *wait)?);
                (Sink::Socket(s.clone()), Some(ChardevInput::Socket(s)))
            }
            ChardevBackend::SocketFd { fd } => {
                let s = Arc::new(SocketChardev::from_fd(*fd)?);
                (Sink::Socket(s.clone()), Some(ChardevInput::Socket(s)))
            }
            ChardevBackend::TcpSocket {
                host,
                port,
                server,
                wait,
            } => {
                let s = Arc::new(SocketChardev::tcp(host, *port, *server, *wait)?);
                (Sink::Socket(s.clone()), Some(ChardevInput::Socket(s)))
            }
        };
        Ok(Chardev {
            sink: Arc::new(Mutex::new(sink)),
            input,
        })
    }

    /// A writer for a device's output.
    pub fn writer(&self) -> ChardevWriter {
        ChardevWriter {
            sink: self.sink.clone(),
        }
    }

    /// Takes the input side, for the event loop.
    pub fn take_input(&mut self) -> Option<ChardevInput> {
        self.input.take()
    }
}

/// Device-side handle that writes to a chardev.
#[derive(Clone)]
pub struct ChardevWriter {
    sink: Arc<Mutex<Sink>>,
}

impl Write for ChardevWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
            }
            Sink::File(f) => f.write_all(buf)?,
            Sink::Null => {}
            // Output with no client connected is dropped, as QEMU drops it.
            Sink::Socket(s) => s.write_all(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ChardevInput {
    /// The descriptor to poll for readability (the listener while a socket has no client).
    pub fn fd(&self) -> RawFd {
        match self {
            ChardevInput::Stdio(_) => io::stdin().as_raw_fd(),
            ChardevInput::Socket(s) => s.poll_fd(),
        }
    }
}
