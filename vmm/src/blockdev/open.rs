//! Opening images: `-drive`, and `-blockdev`/`blockdev-add` options.

use std::path::PathBuf;
use std::sync::Arc;

use petrel_block::{BackingOption, BlockBackend, ImageFormat, NodeOptions, OpenOptions};
use petrel_qmp::schema::types::{
    BlockdevDetectZeroesOptions, BlockdevDiscardOptions, BlockdevOptions, BlockdevOptionsBranch,
    BlockdevRef, BlockdevRefOrNull,
};

use super::{throttle_config, BlockLayer, BlockdevError};
use crate::cli::config::{CacheConfig, DriveConfig};

/// A `driver=file` node waiting for a format node to take it as its `file` child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    /// Its name.
    pub node_name: String,
    /// The host file.
    pub filename: PathBuf,
    /// `read-only`.
    pub read_only: bool,
    /// `cache.direct`.
    pub direct: bool,
}

fn format(name: Option<&str>) -> Result<Option<ImageFormat>, BlockdevError> {
    name.map(|f| f.parse::<ImageFormat>().map_err(BlockdevError::from))
        .transpose()
}

impl BlockLayer {
    /// Opens a `-drive`: its image (with its backing chain) as nodes, and a backend named by
    /// its id.
    ///
    /// With `snapshot=on`, as in QEMU, the image is opened read-only (keeping `node-name=`)
    /// and the backend gets a temporary qcow2 overlay over it, which takes the guest's
    /// writes and ignores its flushes (QEMU's `cache=unsafe` for temporary files).
    pub fn open_drive(&mut self, d: &DriveConfig) -> Result<(), BlockdevError> {
        if let Some(name) = &d.node_name {
            self.check_free_name(name)?;
        }
        let opts = OpenOptions {
            path: d.file.clone(),
            format: format(d.format.as_deref())?,
            read_only: d.read_only || d.snapshot,
            direct: d.cache.direct,
        };
        let mut root = self.graph.open(&opts, d.node_name.as_deref())?;
        let mut cache = d.cache;
        if d.snapshot {
            let image = root.node_name().to_string();
            root = match self.graph.append_temp_snapshot(&image, d.read_only) {
                Ok(overlay) => overlay,
                Err(e) => {
                    // Take the image's nodes out again, as a failed open leaves none.
                    drop(root);
                    let _ = self.graph.remove(&image);
                    return Err(e.into());
                }
            };
            cache = CacheConfig {
                direct: false,
                no_flush: true,
                ..d.cache
            };
        }
        let backend = BlockBackend::new(d.id.clone(), root, d.read_only)?;
        if !d.throttle.is_empty() {
            backend.set_throttle(throttle_config(&d.throttle)?)?;
        }
        self.push_disk(
            d.id.clone(),
            Arc::new(backend),
            cache,
            d.discard_unmap,
            d.serial.clone(),
            d.error_policy,
        )
    }

    /// Fails if `name` is taken by a node or a pending file node.
    fn check_free_name(&self, name: &str) -> Result<(), BlockdevError> {
        petrel_block::node::check_node_name(name)?;
        if self.graph.get(name).is_some() || self.file_nodes.iter().any(|f| f.node_name == name) {
            return Err(BlockdevError::Duplicate(name.to_string()));
        }
        Ok(())
    }

    /// `-blockdev` and `blockdev-add`: adds the node `opts` describes.
    pub fn add_blockdev(&mut self, opts: &BlockdevOptions) -> Result<(), BlockdevError> {
        let node_name = opts
            .node_name
            .clone()
            .ok_or_else(|| BlockdevError::Other("node-name is required".into()))?;
        self.check_free_name(&node_name)?;
        if opts
            .detect_zeroes
            .is_some_and(|d| d != BlockdevDetectZeroesOptions::Off)
        {
            return Err(BlockdevError::Unsupported(
                "detect-zeroes is not supported (only 'off')".into(),
            ));
        }
        let read_only = opts.read_only.unwrap_or(false);
        let direct = opts.cache.as_ref().and_then(|c| c.direct).unwrap_or(false);
        if opts.cache.as_ref().and_then(|c| c.no_flush) == Some(true) {
            return Err(BlockdevError::Unsupported(
                "cache.no-flush=on is only supported with -drive cache=unsafe".into(),
            ));
        }
        match &opts.branch {
            BlockdevOptionsBranch::File(f) => {
                self.file_nodes.push(FileNode {
                    node_name,
                    filename: PathBuf::from(&f.filename),
                    read_only,
                    direct,
                });
                Ok(())
            }
            _ => {
                self.add_format_node(opts, &node_name, read_only)?;
                if opts.discard == Some(BlockdevDiscardOptions::Unmap) {
                    self.unmap_nodes.push(node_name);
                }
                Ok(())
            }
        }
    }

    /// A raw or qcow2 node of `blockdev-add`.
    fn add_format_node(
        &mut self,
        opts: &BlockdevOptions,
        node_name: &str,
        read_only: bool,
    ) -> Result<(), BlockdevError> {
        let node_name = node_name.to_string();
        match &opts.branch {
            BlockdevOptionsBranch::Raw(r) => {
                if r.offset.is_some() || r.size.is_some() {
                    return Err(BlockdevError::Unsupported(
                        "raw 'offset' and 'size' are not supported".into(),
                    ));
                }
                self.open_format(
                    &node_name,
                    ImageFormat::Raw,
                    &r.file,
                    // Raw images have no backing file.
                    BackingOption::FromHeader,
                    read_only,
                )
            }
            BlockdevOptionsBranch::Qcow2(q) => {
                let backing = match &q.backing {
                    None => BackingOption::FromHeader,
                    Some(BlockdevRefOrNull::Null(())) => BackingOption::None,
                    Some(BlockdevRefOrNull::Reference(r)) if r.is_empty() => BackingOption::None,
                    Some(BlockdevRefOrNull::Reference(r)) => BackingOption::Node(r.clone()),
                    Some(BlockdevRefOrNull::Definition(_)) => {
                        return Err(BlockdevError::Unsupported(
                            "an inline backing node definition is not supported; \
                             add it with its own node-name and refer to it"
                                .into(),
                        ))
                    }
                };
                self.open_format(&node_name, ImageFormat::Qcow2, &q.file, backing, read_only)
            }
            other => Err(BlockdevError::Unsupported(format!(
                "driver '{}' is not supported",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["driver"].as_str().map(str::to_string))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Opens a format node over `file` (a pending file node or an inline `driver=file`).
    fn open_format(
        &mut self,
        node_name: &str,
        format: ImageFormat,
        file: &BlockdevRef,
        backing: BackingOption,
        read_only: bool,
    ) -> Result<(), BlockdevError> {
        let (file_node, file_name) = match file {
            BlockdevRef::Reference(name) => {
                let pos = self
                    .file_nodes
                    .iter()
                    .position(|f| &f.node_name == name)
                    .ok_or_else(|| {
                        if self.graph.get(name).is_some() {
                            BlockdevError::Busy(name.clone())
                        } else {
                            BlockdevError::UnknownReference(name.clone())
                        }
                    })?;
                (self.file_nodes[pos].clone(), Some(pos))
            }
            BlockdevRef::Definition(def) => match &def.branch {
                BlockdevOptionsBranch::File(f) => {
                    if let Some(n) = &def.node_name {
                        self.check_free_name(n)?;
                    }
                    (
                        FileNode {
                            node_name: def.node_name.clone().unwrap_or_default(),
                            filename: PathBuf::from(&f.filename),
                            read_only: def.read_only.unwrap_or(read_only),
                            direct: def.cache.as_ref().and_then(|c| c.direct).unwrap_or(false),
                        },
                        None,
                    )
                }
                _ => {
                    return Err(BlockdevError::Unsupported(
                        "the 'file' child must be a node with driver 'file'".into(),
                    ))
                }
            },
        };
        let opts = OpenOptions {
            path: file_node.filename.clone(),
            format: Some(format),
            read_only: read_only || file_node.read_only,
            direct: file_node.direct,
        };
        let file_child = (!file_node.node_name.is_empty()).then_some(file_node.node_name.as_str());
        self.open_nodes(&opts, node_name, file_child, backing)?;
        if let Some(pos) = file_name {
            self.file_nodes.remove(pos);
        }
        Ok(())
    }
}

impl BlockLayer {
    /// Opens the format node `node_name` (and its `file` child, named `file_child` if given).
    fn open_nodes(
        &mut self,
        opts: &OpenOptions,
        node_name: &str,
        file_child: Option<&str>,
        backing: BackingOption,
    ) -> Result<(), BlockdevError> {
        let names = NodeOptions {
            node_name: Some(node_name.to_string()),
            file_node_name: file_child.map(str::to_string),
            backing,
        };
        self.graph.open_with(opts, &names)?;
        Ok(())
    }
}
