//! Serving block-layer requests from front ends.

use petrel_qmp::schema::types::BlockdevOptions;

use super::{BlockLayer, BlockdevError};
use crate::api::block::{BlockData, BlockRequest};

impl BlockLayer {
    /// Carries out `req`; `Ok(None)` is a success without data.
    pub fn serve(&mut self, req: BlockRequest) -> Result<Option<BlockData>, BlockdevError> {
        match req {
            BlockRequest::QueryBlock => Ok(Some(BlockData::Info(self.query_block()))),
            BlockRequest::QueryStats { nodes } => {
                Ok(Some(BlockData::Stats(self.query_blockstats(nodes))))
            }
            BlockRequest::QueryNodes => Ok(Some(BlockData::Nodes(self.query_named_nodes()))),
            BlockRequest::Resize {
                device,
                node_name,
                size,
            } => self
                .resize(device.as_deref(), node_name.as_deref(), size)
                .map(|()| None),
            BlockRequest::SetThrottle { device, id, config } => self
                .set_throttle(device.as_deref(), id.as_deref(), config)
                .map(|()| None),
            BlockRequest::Add(json) => {
                let opts: BlockdevOptions = serde_json::from_value(json)
                    .map_err(|e| BlockdevError::Other(e.to_string()))?;
                self.add_blockdev(&opts).map(|()| None)
            }
            BlockRequest::Del { node_name } => self.del_node(&node_name).map(|()| None),
            BlockRequest::ChangeBackingFile {
                device,
                image_node_name,
                backing_file,
            } => self
                .change_backing_file(&device, image_node_name.as_deref(), &backing_file)
                .map(|()| None),
            BlockRequest::SetWriteThreshold {
                node_name,
                threshold,
            } => self
                .set_write_threshold(&node_name, threshold)
                .map(|()| None),
            BlockRequest::Removable { device, id } => self
                .check_removable(device.as_deref(), id.as_deref())
                .map(|()| None),
            BlockRequest::Passwd { device, node_name } => {
                let node = self.lookup_node(Some(&device), node_name.as_deref())?;
                Err(BlockdevError::NotEncrypted(
                    if self.drive(&device).is_some() {
                        device
                    } else {
                        node.node_name().to_string()
                    },
                ))
            }
        }
    }

    /// `x-blockdev-del`: removes a node added with `-blockdev`/`blockdev-add` that no device
    /// and no other node uses.
    fn del_node(&mut self, name: &str) -> Result<(), BlockdevError> {
        if let Some(pos) = self.file_nodes.iter().position(|f| f.node_name == name) {
            self.file_nodes.remove(pos);
            return Ok(());
        }
        let node = self
            .graph
            .get(name)
            .ok_or_else(|| BlockdevError::NoSuchNode(name.to_string()))?;
        if node.auto_named() {
            return Err(BlockdevError::NoSuchNode(name.to_string()));
        }
        if self
            .disks
            .iter()
            .any(|d| d.backend.root().node_name() == name)
        {
            return Err(BlockdevError::Busy(name.to_string()));
        }
        drop(node);
        self.graph.remove(name)?;
        self.unmap_nodes.retain(|n| n != name);
        Ok(())
    }
}
