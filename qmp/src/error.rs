//! QMP errors as clients see them: a class and a human-readable description.

use serde::Serialize;

/// The error classes QEMU has used since 1.2; clients rely on these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorClass {
    /// Everything that has no class of its own.
    GenericError,
    /// The command does not exist (or not in this mode).
    CommandNotFound,
    /// The device exists but is not active.
    DeviceNotActive,
    /// No such device.
    DeviceNotFound,
    /// KVM lacks a capability.
    KVMMissingCap,
}

impl ErrorClass {
    /// The class name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
        }
    }
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{desc}")]
pub struct QmpError {
    /// The class.
    pub class: ErrorClass,
    /// What went wrong, in QEMU's wording where QEMU has one.
    pub desc: String,
}

impl QmpError {
    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> QmpError {
        QmpError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// A `CommandNotFound` for `name`, worded as QEMU words it.
    pub fn command_not_found(name: &str) -> QmpError {
        QmpError {
            class: ErrorClass::CommandNotFound,
            desc: format!("The command {name} has not been found"),
        }
    }

    /// A `DeviceNotFound`.
    pub fn device_not_found(desc: impl Into<String>) -> QmpError {
        QmpError {
            class: ErrorClass::DeviceNotFound,
            desc: desc.into(),
        }
    }

    /// The `error` member of a reply.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "class": self.class.as_str(), "desc": self.desc })
    }
}
