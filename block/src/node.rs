//! The block node graph, as QEMU has it.
//!
//! Opening an image adds, per layer of its chain, a format node (`raw` or
//! `qcow2`) whose `file` child is a `file` protocol node, and links each format
//! node to the format node of its backing image. Nodes are held by name; nodes
//! opened implicitly (children, backing layers) and roots opened without a name
//! get QEMU-style generated names `#block<N><RR>`.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::image::{self, BackingImage, ImageAccess, ImageError, LayerInfo, OpenOptions};

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

/// How a format node holds its image.
enum NodeImage {
    /// The top of a chain: readers share the lock, discard and resize take it exclusively.
    Owned(RwLock<ImageAccess>),
    /// A backing layer, also held by the overlay above it; read-only.
    Shared(Arc<ImageAccess>),
}

/// Read access to a node's image.
pub(crate) enum AccessGuard<'a> {
    /// Through the node's lock.
    Locked(RwLockReadGuard<'a, ImageAccess>),
    /// A shared backing layer.
    Shared(&'a ImageAccess),
}

impl std::ops::Deref for AccessGuard<'_> {
    type Target = ImageAccess;

    fn deref(&self) -> &ImageAccess {
        match self {
            AccessGuard::Locked(g) => g,
            AccessGuard::Shared(a) => a,
        }
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
    /// The layer as opened; for a `file` node, that of its parent format node.
    layer: LayerInfo,
    image: Option<NodeImage>,
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

    /// The image layer as opened.
    pub fn layer(&self) -> &LayerInfo {
        &self.layer
    }

    /// Size in bytes: the virtual disk size of a format node, the file length of a `file` node.
    pub fn size(&self) -> u64 {
        match self.access() {
            Ok(access) => access.size(),
            Err(_) => std::fs::metadata(&self.filename).map_or(0, |m| m.len()),
        }
    }

    /// Shared access to the image, for reads and writes.
    pub(crate) fn access(&self) -> Result<AccessGuard<'_>, NodeError> {
        match &self.image {
            Some(NodeImage::Owned(lock)) => Ok(AccessGuard::Locked(
                lock.read().unwrap_or_else(PoisonError::into_inner),
            )),
            Some(NodeImage::Shared(access)) => Ok(AccessGuard::Shared(access)),
            None => Err(NodeError::NoImage(self.node_name.clone())),
        }
    }

    /// Exclusive access to the image, for discard and resize.
    pub(crate) fn access_mut(&self) -> Result<RwLockWriteGuard<'_, ImageAccess>, NodeError> {
        match &self.image {
            Some(NodeImage::Owned(lock)) => {
                Ok(lock.write().unwrap_or_else(PoisonError::into_inner))
            }
            Some(NodeImage::Shared(_)) => Err(NodeError::Shared(self.node_name.clone())),
            None => Err(NodeError::NoImage(self.node_name.clone())),
        }
    }

    /// Whether the node has an image to do I/O through.
    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }
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

    /// Opens the image `opts` names, adds its nodes, and returns the root format node.
    ///
    /// `node_name` names the root; every other node gets a generated name.
    pub fn open(
        &mut self,
        opts: &OpenOptions,
        node_name: Option<&str>,
    ) -> Result<Arc<BlockNode>, NodeError> {
        if let Some(name) = node_name {
            check_node_name(name)?;
            if self.get(name).is_some() {
                return Err(NodeError::Duplicate(name.to_string()));
            }
        }
        let opened = image::open(opts)?;
        let backing = opened.backing.map(|b| self.add_backing(b)).transpose()?;
        let image = NodeImage::Owned(RwLock::new(opened.access));
        Ok(self.add_layer(opened.info, image, backing, node_name))
    }

    /// Adds the nodes of a backing layer and those below it; returns the layer's node name.
    fn add_backing(&mut self, layer: BackingImage) -> Result<String, NodeError> {
        let below = layer.backing.map(|b| self.add_backing(*b)).transpose()?;
        let image = NodeImage::Shared(layer.access);
        let node = self.add_layer(layer.info, image, below, None);
        Ok(node.node_name.clone())
    }

    /// Adds a format node with its `file` node.
    fn add_layer(
        &mut self,
        layer: LayerInfo,
        image: NodeImage,
        backing: Option<String>,
        node_name: Option<&str>,
    ) -> Arc<BlockNode> {
        let file_name = self.generate_node_name();
        self.nodes.push(Arc::new(BlockNode {
            node_name: file_name.clone(),
            driver: NodeDriver::File,
            filename: layer.path.clone(),
            file: None,
            backing: None,
            read_only: layer.read_only,
            auto_named: true,
            layer: layer.clone(),
            image: None,
        }));
        let (name, auto_named) = match node_name {
            Some(name) => (name.to_string(), false),
            None => (self.generate_node_name(), true),
        };
        let node = Arc::new(BlockNode {
            node_name: name,
            driver: layer.format.into(),
            filename: layer.path.clone(),
            file: Some(file_name),
            backing,
            read_only: layer.read_only,
            auto_named,
            layer,
            image: Some(image),
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
