//! Serialisable node descriptions for `query-named-block-nodes` (QAPI `BlockDeviceInfo`).

use serde::Serialize;

use crate::backend::BlockBackend;
use crate::image::LayerInfo;
use crate::node::{BlockGraph, BlockNode, NodeDriver, NodeError};
use crate::throttle::ThrottleConfig;

/// QAPI `BlockdevCacheInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheInfo {
    /// Writeback caching (petrel always completes writes to the host cache or disk).
    pub writeback: bool,
    /// O_DIRECT.
    pub direct: bool,
    /// Flushes ignored.
    #[serde(rename = "no-flush")]
    pub no_flush: bool,
}

/// QAPI `ImageInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The host file.
    pub filename: String,
    /// The driver name.
    pub format: String,
    /// Allocated bytes on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
    /// Disk size.
    pub virtual_size: u64,
    /// qcow2 cluster size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Backing file name as stored in the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// Backing file name resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<String>,
    /// Backing format as stored in the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    /// The backing image, described the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_image: Option<Box<ImageInfo>>,
}

/// The throttling members of QAPI `BlockDeviceInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThrottleInfo {
    /// Total bytes/s limit (0: none).
    pub bps: u64,
    /// Read bytes/s limit.
    pub bps_rd: u64,
    /// Write bytes/s limit.
    pub bps_wr: u64,
    /// Total operations/s limit.
    pub iops: u64,
    /// Read operations/s limit.
    pub iops_rd: u64,
    /// Write operations/s limit.
    pub iops_wr: u64,
    /// Total bytes/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_max: Option<u64>,
    /// Read bytes/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_rd_max: Option<u64>,
    /// Write bytes/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_wr_max: Option<u64>,
    /// Total operations/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_max: Option<u64>,
    /// Read operations/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_rd_max: Option<u64>,
    /// Write operations/s burst limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_wr_max: Option<u64>,
    /// Seconds `bps_max` lasts, with `bps_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_max_length: Option<u64>,
    /// Seconds `bps_rd_max` lasts, with `bps_rd_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_rd_max_length: Option<u64>,
    /// Seconds `bps_wr_max` lasts, with `bps_wr_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bps_wr_max_length: Option<u64>,
    /// Seconds `iops_max` lasts, with `iops_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_max_length: Option<u64>,
    /// Seconds `iops_rd_max` lasts, with `iops_rd_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_rd_max_length: Option<u64>,
    /// Seconds `iops_wr_max` lasts, with `iops_wr_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_wr_max_length: Option<u64>,
    /// Operation size for iops accounting, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops_size: Option<u64>,
    /// Throttle group, when throttled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl From<&ThrottleConfig> for ThrottleInfo {
    /// As QEMU's `bdrv_block_device_info`: rates always, a burst rate and its length
    /// only when the burst rate is set, `iops_size` when not 0, and the group.
    fn from(config: &ThrottleConfig) -> Self {
        // Validated configurations hold no negative values.
        let rate = |v: i64| u64::try_from(v).unwrap_or(0);
        let burst = |max: i64, length: u64| {
            let max = rate(max);
            (max != 0).then_some((max, length)).unzip()
        };
        let (bps_max, bps_max_length) = burst(config.bps_max, config.bps_max_length);
        let (bps_rd_max, bps_rd_max_length) = burst(config.bps_rd_max, config.bps_rd_max_length);
        let (bps_wr_max, bps_wr_max_length) = burst(config.bps_wr_max, config.bps_wr_max_length);
        let (iops_max, iops_max_length) = burst(config.iops_max, config.iops_max_length);
        let (iops_rd_max, iops_rd_max_length) =
            burst(config.iops_rd_max, config.iops_rd_max_length);
        let (iops_wr_max, iops_wr_max_length) =
            burst(config.iops_wr_max, config.iops_wr_max_length);
        ThrottleInfo {
            bps: rate(config.bps),
            bps_rd: rate(config.bps_rd),
            bps_wr: rate(config.bps_wr),
            iops: rate(config.iops),
            iops_rd: rate(config.iops_rd),
            iops_wr: rate(config.iops_wr),
            bps_max,
            bps_rd_max,
            bps_wr_max,
            iops_max,
            iops_rd_max,
            iops_wr_max,
            bps_max_length,
            bps_rd_max_length,
            bps_wr_max_length,
            iops_max_length,
            iops_rd_max_length,
            iops_wr_max_length,
            iops_size: (config.iops_size != 0).then_some(config.iops_size),
            group: config.group.clone(),
        }
    }
}

/// Whether `node`'s backing link is not the one its header leads to (QEMU's
/// `bdrv_backing_overridden`): another node linked in its place, none at all, or a header
/// rewritten since.
fn backing_overridden(graph: &BlockGraph, node: &BlockNode) -> bool {
    let auto = node.layer().auto_backing_file;
    match node.backing_child().and_then(|name| graph.get(name)) {
        Some(backing) => auto.as_deref() != Some(filename(graph, &backing).as_str()),
        None => auto.is_some(),
    }
}

/// The node's name for its image as QEMU's `bdrv_refresh_filename` makes it: the host
/// file, unless the node's backing link was overridden, in which case no file name says
/// how to open it again and QEMU gives the options that do, as a `json:` pseudo-filename.
pub fn filename(graph: &BlockGraph, node: &BlockNode) -> String {
    if node.driver() != NodeDriver::File && backing_overridden(graph, node) {
        format!("json:{}", open_options(graph, node))
    } else {
        node.filename().display().to_string()
    }
}

/// The options that open `node` again (QEMU's `full_open_options`), as QEMU prints them:
/// its JSON with `": "` and `", "` separators and its key order.
fn open_options(graph: &BlockGraph, node: &BlockNode) -> String {
    let mut members = Vec::new();
    if node.driver() != NodeDriver::File && backing_overridden(graph, node) {
        let backing = match node.backing_child().and_then(|name| graph.get(name)) {
            Some(b) => open_options(graph, &b),
            None => "null".to_string(),
        };
        members.push(("backing", backing));
    }
    members.push(("driver", json_string(node.driver().as_str())));
    match node.file_child().and_then(|name| graph.get(name)) {
        Some(file) => members.push(("file", open_options(graph, &file))),
        None => members.push((
            "filename",
            json_string(&node.filename().display().to_string()),
        )),
    }
    let members: Vec<String> = members
        .into_iter()
        .map(|(key, value)| format!("{}: {value}", json_string(key)))
        .collect();
    format!("{{{}}}", members.join(", "))
}

/// `s` as a JSON string the way QEMU writes one: printable ASCII as is, `"`, `\` and the
/// usual control characters escaped, anything else as `\uXXXX` (surrogate pairs beyond the
/// BMP).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// QAPI `BlockDeviceInfo`, one entry of `query-named-block-nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDeviceInfo {
    /// The host file.
    pub file: String,
    /// The node's name.
    #[serde(rename = "node-name")]
    pub node_name: String,
    /// Read-only.
    pub ro: bool,
    /// Driver name.
    pub drv: String,
    /// The backing node's file name (whatever the header says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// Number of layers below this one.
    pub backing_file_depth: u64,
    /// Encrypted (never, petrel refuses encrypted images).
    pub encrypted: bool,
    /// Zero detection (`off`).
    pub detect_zeroes: String,
    /// Throttling limits, flattened into this object as QEMU has them.
    #[serde(flatten)]
    pub throttle: ThrottleInfo,
    /// Cache mode.
    pub cache: CacheInfo,
    /// Write threshold in bytes (0: none).
    pub write_threshold: u64,
    /// The image.
    pub image: ImageInfo,
}

/// Describes one layer of a node as QAPI `ImageInfo`, recursing down the backing chain.
fn image_info(graph: &BlockGraph, node: &BlockNode) -> ImageInfo {
    let layer: LayerInfo = node.layer();
    let format_node = node.driver() != NodeDriver::File;
    let backing_image = node
        .backing_child()
        .and_then(|name| graph.get(name))
        .map(|b| Box::new(image_info(graph, &b)));
    ImageInfo {
        filename: filename(graph, node),
        format: node.driver().as_str().to_string(),
        actual_size: node.actual_size(),
        virtual_size: node.size(),
        cluster_size: layer.cluster_size.filter(|_| format_node),
        backing_filename: layer.backing_filename.clone().filter(|_| format_node),
        full_backing_filename: layer
            .full_backing_filename
            .as_ref()
            .filter(|_| format_node)
            .map(|p| p.display().to_string()),
        backing_filename_format: layer.backing_format.clone().filter(|_| format_node),
        backing_image,
    }
}

/// Number of backing layers below `node`.
fn backing_depth(graph: &BlockGraph, node: &BlockNode) -> u64 {
    let mut depth = 0;
    let mut next = node.backing_child().and_then(|n| graph.get(n));
    while let Some(b) = next {
        depth += 1;
        next = b.backing_child().and_then(|n| graph.get(n));
    }
    depth
}

/// Describes the node `name` as `query-named-block-nodes` does.
///
/// As in QEMU, a node described on its own reports no throttling (QEMU asks
/// without a backend); use [`describe_backend`] for a backend's root.
pub fn describe(graph: &BlockGraph, name: &str) -> Result<BlockDeviceInfo, NodeError> {
    let node = graph
        .get(name)
        .ok_or_else(|| NodeError::NotFound(name.to_string()))?;
    let layer = node.layer();
    let image = image_info(graph, &node);
    Ok(BlockDeviceInfo {
        file: image.filename.clone(),
        node_name: node.node_name().to_string(),
        ro: node.read_only(),
        drv: node.driver().as_str().to_string(),
        backing_file: image.backing_image.as_ref().map(|b| b.filename.clone()),
        backing_file_depth: backing_depth(graph, &node),
        encrypted: false,
        detect_zeroes: "off".to_string(),
        throttle: ThrottleInfo::default(),
        cache: CacheInfo {
            writeback: true,
            direct: layer.direct,
            no_flush: layer.no_flush,
        },
        write_threshold: node.write_threshold(),
        image,
    })
}

/// Describes the root node of `backend` with the backend's I/O limits, as the
/// `inserted` member of `query-block` does.
pub fn describe_backend(
    graph: &BlockGraph,
    backend: &BlockBackend,
) -> Result<BlockDeviceInfo, NodeError> {
    let mut info = describe(graph, backend.root().node_name())?;
    let config = backend.throttle_config();
    if config.is_enabled() {
        info.throttle = ThrottleInfo::from(&config);
    }
    Ok(info)
}

/// Describes every node, in creation order (`query-named-block-nodes`).
pub fn describe_all(graph: &BlockGraph) -> Vec<BlockDeviceInfo> {
    graph
        .nodes()
        .filter_map(|n| describe(graph, n.node_name()).ok())
        .collect()
}
