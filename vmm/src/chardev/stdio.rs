//! stdin as a chardev input: raw terminal mode while petrel runs, and the `Ctrl-A x` escape.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use super::ChardevError;

/// The terminal settings to put back at exit.
static SAVED_TERMIOS: Mutex<Option<libc::termios>> = Mutex::new(None);

const CTRL_A: u8 = 0x01;

/// What a chunk of stdin asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StdinEvent {
    /// Bytes for the guest.
    Data(Vec<u8>),
    /// `Ctrl-A x`: quit.
    Quit,
}

/// stdin input state: the escape-sequence decoder.
pub struct StdioInput {
    after_escape: bool,
}

impl StdioInput {
    /// Puts a terminal on stdin into raw mode (keeping Ctrl-C as a signal when `signal`).
    pub fn new(signal: bool) -> Result<StdioInput, ChardevError> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } == 1 {
            let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
            // SAFETY: `t` is valid for writes of a termios; fd is open.
            if unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } != 0 {
                return Err(ChardevError::Terminal(io::Error::last_os_error()));
            }
            // SAFETY: tcgetattr succeeded, so it initialised `t`.
            let saved = unsafe { t.assume_init() };
            let mut raw = saved;
            // SAFETY: cfmakeraw only modifies the struct it is given.
            unsafe { libc::cfmakeraw(&mut raw) };
            if signal {
                raw.c_lflag |= libc::ISIG;
            }
            // Keep output post-processing so the host terminal still maps \n.
            raw.c_oflag |= libc::OPOST;
            // SAFETY: `raw` is a valid termios; fd is open.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
                return Err(ChardevError::Terminal(io::Error::last_os_error()));
            }
            *SAVED_TERMIOS.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        }
        Ok(StdioInput {
            after_escape: false,
        })
    }

    /// Decodes bytes read from stdin.
    pub fn decode(&mut self, bytes: &[u8]) -> StdinEvent {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if self.after_escape {
                self.after_escape = false;
                match b {
                    b'x' | b'X' => return StdinEvent::Quit,
                    CTRL_A => out.push(CTRL_A),
                    other => out.extend_from_slice(&[CTRL_A, other]),
                }
            } else if b == CTRL_A {
                self.after_escape = true;
            } else {
                out.push(b);
            }
        }
        StdinEvent::Data(out)
    }
}

/// Puts the terminal back as it was; called on every exit path.
pub fn restore_terminal() {
    if let Some(t) = SAVED_TERMIOS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        // SAFETY: `t` came from tcgetattr on the same descriptor.
        unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSANOW, &t) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut s = StdioInput {
            after_escape: false,
        };
        assert_eq!(s.decode(b"ab"), StdinEvent::Data(b"ab".to_vec()));
        assert_eq!(s.decode(&[CTRL_A]), StdinEvent::Data(vec![]));
        assert_eq!(s.decode(b"x"), StdinEvent::Quit);
        assert_eq!(
            s.decode(&[CTRL_A, CTRL_A, b'z']),
            StdinEvent::Data(vec![CTRL_A, b'z'])
        );
        assert_eq!(
            s.decode(&[CTRL_A, b'q']),
            StdinEvent::Data(vec![CTRL_A, b'q'])
        );
    }
}
