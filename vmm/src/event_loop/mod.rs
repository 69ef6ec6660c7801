//! The control event loop: one thread, one epoll (event-manager), everything that is not a
//! vCPU.

pub mod api;
pub mod lifecycle;
pub mod serial_input;
pub mod signals;

pub use lifecycle::{ActionSlot, LoopAction};
