//! Tap network scripts (`script=`, `downscript=`), run as QEMU runs them: the script's
//! path is executed (no `PATH` search) with the interface name as its one argument, and
//! anything but exit status 0 is a failure reported with the raw `waitpid` status.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

/// QEMU's default `script=` (`CONFIG_SYSCONFDIR/qemu-ifup`).
pub const DEFAULT_SCRIPT: &str = "/etc/qemu-ifup";
/// QEMU's default `downscript=` (`CONFIG_SYSCONFDIR/qemu-ifdown`).
pub const DEFAULT_DOWNSCRIPT: &str = "/etc/qemu-ifdown";

/// The `waitpid` status QEMU reports when its child could not execute the script: the
/// child exits with status 1.
const EXEC_FAILED_STATUS: i32 = 1 << 8;

/// A network script that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("network script {script} failed with status {status}")]
pub struct ScriptError {
    /// The script as given.
    pub script: String,
    /// Its raw wait status (256 when it could not be executed).
    pub status: i32,
}

/// Runs `script ifname` and waits for it.
pub fn launch(script: &str, ifname: &str) -> Result<(), ScriptError> {
    // execv() takes a name without a slash relative to the working directory; Command
    // would search PATH for it.
    let program = if script.contains('/') {
        Path::new(script).to_path_buf()
    } else {
        Path::new(".").join(script)
    };
    let status = match Command::new(program).arg0(script).arg(ifname).status() {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => status.into_raw(),
        Err(e) => {
            log::debug!("network script {script}: {e}");
            EXEC_FAILED_STATUS
        }
    };
    Err(ScriptError {
        script: script.to_owned(),
        status,
    })
}

/// Whether a `script=` value asks for a script to run: QEMU skips an empty one and "no".
pub fn wanted(script: &str) -> bool {
    !script.is_empty() && script != "no"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_script_fails_as_qemu_says() {
        let err = launch("/nonexistent", "tap0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network script /nonexistent failed with status 256"
        );
    }

    #[test]
    fn exit_status_is_the_raw_wait_status() {
        let err = launch("/bin/false", "tap0").unwrap_err();
        assert_eq!(err.status, 256);
        launch("/bin/true", "tap0").unwrap();
    }

    #[test]
    fn no_and_empty_run_nothing() {
        assert!(!wanted("no"));
        assert!(!wanted(""));
        assert!(wanted(DEFAULT_SCRIPT));
    }
}
