//! `change-backing-file`: rewriting the backing file name a qcow2 node's header records.
//!
//! Only the name changes: the node keeps its backing layer, and the backing format
//! extension stays as it is. (QEMU 7.2 also writes the image's own format as the
//! backing format, which breaks a qcow2 over a raw base; petrel keeps the recorded one.)

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{BlockGraph, BlockNode, NodeError};
use crate::errno;
use crate::header;
use crate::image::{self, resolve_backing, BackingSource, ImageAccess, OpenOptions};

/// Why `change-backing-file` failed, in QEMU's words.
#[derive(Debug, thiserror::Error)]
pub enum BackingFileError {
    /// No node has that name.
    #[error("Cannot find device='' nor node-name='{0}'")]
    NotFound(String),
    /// The node has no backing layer (raw nodes never have one).
    #[error("not allowing backing file change on an image without a backing file")]
    NoBacking,
    /// Writing the header failed; `errno` says why (`EINVAL`: name over 1023 bytes,
    /// `ENOSPC`: it does not fit in the header cluster).
    #[error("Could not change backing file to '{backing_file}': {}", errno::strerror(*.errno))]
    Failed {
        /// The name asked for.
        backing_file: String,
        /// What went wrong.
        errno: i32,
    },
}

impl BlockGraph {
    /// Records `backing_file` as the backing file name in the header of the qcow2 node
    /// `image_node_name` (QMP `change-backing-file`); an empty name removes it.
    ///
    /// A writable node's image is flushed and reopened over the same backing layer, since
    /// imago keeps the header it read and writes parts of it back. The caller checks that
    /// the node is in the chain of the device the command names.
    pub fn change_backing_file(
        &self,
        image_node_name: &str,
        backing_file: &str,
    ) -> Result<(), NodeError> {
        let node = self
            .get(image_node_name)
            .ok_or_else(|| BackingFileError::NotFound(image_node_name.to_string()))?;
        let below = node.backing_child().and_then(|name| self.get(name));
        let Some(below) = below else {
            return Err(BackingFileError::NoBacking.into());
        };
        let failed = |e: io::Error| BackingFileError::Failed {
            backing_file: backing_file.to_string(),
            errno: errno::of_io(&e),
        };
        let path = node.filename().to_path_buf();
        if node.read_only() {
            // imago opened it read-only and never writes its header.
            header::set_backing_name(&path, backing_file).map_err(failed)?;
        } else {
            let backing = below.shared_image();
            node.replace_image(|image| {
                image.flush().map_err(failed)?;
                header::set_backing_name(&path, backing_file).map_err(failed)?;
                Ok(((), Some(reopen(&node, backing)?)))
            })?;
        }
        node.update_layer(|layer| {
            let name = (!backing_file.is_empty()).then(|| backing_file.to_string());
            layer.full_backing_filename = name.as_deref().map(|n| resolve_backing(&path, n));
            // As in QEMU, the node's backing link is now judged against the new name.
            layer.auto_backing_file = name.clone();
            layer.backing_filename = name;
        });
        Ok(())
    }
}

/// Opens `node`'s image again, read-write, over `backing`.
fn reopen(node: &BlockNode, backing: Option<Arc<ImageAccess>>) -> Result<ImageAccess, NodeError> {
    let layer = node.layer();
    let opts = OpenOptions {
        path: Path::new(&layer.path).to_path_buf(),
        format: Some(layer.format),
        read_only: false,
        direct: layer.direct,
    };
    let source = backing.map_or(BackingSource::None, BackingSource::Image);
    Ok(image::open_with(&opts, source)?.access)
}
