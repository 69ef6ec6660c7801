//! Block-layer operations front ends may ask for.

use petrel_block::info::BlockDeviceInfo;
use petrel_block::throttle::ThrottleConfig;

use crate::blockdev::query::{BlockInfo, BlockStats};

/// A block-layer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRequest {
    /// Every disk (`query-block`).
    QueryBlock,
    /// I/O statistics per disk, or per node.
    QueryStats {
        /// Per node rather than per disk.
        nodes: bool,
    },
    /// Every node (`query-named-block-nodes`).
    QueryNodes,
    /// Resize the root of drive `device`, or node `node_name`.
    Resize {
        /// Drive id.
        device: Option<String>,
        /// Node name.
        node_name: Option<String>,
        /// New size in bytes.
        size: i64,
    },
    /// Set a disk's I/O limits.
    SetThrottle {
        /// Drive id.
        device: Option<String>,
        /// Device id or QOM path.
        id: Option<String>,
        /// The limits.
        config: ThrottleConfig,
    },
    /// Add a node (`blockdev-add`), as QAPI `BlockdevOptions` JSON.
    Add(serde_json::Value),
    /// Remove a node no one uses.
    Del {
        /// The node.
        node_name: String,
    },
    /// Rewrite the backing file name in an image header.
    ChangeBackingFile {
        /// The drive whose chain holds the image.
        device: String,
        /// The image's node (default: the drive's root).
        image_node_name: Option<String>,
        /// The new name.
        backing_file: String,
    },
    /// Arm (or, with 0, disarm) a node's write threshold.
    SetWriteThreshold {
        /// The node.
        node_name: String,
        /// Offset in bytes.
        threshold: u64,
    },
    /// `eject`, the tray and medium commands: check the disk, which is never removable.
    Removable {
        /// Drive id.
        device: Option<String>,
        /// Device id or QOM path.
        id: Option<String>,
    },
    /// `block_passwd`: check the disk, which is never encrypted.
    Passwd {
        /// Drive id.
        device: String,
        /// Node name.
        node_name: Option<String>,
    },
}

/// Block-layer answers.
#[derive(Debug)]
pub enum BlockData {
    /// `QueryBlock`.
    Info(Vec<BlockInfo>),
    /// `QueryStats`.
    Stats(Vec<BlockStats>),
    /// `QueryNodes`.
    Nodes(Vec<BlockDeviceInfo>),
}
