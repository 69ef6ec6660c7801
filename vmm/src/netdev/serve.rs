//! The network layer's answers to front-end requests.

use std::sync::atomic::Ordering;

use petrel_devices::virtio::net::format_mac;

use super::{NetLayer, NetdevError};
use crate::api::net::{NetData, NetRequest};

impl NetLayer {
    /// Serves one request.
    pub fn serve(&mut self, req: NetRequest) -> Result<Option<NetData>, NetdevError> {
        match req {
            NetRequest::Add { netdev, fd } => {
                let id = netdev["id"].as_str().unwrap_or_default().to_string();
                if self.netdevs.iter().any(|n| n.id == id) {
                    return Err(NetdevError::DuplicateId(id));
                }
                let backend = super::open_backend(&netdev, fd.and_then(|f| f.take()))?;
                self.add(&id, backend)?;
                Ok(None)
            }
            NetRequest::Del { id } => self.del(&id).map(|()| None),
            NetRequest::SetLink { name, up } => self.set_link(&name, up).map(|()| None),
            NetRequest::QueryRxFilter { name } => self
                .query_rx_filter(name.as_deref())
                .map(|f| Some(NetData::RxFilters(f))),
            NetRequest::InfoNetwork => Ok(Some(NetData::Text(self.info_network()))),
            NetRequest::HostfwdAdd { netdev, rule } => Ok(Some(NetData::Text(
                self.hostfwd_add(netdev.as_deref(), &rule),
            ))),
            NetRequest::HostfwdRemove { netdev, rule } => Ok(Some(NetData::Text(
                self.hostfwd_remove(netdev.as_deref(), &rule),
            ))),
            NetRequest::InfoUsernet => Ok(Some(NetData::Text(self.info_usernet()))),
        }
    }

    /// `netdev_del`: a netdev in use leaves its NIC without a peer and with its link down,
    /// as QEMU does; the id is free again either way.
    fn del(&mut self, id: &str) -> Result<(), NetdevError> {
        let pos = self
            .netdevs
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| NetdevError::NotFound(id.to_string()))?;
        let netdev = self.netdevs.remove(pos);
        if let Some(nic) = netdev.nic.and_then(|i| self.nics.get_mut(i)) {
            nic.control.set_backend(None);
            nic.control.set_link(false);
            nic.deleted_peer = Some(netdev.line());
        }
        Ok(())
    }

    /// `set_link` on a NIC, or on a netdev (which carries it to its NIC, as QEMU does).
    fn set_link(&mut self, name: &str, up: bool) -> Result<(), NetdevError> {
        if let Some(nic) = self.nics.iter().find(|n| n.name == name) {
            nic.control.set_link(up);
            return Ok(());
        }
        let netdev = self
            .netdevs
            .iter()
            .find(|n| n.id == name)
            .ok_or_else(|| NetdevError::NotFound(name.to_string()))?;
        if let Some(nic) = netdev.nic.and_then(|i| self.nics.get(i)) {
            nic.control.set_link(up);
        }
        Ok(())
    }

    /// `query-rx-filter`, with QEMU's errors and its re-arming of NIC_RX_FILTER_CHANGED.
    fn query_rx_filter(&self, name: Option<&str>) -> Result<Vec<serde_json::Value>, NetdevError> {
        if let Some(name) = name {
            if !self.nics.iter().any(|n| n.name == name) {
                return Err(if self.netdevs.iter().any(|n| n.id == name) {
                    NetdevError::NotNic(name.to_string())
                } else {
                    NetdevError::InvalidName(name.to_string())
                });
            }
        }
        let mut out = Vec::new();
        for nic in self
            .nics
            .iter()
            .filter(|n| name.is_none_or(|x| x == n.name))
        {
            let mut info = nic.control.rx_filter();
            if let Some(obj) = info.as_object_mut() {
                obj.insert("name".into(), nic.name.clone().into());
            }
            out.push(info);
            nic.filter_event_armed.store(true, Ordering::Release);
        }
        Ok(out)
    }

    /// HMP `info network`: the net clients in creation order, as QEMU walks them: a NIC
    /// with its peer under it, a netdev that serves no NIC on its own line.
    fn info_network(&self) -> String {
        let mut entries: Vec<(u64, String)> = Vec::new();
        for (i, nic) in self.nics.iter().enumerate() {
            let mut text = format!(
                "{}: index=0,type=nic,model=virtio-net-pci,macaddr={}\r\n",
                nic.name,
                format_mac(&nic.control.mac())
            );
            let peer = self
                .netdevs
                .iter()
                .find(|n| n.nic == Some(i))
                .map(|n| n.line())
                .or_else(|| nic.deleted_peer.clone());
            if let Some(peer) = peer {
                text.push_str(&format!(" \\ {peer}\r\n"));
            }
            entries.push((nic.seq, text));
        }
        for netdev in self.netdevs.iter().filter(|n| n.nic.is_none()) {
            entries.push((netdev.seq, format!("{}\r\n", netdev.line())));
        }
        entries.sort_by_key(|(seq, _)| *seq);
        entries.into_iter().map(|(_, text)| text).collect()
    }
}
