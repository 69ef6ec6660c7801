//! QMP, the QEMU Machine Protocol, for petrel.
//!
//! - [`schema`]: the QAPI schema (`qmp/schema/*.json`, QAPI's own JSON syntax) and everything
//!   generated from it at build time: Rust types, one marker type per command and per event,
//!   argument validation with QEMU's messages, and the `query-qmp-schema` introspection data.
//! - [`dispatch`]: the registry of command handlers. Only registered commands exist for
//!   clients: everything else is `CommandNotFound`.
//! - [`wire`] and [`server`]: the protocol itself (greeting, negotiation, out-of-band
//!   execution, events) over unix, TCP, stdio or inherited sockets.
//!
//! This crate knows nothing of KVM: the VMM registers handlers that turn commands into its own
//! typed operations.

pub mod dispatch;
pub mod error;
pub mod schema;
pub mod server;
pub mod wire;

pub use dispatch::{CallContext, Registry, Responder};
pub use error::{ErrorClass, QmpError};
