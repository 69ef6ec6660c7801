//! Petrel's block layer.
//!
//! Modelled on QEMU's: image files are opened as [`image`]s (raw or qcow2, with
//! qcow2 backing chains opened implicitly from the header), each layer becomes
//! nodes in a [`node::BlockGraph`] (a format node over a `file` protocol node,
//! linked to its backing node), and a device reaches its disk through a
//! [`backend::BlockBackend`] on a root node, which enforces read-only access,
//! checks bounds, keeps the I/O statistics QMP reports and applies [`throttle`] limits.
//! Nodes carry write thresholds ([`threshold`]), and a qcow2 node's recorded backing
//! file name can be changed ([`BlockGraph::change_backing_file`]).
//!
//! Image access goes through [imago](https://docs.rs/imago) in its synchronous
//! mode; every call blocks the calling (I/O) thread.

pub mod backend;
pub mod errno;
pub mod header;
pub mod image;
pub mod info;
pub mod node;
pub mod stats;
pub mod threshold;
pub mod throttle;

pub use backend::{BackendError, BlockBackend};
pub use image::{ImageError, ImageFormat, OpenOptions};
/// The I/O vectors of [`BlockBackend::readv`] and [`BlockBackend::writev`].
pub use imago::io_buffers::{IoVector, IoVectorMut};
pub use node::{BackingOption, BlockGraph, BlockNode, NodeDriver, NodeError, NodeOptions};
pub use stats::{BlockStats, BlockStatsSnapshot};
pub use threshold::{WriteThresholdEvent, WriteThresholdNotifier};
pub use throttle::{ThrottleConfig, ThrottleError};
