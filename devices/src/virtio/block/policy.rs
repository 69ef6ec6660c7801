//! What a disk does when a request fails on the host (QEMU's `werror=`/`rerror=`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The action on a failed host I/O request (QAPI `BlockdevOnError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorAction {
    /// Fail the request towards the guest.
    Report,
    /// Complete the request as if it had succeeded.
    Ignore,
    /// Stop the VM; the request is retried when it resumes.
    Stop,
    /// Stop the VM if the host ran out of space, report anything else.
    Enospc,
}

/// What to do with one failed request, once the policy has looked at the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOutcome {
    /// Fail it towards the guest.
    Report,
    /// Pretend it succeeded.
    Ignore,
    /// Keep it, stop the VM, retry on resume.
    Stop,
}

impl ErrorAction {
    /// QEMU's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorAction::Report => "report",
            ErrorAction::Ignore => "ignore",
            ErrorAction::Stop => "stop",
            ErrorAction::Enospc => "enospc",
        }
    }

    /// What this policy does with an error; `no_space` tells ENOSPC apart.
    pub fn outcome(self, no_space: bool) -> ErrorOutcome {
        match self {
            ErrorAction::Report => ErrorOutcome::Report,
            ErrorAction::Ignore => ErrorOutcome::Ignore,
            ErrorAction::Stop => ErrorOutcome::Stop,
            ErrorAction::Enospc if no_space => ErrorOutcome::Stop,
            ErrorAction::Enospc => ErrorOutcome::Report,
        }
    }
}

impl ErrorOutcome {
    /// The `action` member of BLOCK_IO_ERROR.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorOutcome::Report => "report",
            ErrorOutcome::Ignore => "ignore",
            ErrorOutcome::Stop => "stop",
        }
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid error action")]
pub struct UnknownErrorAction(pub String);

impl FromStr for ErrorAction {
    type Err = UnknownErrorAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "report" => Ok(ErrorAction::Report),
            "ignore" => Ok(ErrorAction::Ignore),
            "stop" => Ok(ErrorAction::Stop),
            "enospc" => Ok(ErrorAction::Enospc),
            other => Err(UnknownErrorAction(other.to_string())),
        }
    }
}

/// Both policies of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPolicy {
    /// For reads (`rerror`, default report).
    pub read: ErrorAction,
    /// For writes, flushes, discards (`werror`, default enospc).
    pub write: ErrorAction,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            read: ErrorAction::Report,
            write: ErrorAction::Enospc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_stops_only_on_no_space() {
        assert_eq!(ErrorAction::Enospc.outcome(true), ErrorOutcome::Stop);
        assert_eq!(ErrorAction::Enospc.outcome(false), ErrorOutcome::Report);
        assert_eq!(ErrorAction::Stop.outcome(false), ErrorOutcome::Stop);
        assert_eq!(ErrorAction::Ignore.outcome(true), ErrorOutcome::Ignore);
        assert_eq!(ErrorAction::Report.outcome(true), ErrorOutcome::Report);
    }

    #[test]
    fn names_round_trip() {
        for a in [
            ErrorAction::Report,
            ErrorAction::Ignore,
            ErrorAction::Stop,
            ErrorAction::Enospc,
        ] {
            assert_eq!(a.as_str().parse::<ErrorAction>(), Ok(a));
        }
        assert!("auto".parse::<ErrorAction>().is_err());
    }
}
