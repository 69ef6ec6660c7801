//! Opening an image into the graph, with `-blockdev`'s naming and backing options.

use std::fs::File;
use std::sync::Arc;

use super::{check_node_name, BlockGraph, BlockNode, NodeError};
use crate::image::{self, BackingImage, BackingSource, OpenOptions};

/// Where a qcow2 node's backing layer comes from (`-blockdev ...,backing=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackingOption {
    /// The file the image header names, opened with its own chain (the default).
    #[default]
    FromHeader,
    /// No backing layer (`backing: null`): unallocated clusters read as zeroes.
    None,
    /// The open format node of this name, which must be read-only.
    Node(String),
}

/// How to name and link the nodes of an opened image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeOptions {
    /// The format node's name; generated if `None`.
    pub node_name: Option<String>,
    /// The `file` child's name (`-blockdev driver=file,node-name=F` then `file=F`);
    /// generated if `None`.
    pub file_node_name: Option<String>,
    /// The backing layer.
    pub backing: BackingOption,
}

impl BlockGraph {
    /// Fails unless `name` is a well-formed node name no node has.
    fn check_free(&self, name: &str) -> Result<(), NodeError> {
        check_node_name(name)?;
        if self.get(name).is_some() {
            return Err(NodeError::Duplicate(name.to_string()));
        }
        Ok(())
    }

    /// Opens the image `opts` names, adds its nodes named and linked as `names` says, and
    /// returns the format node.
    ///
    /// Nodes opened for the backing chain of [`BackingOption::FromHeader`] get generated
    /// names. A node linked by [`BackingOption::Node`] must be a read-only format node:
    /// imago shares it with the overlay, which must not see it change.
    pub fn open_with(
        &mut self,
        opts: &OpenOptions,
        names: &NodeOptions,
    ) -> Result<Arc<BlockNode>, NodeError> {
        self.open_with_host_file(opts, names, None)
    }

    /// [`BlockGraph::open_with`], the format node and its `file` node reading the host
    /// file's length and allocation through `host_file` if given.
    pub(super) fn open_with_host_file(
        &mut self,
        opts: &OpenOptions,
        names: &NodeOptions,
        host_file: Option<Arc<File>>,
    ) -> Result<Arc<BlockNode>, NodeError> {
        for name in [&names.node_name, &names.file_node_name]
            .into_iter()
            .flatten()
        {
            self.check_free(name)?;
        }
        if let (Some(node), Some(file)) = (&names.node_name, &names.file_node_name) {
            if node == file {
                return Err(NodeError::Duplicate(file.clone()));
            }
        }
        let (source, linked) = match &names.backing {
            BackingOption::FromHeader => (BackingSource::FromHeader, None),
            BackingOption::None => (BackingSource::None, None),
            BackingOption::Node(name) => {
                let node = self
                    .get(name)
                    .ok_or_else(|| NodeError::BackingNotFound(name.clone()))?;
                if !node.read_only() {
                    return Err(NodeError::BackingNotReadOnly(name.clone()));
                }
                let image = node
                    .shared_image()
                    .ok_or_else(|| NodeError::NoImage(name.clone()))?;
                (BackingSource::Image(image), Some(name.clone()))
            }
        };
        let opened = image::open_with(opts, source)?;
        let backing = match opened.backing {
            Some(layer) => Some(self.add_backing(layer)),
            None => linked,
        };
        Ok(self.add_layer(
            opened.info,
            Arc::new(opened.access),
            backing,
            names.node_name.as_deref(),
            names.file_node_name.as_deref(),
            host_file,
        ))
    }

    /// Adds the nodes of a backing layer and those below it; returns the layer's node name.
    fn add_backing(&mut self, layer: BackingImage) -> String {
        let below = layer.backing.map(|b| self.add_backing(*b));
        let node = self.add_layer(layer.info, layer.access, below, None, None, None);
        node.node_name().to_string()
    }
}
