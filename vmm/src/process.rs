//! Process-level chores: `-pidfile` and `-daemonize`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors with the pid file or daemonizing.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The pid file cannot be created or written.
    #[error("cannot create pid file '{0}'")]
    PidFile(String, #[source] io::Error),
    /// Another process holds the pid file.
    #[error("cannot lock pid file '{0}': is another instance running?")]
    PidFileLocked(String),
    /// fork, pipe or setsid failed.
    #[error("cannot daemonize")]
    Daemonize(#[source] io::Error),
}

/// A locked pid file, removed when dropped.
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

impl PidFile {
    /// Creates and locks `path` and writes our pid into it.
    pub fn create(path: &Path) -> Result<PidFile, ProcessError> {
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| ProcessError::PidFile(name.clone(), e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ProcessError::PidFileLocked(name));
        }
        file.set_len(0)
            .map_err(|e| ProcessError::PidFile(name.clone(), e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| ProcessError::PidFile(name, e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's side of the pipe to the parent waiting in the foreground.
pub struct DaemonNotifier {
    pipe: File,
}

/// Forks into the background. The parent returns only through `exit`: 0 once the daemon reports
/// that setup succeeded, 1 if it failed. The child returns a notifier for that report.
pub fn daemonize() -> Result<DaemonNotifier, ProcessError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProcessError::Daemonize(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just created this descriptor and nothing else owns it.
    let mut read_end = unsafe { File::from_raw_fd(fds[0]) };
    // SAFETY: as above, for the write end.
    let write_end = unsafe { File::from_raw_fd(fds[1]) };
    // SAFETY: petrel has spawned no thread yet, so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => Err(ProcessError::Daemonize(io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            if unsafe { libc::setsid() } < 0 {
                return Err(ProcessError::Daemonize(io::Error::last_os_error()));
            }
            Ok(DaemonNotifier { pipe: write_end })
        }
        _ => {
            drop(write_end);
            let mut status = [1u8];
            // EOF without a byte means the daemon died during setup.
            let ok = read_end.read_exact(&mut status).is_ok() && status[0] == 0;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

impl DaemonNotifier {
    /// Setup succeeded: release the parent and detach from the terminal.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(&[0]);
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors, which we own.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
    }

    /// Setup failed (already reported on stderr).
    pub fn failed(mut self) {
        let _ = self.pipe.write_all(&[1]);
    }
}
