//! What query-block, query-blockstats and query-named-block-nodes report, in QAPI's shape
//! (`BlockInfo`, `BlockStats`, `BlockDeviceInfo`); the front end checks it against the
//! schema's types.

use petrel_block::info::{self, BlockDeviceInfo, CacheInfo, ImageInfo};
use petrel_block::{BlockNode, BlockStatsSnapshot};
use serde::Serialize;

use super::{BlockLayer, Disk, FileNode};

/// QAPI `BlockInfo`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockInfo {
    /// The drive id ("" for a `-blockdev` disk).
    pub device: String,
    /// The attached device's id or QOM path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdev: Option<String>,
    /// Always "unknown", as in QEMU.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Virtio disks are not removable.
    pub removable: bool,
    /// Nor lockable.
    pub locked: bool,
    /// The medium.
    pub inserted: BlockDeviceInfo,
    /// The I/O status, for disks with a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_status: Option<&'static str>,
}

/// QAPI `BlockStats` (one level; `parent` is the `file` child, `backing` the backing node).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockStats {
    /// The drive id, at the top level of a device's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The attached device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdev: Option<String>,
    /// The node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The counters.
    pub stats: BlockStatsSnapshot,
    /// The `file` child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<BlockStats>>,
    /// The backing node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing: Option<Box<BlockStats>>,
}

impl BlockLayer {
    /// `query-block`: every backend with a device or a drive id.
    pub fn query_block(&self) -> Vec<BlockInfo> {
        self.disks
            .iter()
            .map(|d| BlockInfo {
                device: d.name.clone(),
                qdev: d.device.as_ref().map(|dev| dev.qdev()),
                kind: "unknown",
                removable: false,
                locked: false,
                inserted: self.describe_disk(d),
                io_status: d.device.as_ref().map(|_| d.control.io_status().as_str()),
            })
            .collect()
    }

    /// The root node of `d` as its backend sees it: the backend's throttling, cache mode and
    /// read-only flag.
    fn describe_disk(&self, d: &Disk) -> BlockDeviceInfo {
        let mut info = info::describe_backend(&self.graph, &d.backend)
            .unwrap_or_else(|_| Self::describe_lost(d.backend.root()));
        info.ro = d.backend.is_read_only();
        info.cache = CacheInfo {
            writeback: d.cache.writeback,
            direct: d.cache.direct,
            no_flush: d.cache.no_flush,
        };
        info
    }

    /// A node that left the graph while a backend held it (removal refuses nodes in use, so
    /// this is defensive), described from the node alone.
    fn describe_lost(node: &BlockNode) -> BlockDeviceInfo {
        file_node_info(&FileNode {
            node_name: node.node_name().to_string(),
            filename: node.filename().to_path_buf(),
            read_only: node.read_only(),
            direct: false,
        })
    }

    /// `query-named-block-nodes`: every node, newest first as in QEMU, with the pending
    /// `driver=file` nodes.
    pub fn query_named_nodes(&self) -> Vec<BlockDeviceInfo> {
        let mut all: Vec<BlockDeviceInfo> = info::describe_all(&self.graph)
            .into_iter()
            .map(|mut n| {
                if let Some(d) = self
                    .disks
                    .iter()
                    .find(|d| d.backend.root().node_name() == n.node_name)
                {
                    n = self.describe_disk(d);
                }
                n
            })
            .collect();
        all.extend(self.file_nodes.iter().map(file_node_info));
        all.reverse();
        all
    }

    /// `query-blockstats`: per disk (with the node tree below it), or per node.
    pub fn query_blockstats(&self, query_nodes: bool) -> Vec<BlockStats> {
        if query_nodes {
            return self
                .graph
                .nodes()
                .map(|n| self.node_stats(n, false))
                .collect();
        }
        self.disks
            .iter()
            .map(|d| {
                let mut s = self.node_stats(d.backend.root(), true);
                s.device = Some(d.name.clone());
                s.qdev = d.device.as_ref().map(|dev| dev.qdev());
                s.stats = d.backend.stats().snapshot();
                s
            })
            .collect()
    }

    /// One node's statistics. Requests are counted where they enter, at the backend, as in
    /// QEMU; below it a node reports the highest write offset that reached it.
    fn node_stats(&self, node: &BlockNode, recurse: bool) -> BlockStats {
        let backend = self
            .disks
            .iter()
            .find(|d| std::ptr::eq(d.backend.root().as_ref(), node));
        let wr_highest_offset =
            backend.map_or(0, |d| d.backend.stats().snapshot().wr_highest_offset);
        let file = node.file_child().is_none();
        let child = |name: Option<&str>| {
            name.and_then(|n| self.graph.get(n))
                .map(|c| Box::new(self.node_stats(&c, true)))
        };
        BlockStats {
            device: None,
            qdev: None,
            node_name: Some(node.node_name().to_string()),
            stats: BlockStatsSnapshot {
                wr_highest_offset,
                ..BlockStatsSnapshot::default()
            },
            parent: if recurse || !file {
                child(node.file_child())
            } else {
                None
            },
            backing: if recurse {
                child(node.backing_child())
            } else {
                None
            },
        }
    }
}

/// A pending `driver=file` node described as QEMU describes a protocol node.
fn file_node_info(f: &FileNode) -> BlockDeviceInfo {
    let filename = f.filename.display().to_string();
    let size = std::fs::metadata(&f.filename).map_or(0, |m| m.len());
    BlockDeviceInfo {
        file: filename.clone(),
        node_name: f.node_name.clone(),
        ro: f.read_only,
        drv: "file".into(),
        backing_file: None,
        backing_file_depth: 0,
        encrypted: false,
        detect_zeroes: "off".into(),
        throttle: info::ThrottleInfo::default(),
        cache: CacheInfo {
            writeback: true,
            direct: f.direct,
            no_flush: false,
        },
        write_threshold: 0,
        image: ImageInfo {
            filename,
            format: "file".into(),
            actual_size: petrel_block::image::actual_size(&f.filename),
            virtual_size: size,
            cluster_size: None,
            backing_filename: None,
            full_backing_filename: None,
            backing_filename_format: None,
            backing_image: None,
        },
    }
}
