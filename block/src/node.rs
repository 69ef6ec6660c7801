//! The block node graph, as QEMU has it.
//!
//! Opening an image adds, per layer of its chain, a format node (`raw` or
//! `qcow2`) whose `file` child is a `file` protocol node, and links each format
//! node to the format node of its backing image. Nodes are held by name; nodes
//! opened implicitly (children, backing layers) and roots opened without a name
//! get QEMU-style generated names `#block<N><RR>`. `-blockdev` can name the
//! `file` node, open without the backing file or link an open node as the
//! backing layer ([`NodeOptions`]).

mod backing_file;
mod open;
pub mod temp_snapshot;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use imago::ShallowMapping;

use crate::image::{self, ImageAccess, ImageError, LayerInfo, OpenOptions};
use crate::threshold::{NotifierSlot, WriteThreshold, WriteThresholdNotifier};

pub use backing_file::BackingFileError;
pub use open::{BackingOption, NodeOptions};
pub use temp_snapshot::TempSnapshotError;

/// Longest node name QEMU accepts.
const MAX_NODE_NAME_LEN: usize = 31;

/// Errors of the node graph.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Opening the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The name is already taken.
    #[error("Duplicate nodes with node-name='{0}'")]
    Duplicate(String),
    /// The name is not a valid node name.
    #[error("Invalid node-name: '{0}'")]
    InvalidName(String),
    /// No node has that name.
    #[error("Cannot find node {0}")]
    NotFound(String),
    /// The node is a child of another node.
    #[error("Node '{node}' is in use by node '{parent}'")]
    UsedByNode {
        /// The node asked for.
        node: String,
        /// A node that has it as child.
        parent: String,
    },
    /// A backend (or another holder) still references the node.
    #[error("Node '{0}' is busy")]
    InUse(String),
    /// The node has no format layer to do I/O through.
    #[error("Node '{0}' is a protocol node and has no image to access")]
    NoImage(String),
    /// The operation needs exclusive access, which a backing layer cannot give.
    #[error("Node '{0}' is a backing layer and cannot be modified")]
    Shared(String),
    /// `backing` names no node.
    #[error("Could not open backing file: Cannot find device='{0}' nor node-name='{0}'")]
    BackingNotFound(String),
    /// A writable node cannot be shared as a backing layer (imago would let the overlay
    /// read what another user writes under it).
    #[error("Node '{0}' must be read-only to be used as a backing layer")]
    BackingNotReadOnly(String),
    /// `change-backing-file` failed.
    #[error(transparent)]
    BackingFile(#[from] BackingFileError),
    /// The temporary overlay of `snapshot=on` could not be made.
    #[error(transparent)]
    TempSnapshot(#[from] TempSnapshotError),
}

/// A node's driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDriver {
    /// Raw format.
    Raw,
    /// qcow2 format.
    Qcow2,
    /// Host file protocol.
    File,
}

impl NodeDriver {
    /// QEMU's driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeDriver::Raw => "raw",
            NodeDriver::Qcow2 => "qcow2",
            NodeDriver::File => "file",
        }
    }
}

impl fmt::Display for NodeDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<image::ImageFormat> for NodeDriver {
    fn from(format: image::ImageFormat) -> Self {
        match format {
            image::ImageFormat::Raw => NodeDriver::Raw,
            image::ImageFormat::Qcow2 => NodeDriver::Qcow2,
        }
    }
}

/// Read access to a node's image.
pub(crate) struct AccessGuard<'a>(RwLockReadGuard<'a, Arc<ImageAccess>>);

impl std::ops::Deref for AccessGuard<'_> {
    type Target = ImageAccess;

    fn deref(&self) -> &ImageAccess {
        &self.0
    }
}

/// One node of the graph.
pub struct BlockNode {
    node_name: String,
    driver: NodeDriver,
    filename: PathBuf,
    file: Option<String>,
    backing: Option<String>,
    read_only: bool,
    auto_named: bool,
    /// The layer as opened (or as `change-backing-file` left it); for a `file` node, that
    /// of its parent format node.
    layer: RwLock<LayerInfo>,
    /// The image of a format node. Readers and writers share the lock; discard, resize and
    /// reopening take it exclusively, which needs the `Arc` unshared: a backing layer is
    /// also held by the overlay's qcow2 driver.
    image: Option<RwLock<Arc<ImageAccess>>>,
    threshold: Arc<WriteThreshold>,
    /// The `file` child's threshold (format nodes).
    file_threshold: Option<Arc<WriteThreshold>>,
    /// An open handle on the host file when its name no longer leads to it (a temporary
    /// overlay, unlinked once open): the file's length and allocation are read through it.
    host_file: Option<Arc<File>>,
}

impl fmt::Debug for BlockNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockNode")
            .field("node_name", &self.node_name)
            .field("driver", &self.driver)
            .field("filename", &self.filename)
            .field("file", &self.file)
            .field("backing", &self.backing)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl BlockNode {
    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The node's driver.
    pub fn driver(&self) -> NodeDriver {
        self.driver
    }

    /// The host file under the node.
    pub fn filename(&self) -> &Path {
        &self.filename
    }

    /// Name of the `file` child (format nodes).
    pub fn file_child(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Name of the backing child.
    pub fn backing_child(&self) -> Option<&str> {
        self.backing.as_deref()
    }

    /// Whether the node is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether petrel generated the name.
    pub fn auto_named(&self) -> bool {
        self.auto_named
    }

    /// The image layer as opened, with the backing file name the header now has.
    pub fn layer(&self) -> LayerInfo {
        self.layer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the recorded layer information.
    pub(crate) fn update_layer(&self, f: impl FnOnce(&mut LayerInfo)) {
        f(&mut self.layer.write().unwrap_or_else(PoisonError::into_inner));
    }

    /// The write threshold in bytes (0: none).
    pub fn write_threshold(&self) -> u64 {
        self.threshold.get()
    }

    /// Arms the write threshold at `bytes` (QMP `block-set-write-threshold`); 0 disarms it.
    pub fn set_write_threshold(&self, bytes: u64) {
        self.threshold.set(bytes);
    }

    /// A write, write-zeroes or discard of `len` bytes at `offset` is about to reach the
    /// node: checks its threshold, and that of a raw node's `file` child (same offsets).
    pub(crate) fn before_write(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        self.threshold.check(end);
        if self.driver == NodeDriver::Raw {
            if let Some(file) = &self.file_threshold {
                file.check(end);
            }
        }
    }

    /// The request of [`BlockNode::before_write`] is done: for qcow2, checks the `file`
    /// child's threshold against where the range now lives in the image file.
    ///
    /// Only armed thresholds cost a mapping lookup. Data clusters are what counts;
    /// metadata QEMU would also write (L2 tables, refcounts) is not seen.
    pub(crate) fn after_write(&self, offset: u64, len: u64) {
        let Some(file) = &self.file_threshold else {
            return;
        };
        if self.driver != NodeDriver::Qcow2 || file.get() == 0 {
            return;
        }
        let host_end = match self.access() {
            Ok(access) => host_end(&access, offset, len),
            Err(_) => None,
        };
        if let Some(end) = host_end {
            file.check(end);
        }
    }

    /// Size in bytes: the virtual disk size of a format node, the file length of a `file` node.
    pub fn size(&self) -> u64 {
        match self.access() {
            Ok(access) => access.size(),
            Err(_) => self.host_metadata().map_or(0, |m| m.len()),
        }
    }

    /// Bytes the host file occupies on the host (QEMU's `actual-size`).
    pub fn actual_size(&self) -> Option<u64> {
        self.host_metadata().map(|m| image::allocated_bytes(&m))
    }

    /// The host file's metadata, through the open handle if the node has one.
    fn host_metadata(&self) -> Option<std::fs::Metadata> {
        match &self.host_file {
            Some(file) => file.metadata().ok(),
            None => std::fs::metadata(&self.filename).ok(),
        }
    }

    /// Shared access to the image, for reads and writes.
    pub(crate) fn access(&self) -> Result<AccessGuard<'_>, NodeError> {
        let lock = self
            .image
            .as_ref()
            .ok_or_else(|| NodeError::NoImage(self.node_name.clone()))?;
        Ok(AccessGuard(
            lock.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }

    /// Runs `f` with exclusive access to the image, for discard and resize.
    pub(crate) fn with_image_mut<R>(
        &self,
        f: impl FnOnce(&mut ImageAccess) -> R,
    ) -> Result<R, NodeError> {
        self.replace_image(|image| Ok((f(image), None)))
    }

    /// Runs `f` with exclusive access to the image; the image it returns, if any,
    /// replaces the current one.
    pub(crate) fn replace_image<R>(
        &self,
        f: impl FnOnce(&mut ImageAccess) -> Result<(R, Option<ImageAccess>), NodeError>,
    ) -> Result<R, NodeError> {
        let lock = self
            .image
            .as_ref()
            .ok_or_else(|| NodeError::NoImage(self.node_name.clone()))?;
        let mut slot = lock.write().unwrap_or_else(PoisonError::into_inner);
        let image =
            Arc::get_mut(&mut slot).ok_or_else(|| NodeError::Shared(self.node_name.clone()))?;
        let (result, new) = f(image)?;
        if let Some(new) = new {
            *slot = Arc::new(new);
        }
        Ok(result)
    }

    /// The image as a qcow2 overlay's driver holds its backing layer.
    pub(crate) fn shared_image(&self) -> Option<Arc<ImageAccess>> {
        let lock = self.image.as_ref()?;
        Some(Arc::clone(
            &lock.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }

    /// Whether the node has an image to do I/O through.
    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }
}

/// Where the guest range `offset..offset+len` of the qcow2 `image` ends in its own file, if
/// any of it is allocated there.
fn host_end(image: &ImageAccess, offset: u64, len: u64) -> Option<u64> {
    let stop = offset.saturating_add(len);
    let mut pos = offset;
    let mut end = None;
    while pos < stop {
        let Ok((mapping, n)) = image.get_shallow_mapping(pos, stop - pos) else {
            break;
        };
        if n == 0 {
            break;
        }
        if let ShallowMapping::Raw { offset: host, .. } = mapping {
            end = end.max(Some(host + n));
        }
        pos += n;
    }
    end
}

/// Checks a user-given node name as QEMU's `id_wellformed` does.
pub fn check_node_name(name: &str) -> Result<(), NodeError> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if first_ok && rest_ok && name.len() <= MAX_NODE_NAME_LEN {
        Ok(())
    } else {
        Err(NodeError::InvalidName(name.to_string()))
    }
}

/// All block nodes, by name, in creation order.
#[derive(Debug, Default)]
pub struct BlockGraph {
    nodes: Vec<Arc<BlockNode>>,
    next_id: u64,
    random: RandomState,
    /// Where the nodes' write thresholds report.
    notifier: Arc<NotifierSlot>,
}

impl BlockGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh QEMU-style name: `#block`, a counter, and two random digits.
    pub fn generate_node_name(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let rnd = self.random.hash_one(id) % 100;
        format!("#block{id}{rnd:02}")
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<BlockNode>> {
        self.nodes.iter().find(|n| n.node_name == name).cloned()
    }

    /// All nodes in creation order.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<BlockNode>> {
        self.nodes.iter()
    }

    /// Sets what receives the nodes' `BLOCK_WRITE_THRESHOLD` events (`None`: nothing).
    pub fn set_write_threshold_notifier(&self, notifier: Option<WriteThresholdNotifier>) {
        self.notifier.set(notifier);
    }

    /// Opens the image `opts` names, adds its nodes, and returns the root format node.
    ///
    /// `node_name` names the root; every other node gets a generated name.
    pub fn open(
        &mut self,
        opts: &OpenOptions,
        node_name: Option<&str>,
    ) -> Result<Arc<BlockNode>, NodeError> {
        let names = NodeOptions {
            node_name: node_name.map(str::to_string),
            ..NodeOptions::default()
        };
        self.open_with(opts, &names)
    }

    /// Adds a format node with its `file` node; either is named as given or gets a
    /// generated name.
    fn add_layer(
        &mut self,
        layer: LayerInfo,
        image: Arc<ImageAccess>,
        backing: Option<String>,
        node_name: Option<&str>,
        file_name: Option<&str>,
        host_file: Option<Arc<File>>,
    ) -> Arc<BlockNode> {
        let mut named = |name: Option<&str>| match name {
            Some(name) => (name.to_string(), false),
            None => (self.generate_node_name(), true),
        };
        let (file_name, file_auto) = named(file_name);
        let (name, auto_named) = named(node_name);
        let file_threshold = WriteThreshold::new(&file_name, &self.notifier);
        self.nodes.push(Arc::new(BlockNode {
            node_name: file_name.clone(),
            driver: NodeDriver::File,
            filename: layer.path.clone(),
            file: None,
            backing: None,
            read_only: layer.read_only,
            auto_named: file_auto,
            layer: RwLock::new(layer.clone()),
            image: None,
            threshold: Arc::clone(&file_threshold),
            file_threshold: None,
            host_file: host_file.clone(),
        }));
        let node = Arc::new(BlockNode {
            threshold: WriteThreshold::new(&name, &self.notifier),
            node_name: name,
            driver: layer.format.into(),
            filename: layer.path.clone(),
            file: Some(file_name),
            backing,
            read_only: layer.read_only,
            auto_named,
            layer: RwLock::new(layer),
            image: Some(RwLock::new(image)),
            file_threshold: Some(file_threshold),
            host_file,
        });
        self.nodes.push(Arc::clone(&node));
        node
    }

    /// The first node that has `name` as a child.
    fn parent_of(&self, name: &str) -> Option<&Arc<BlockNode>> {
        self.nodes
            .iter()
            .find(|n| n.file.as_deref() == Some(name) || n.backing.as_deref() == Some(name))
    }

    /// Removes the node `name`, refusing while another node or a backend uses it.
    ///
    /// Its children that were opened implicitly (generated names) and are now
    /// unused go with it, as in QEMU. A backend holds the node's `Arc`; so does
    /// any caller still holding what [`BlockGraph::get`] returned.
    pub fn remove(&mut self, name: &str) -> Result<(), NodeError> {
        let pos = self
            .nodes
            .iter()
            .position(|n| n.node_name == name)
            .ok_or_else(|| NodeError::NotFound(name.to_string()))?;
        if let Some(parent) = self.parent_of(name) {
            return Err(NodeError::UsedByNode {
                node: name.to_string(),
                parent: parent.node_name.clone(),
            });
        }
        if Arc::strong_count(&self.nodes[pos]) > 1 {
            return Err(NodeError::InUse(name.to_string()));
        }
        let node = self.nodes.remove(pos);
        for child in [&node.file, &node.backing].into_iter().flatten() {
            let implicit = self
                .get(child)
                .is_some_and(|c| c.auto_named && Arc::strong_count(&c) == 2);
            if implicit && self.parent_of(child).is_none() {
                self.remove(child)?;
            }
        }
        Ok(())
    }
}
