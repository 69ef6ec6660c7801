//! The VMM's block layer: the node graph, the block backends (QEMU's BlockBackend: a drive
//! id, or anonymous for a device on a `-blockdev` node), and the disks attached to guest
//! devices. Built from `-drive`/`-blockdev`, changed by QMP, owned by the control thread;
//! the devices' I/O threads share the backends.

pub mod attach;
mod open;
pub mod query;
mod serve;

use std::sync::{Arc, Mutex};

use petrel_block::node::NodeError;
use petrel_block::throttle::{ThrottleConfig, ThrottleError};
use petrel_block::{BackendError, BlockBackend, BlockGraph, ImageError};
use petrel_devices::virtio::block::{DiskControl, ErrorPolicy, VirtioBlock};
use petrel_devices::virtio::VirtioPciDevice;
use thiserror::Error;

use crate::cli::config::CacheConfig;

pub use open::FileNode;

/// Errors of the block layer, worded as QEMU words them where QEMU has the case.
#[derive(Debug, Error)]
pub enum BlockdevError {
    /// Opening or changing a node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The image could not be opened.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A backend operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Bad throttling limits.
    #[error(transparent)]
    Throttle(#[from] ThrottleError),
    /// No drive has this id.
    #[error("Device '{0}' not found")]
    DeviceNotFound(String),
    /// Neither a drive nor a node has this name (`bdrv_lookup_bs`).
    #[error("Cannot find device='{device}' nor node-name='{node}'")]
    NotFound {
        /// The drive id asked for.
        device: String,
        /// The node name asked for.
        node: String,
    },
    /// The QOM device has no block backend (a PCI proxy rather than the virtio backend).
    #[error("Device does not have a block device backend")]
    NoBackend,
    /// The disk is not removable (virtio disks never are).
    #[error("Device '{0}' is not removable")]
    NotRemovable(String),
    /// `block_passwd` on an image that is not encrypted (petrel opens no encrypted ones).
    #[error("Device '{0}' is not encrypted")]
    NotEncrypted(String),
    /// Unsupported `-blockdev`/`blockdev-add` options.
    #[error("{0}")]
    Unsupported(String),
    /// The node is already a backend's root, or used by a device.
    #[error("Node '{0}' is busy")]
    Busy(String),
    /// A node name is taken.
    #[error("Duplicate nodes with node-name='{0}'")]
    Duplicate(String),
    /// blockdev-del of an unknown node.
    #[error("Failed to find node with node-name='{0}'")]
    NoSuchNode(String),
    /// A node referenced by name does not exist.
    #[error("Cannot find node {0}")]
    UnknownReference(String),
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

impl BlockdevError {
    /// Whether QMP reports this as `DeviceNotFound` rather than `GenericError`.
    pub fn is_device_not_found(&self) -> bool {
        matches!(self, BlockdevError::DeviceNotFound(_))
    }
}

/// A guest device attached to a disk.
pub struct AttachedDevice {
    /// `-device id=`.
    pub id: Option<String>,
    /// QOM path of the PCI function (`/machine/peripheral/ID`,
    /// `/machine/peripheral-anon/device[N]`).
    pub qom_path: String,
    /// Where it sits on bus 0.
    pub devfn: u8,
    /// The function.
    pub pci: Arc<Mutex<VirtioPciDevice>>,
}

impl AttachedDevice {
    /// QEMU's `qdev` of query-block: the virtio backend under the PCI proxy.
    pub fn qdev(&self) -> String {
        format!("{}/virtio-backend", self.qom_path)
    }

    /// Runs `f` on the virtio-blk model inside the function.
    pub fn with_block<T>(&self, f: impl FnOnce(&mut VirtioBlock) -> T) -> Option<T> {
        let mut pci = self.pci.lock().unwrap_or_else(|e| e.into_inner());
        pci.device_mut()
            .as_any_mut()
            .downcast_mut::<VirtioBlock>()
            .map(f)
    }
}

/// A block backend and what hangs off it.
pub struct Disk {
    /// The drive id; empty for a device on a `-blockdev` node, as in QEMU.
    pub name: String,
    /// The backend.
    pub backend: Arc<BlockBackend>,
    /// Cache flags (`cache=`), for query-block.
    pub cache: CacheConfig,
    /// `discard=unmap`.
    pub discard: bool,
    /// `-drive serial=`.
    pub serial: Option<String>,
    /// Error policy and I/O status, shared with the device's I/O thread.
    pub control: Arc<DiskControl>,
    /// The guest device, once attached.
    pub device: Option<AttachedDevice>,
}

/// The block layer.
pub struct BlockLayer {
    graph: BlockGraph,
    disks: Vec<Disk>,
    file_nodes: Vec<FileNode>,
    /// Format nodes added with `discard: unmap`; a device on any other node ignores
    /// discards, as QEMU's default `discard: ignore` does.
    unmap_nodes: Vec<String>,
    events: Arc<dyn petrel_devices::virtio::block::DiskEvents>,
}

/// Builds a [`ThrottleConfig`] from `(QMP member, value)` pairs.
pub fn throttle_config(limits: &[(String, u64)]) -> Result<ThrottleConfig, BlockdevError> {
    let mut c = ThrottleConfig::default();
    for (member, v) in limits {
        let signed = i64::try_from(*v).unwrap_or(i64::MAX);
        match member.as_str() {
            "bps" => c.bps = signed,
            "bps_rd" => c.bps_rd = signed,
            "bps_wr" => c.bps_wr = signed,
            "iops" => c.iops = signed,
            "iops_rd" => c.iops_rd = signed,
            "iops_wr" => c.iops_wr = signed,
            "bps_max" => c.bps_max = signed,
            "bps_rd_max" => c.bps_rd_max = signed,
            "bps_wr_max" => c.bps_wr_max = signed,
            "iops_max" => c.iops_max = signed,
            "iops_rd_max" => c.iops_rd_max = signed,
            "iops_wr_max" => c.iops_wr_max = signed,
            "bps_max_length" => c.bps_max_length = *v,
            "bps_rd_max_length" => c.bps_rd_max_length = *v,
            "bps_wr_max_length" => c.bps_wr_max_length = *v,
            "iops_max_length" => c.iops_max_length = *v,
            "iops_rd_max_length" => c.iops_rd_max_length = *v,
            "iops_wr_max_length" => c.iops_wr_max_length = *v,
            "iops_size" => c.iops_size = *v,
            other => return Err(BlockdevError::Other(format!("unknown limit '{other}'"))),
        }
    }
    c.validate()?;
    Ok(c)
}

impl BlockLayer {
    /// An empty layer whose disks report I/O errors to `events`, and whose nodes report
    /// passed write thresholds to `thresholds`.
    pub fn new(
        events: Arc<dyn petrel_devices::virtio::block::DiskEvents>,
        thresholds: petrel_block::WriteThresholdNotifier,
    ) -> Self {
        let graph = BlockGraph::new();
        graph.set_write_threshold_notifier(Some(thresholds));
        BlockLayer {
            graph,
            disks: Vec::new(),
            file_nodes: Vec::new(),
            unmap_nodes: Vec::new(),
            events,
        }
    }

    /// Every backend, in creation order.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// The disk whose backend is the drive `name` (not an anonymous one).
    pub fn drive(&self, name: &str) -> Option<&Disk> {
        self.disks
            .iter()
            .find(|d| !d.name.is_empty() && d.name == name)
    }

    /// The disk index for a device's `drive=`: a drive id, or a node name (which gets a new
    /// anonymous backend, as `-device ...,drive=NODE` does in QEMU).
    pub fn backend_for_device(&mut self, drive: &str) -> Result<usize, BlockdevError> {
        if let Some(i) = self.disks.iter().position(|d| d.name == drive) {
            return Ok(i);
        }
        let node = self
            .graph
            .get(drive)
            .ok_or_else(|| BlockdevError::UnknownReference(drive.to_string()))?;
        if self
            .disks
            .iter()
            .any(|d| d.backend.root().node_name() == drive)
        {
            return Err(BlockdevError::Busy(drive.to_string()));
        }
        let backend = BlockBackend::new("", node, false)?;
        let discard = self.unmap_nodes.iter().any(|n| n == drive);
        self.push_disk(
            String::new(),
            Arc::new(backend),
            CacheConfig::default(),
            discard,
            None,
            ErrorPolicy::default(),
        )?;
        Ok(self.disks.len() - 1)
    }

    /// Attaches `device` to disk `index`.
    pub fn attach(&mut self, index: usize, device: AttachedDevice) {
        self.disks[index].device = Some(device);
    }

    /// The disk at `index`.
    pub fn disk(&self, index: usize) -> &Disk {
        &self.disks[index]
    }

    #[allow(clippy::too_many_arguments)]
    fn push_disk(
        &mut self,
        name: String,
        backend: Arc<BlockBackend>,
        cache: CacheConfig,
        discard: bool,
        serial: Option<String>,
        policy: ErrorPolicy,
    ) -> Result<(), BlockdevError> {
        let control = DiskControl::new(policy, self.events.clone())
            .map_err(|e| BlockdevError::Other(format!("cannot create an eventfd: {e}")))?;
        self.disks.push(Disk {
            name,
            backend,
            cache,
            discard,
            serial,
            control: Arc::new(control),
            device: None,
        });
        Ok(())
    }

    /// Writes every disk's cached image metadata to its files, before petrel exits: imago
    /// keeps L2 and refcount updates in memory until a flush, and a guest need not have
    /// flushed.
    pub fn flush_all(&self) {
        for d in &self.disks {
            if d.backend.is_read_only() {
                continue;
            }
            if let Err(e) = d.backend.flush() {
                eprintln!(
                    "petrel: cannot flush disk '{}' ({}): {}",
                    d.name,
                    d.backend.root().node_name(),
                    crate::error_text(&e)
                );
            }
        }
    }

    /// The VM resumed: every disk held by an error stop retries its request.
    pub fn resume(&self) {
        for d in &self.disks {
            d.control.resume();
        }
    }

    /// Finds a backend by drive id (`device`) or by the QOM id/path of its device (`id`), as
    /// QEMU's `qmp_get_blk` does.
    pub fn find_disk(
        &self,
        device: Option<&str>,
        id: Option<&str>,
    ) -> Result<&Disk, BlockdevError> {
        match (device, id) {
            (Some(name), _) => self
                .drive(name)
                .ok_or_else(|| BlockdevError::DeviceNotFound(name.to_string())),
            (None, Some(id)) => {
                let by_backend = self.disks.iter().find(|d| {
                    d.device
                        .as_ref()
                        .is_some_and(|dev| dev.qdev() == id || dev.qdev() == format!("/{id}"))
                });
                if let Some(d) = by_backend {
                    return Ok(d);
                }
                let proxy = self.disks.iter().any(|d| {
                    d.device
                        .as_ref()
                        .is_some_and(|dev| dev.id.as_deref() == Some(id) || dev.qom_path == id)
                });
                if proxy {
                    Err(BlockdevError::NoBackend)
                } else {
                    Err(BlockdevError::DeviceNotFound(id.to_string()))
                }
            }
            (None, None) => Err(BlockdevError::Other(
                "Need exactly one of 'device' and 'id'".into(),
            )),
        }
    }

    /// The root node of drive `device`, or the node `node_name` (QEMU's `bdrv_lookup_bs`).
    pub fn lookup_node(
        &self,
        device: Option<&str>,
        node_name: Option<&str>,
    ) -> Result<Arc<petrel_block::BlockNode>, BlockdevError> {
        if let Some(d) = device.and_then(|name| self.drive(name)) {
            return Ok(d.backend.root().clone());
        }
        if let Some(node) = node_name.and_then(|n| self.graph.get(n)) {
            return Ok(node);
        }
        Err(BlockdevError::NotFound {
            device: device.unwrap_or_default().to_string(),
            node: node_name.unwrap_or_default().to_string(),
        })
    }

    /// `block_resize`: grows (or shrinks) the image and tells the guest.
    pub fn resize(
        &self,
        device: Option<&str>,
        node_name: Option<&str>,
        size: i64,
    ) -> Result<(), BlockdevError> {
        let node = self.lookup_node(device, node_name)?;
        if size < 0 {
            return Err(BlockdevError::Other(
                "Parameter 'size' expects a >0 size".into(),
            ));
        }
        if size % 512 != 0 {
            return Err(BlockdevError::Other(
                "The new size must be a multiple of 512".into(),
            ));
        }
        match self
            .disks
            .iter()
            .find(|d| Arc::ptr_eq(d.backend.root(), &node))
        {
            Some(disk) => {
                disk.backend.resize(size as u64)?;
                if let Some(dev) = &disk.device {
                    dev.with_block(|blk| blk.resize_notify());
                }
            }
            // A node without a device is resized through a backend of its own, as QEMU
            // does.
            None => BlockBackend::new("", node, false)?.resize(size as u64)?,
        }
        Ok(())
    }

    /// `block_set_io_throttle`.
    pub fn set_throttle(
        &self,
        device: Option<&str>,
        id: Option<&str>,
        config: ThrottleConfig,
    ) -> Result<(), BlockdevError> {
        let disk = self.find_disk(device, id)?;
        disk.backend.set_throttle(config)?;
        Ok(())
    }

    /// `block-set-write-threshold`.
    pub fn set_write_threshold(
        &self,
        node_name: &str,
        threshold: u64,
    ) -> Result<(), BlockdevError> {
        let node = self
            .graph
            .get(node_name)
            .ok_or_else(|| BlockdevError::Other(format!("Device '{node_name}' not found")))?;
        node.set_write_threshold(threshold);
        Ok(())
    }

    /// `change-backing-file`.
    pub fn change_backing_file(
        &mut self,
        device: &str,
        image_node_name: Option<&str>,
        backing_file: &str,
    ) -> Result<(), BlockdevError> {
        let root = self
            .drive(device)
            .map(|d| d.backend.root().clone())
            .ok_or_else(|| BlockdevError::DeviceNotFound(device.to_string()))?;
        let image = match image_node_name {
            Some(name) => self
                .graph
                .get(name)
                .ok_or_else(|| BlockdevError::NotFound {
                    device: String::new(),
                    node: name.to_string(),
                })?,
            None => root.clone(),
        };
        if image.backing_child().is_none() {
            return Err(BlockdevError::Other(
                "not allowing backing file change on an image without a backing file".into(),
            ));
        }
        let mut in_chain = false;
        let mut next = Some(root);
        while let Some(n) = next {
            if n.node_name() == image.node_name() {
                in_chain = true;
                break;
            }
            next = n.backing_child().and_then(|b| self.graph.get(b));
        }
        if !in_chain {
            return Err(BlockdevError::Other(format!(
                "'{device}' and image file are not in the same chain"
            )));
        }
        self.graph
            .change_backing_file(image.node_name(), backing_file)?;
        Ok(())
    }

    /// `eject` and the tray commands: virtio disks have no tray and are not removable.
    pub fn check_removable(
        &self,
        device: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), BlockdevError> {
        let disk = self.find_disk(device, id)?;
        Err(BlockdevError::NotRemovable(disk.name.clone()))
    }
}
