//! The receive filter the driver programs through the control queue, and
//! the decision it makes on each received frame (QEMU's
//! `receive_filter`).

use serde::{Deserialize, Serialize};

use super::info::{format_mac, RxFilterInfo, RxState};

/// Addresses the MAC table holds, unicast and multicast together.
pub const MAC_TABLE_ENTRIES: usize = 64;
/// VLAN ids (802.1Q).
pub const MAX_VLAN: u16 = 4096;
/// Words of the VLAN bitmap.
const VLAN_WORDS: usize = MAX_VLAN as usize / 32;

const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethertype of an 802.1Q tag.
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];

/// The receive filter, as QEMU's `VirtIONet` keeps it; also what a
/// snapshot saves of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxFilter {
    /// The NIC's address (the driver may change it).
    pub mac: [u8; 6],
    /// Every frame passes.
    pub promisc: bool,
    /// Every multicast frame passes.
    pub allmulti: bool,
    /// Every unicast frame passes.
    pub alluni: bool,
    /// No multicast frame passes (broadcasts aside).
    pub nomulti: bool,
    /// No unicast frame passes.
    pub nouni: bool,
    /// No broadcast frame passes.
    pub nobcast: bool,
    /// Extra unicast addresses that pass.
    pub unicast: Vec<[u8; 6]>,
    /// Multicast addresses that pass.
    pub multicast: Vec<[u8; 6]>,
    /// The driver gave too many unicast addresses: all pass.
    pub uni_overflow: bool,
    /// The driver gave too many multicast addresses: all pass.
    pub multi_overflow: bool,
    /// VLAN ids that pass, one bit each (`MAX_VLAN / 32` words, bit
    /// `id % 32` of word `id / 32`).
    pub vlans: Vec<u32>,
}

impl RxFilter {
    /// The filter of a device that was just reset, with address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        RxFilter {
            mac,
            // Compatibility mode until the driver says otherwise, as QEMU.
            promisc: true,
            allmulti: false,
            alluni: false,
            nomulti: false,
            nouni: false,
            nobcast: false,
            unicast: Vec::new(),
            multicast: Vec::new(),
            uni_overflow: false,
            multi_overflow: false,
            vlans: vec![0; VLAN_WORDS],
        }
    }

    /// Sets every VLAN id to pass (`on`) or none: what accepting the
    /// features does, all when the driver did not take
    /// `VIRTIO_NET_F_CTRL_VLAN`.
    pub fn set_all_vlans(&mut self, on: bool) {
        let word = if on { u32::MAX } else { 0 };
        self.vlans = vec![word; VLAN_WORDS];
    }

    /// Whether VLAN `id` passes.
    pub fn vlan(&self, id: u16) -> bool {
        let word = self.vlans.get(usize::from(id) / 32).copied().unwrap_or(0);
        word & (1 << (id % 32)) != 0
    }

    /// Lets VLAN `id` (below [`MAX_VLAN`]) pass or not.
    pub fn set_vlan(&mut self, id: u16, on: bool) {
        if let Some(word) = self.vlans.get_mut(usize::from(id) / 32) {
            if on {
                *word |= 1 << (id % 32);
            } else {
                *word &= !(1 << (id % 32));
            }
        }
    }

    /// Brings a restored filter back within bounds (the bitmap's size, the
    /// table's capacity).
    pub fn normalise(&mut self) {
        self.vlans.resize(VLAN_WORDS, 0);
        self.unicast.truncate(MAC_TABLE_ENTRIES);
        self.multicast
            .truncate(MAC_TABLE_ENTRIES - self.unicast.len());
    }

    /// Whether the Ethernet frame `frame` (without the virtio-net header)
    /// passes. Bytes a runt frame lacks read as zero.
    pub fn accepts(&self, frame: &[u8]) -> bool {
        if self.promisc {
            return true;
        }
        let byte = |i: usize| frame.get(i).copied().unwrap_or(0);
        if [byte(12), byte(13)] == ETH_P_8021Q {
            let id = u16::from_be_bytes([byte(14), byte(15)]) & 0xfff;
            if !self.vlan(id) {
                return false;
            }
        }
        let mut dest = [0u8; 6];
        for (i, b) in dest.iter_mut().enumerate() {
            *b = byte(i);
        }
        if dest[0] & 1 != 0 {
            if dest == BROADCAST {
                !self.nobcast
            } else if self.nomulti {
                false
            } else {
                self.allmulti || self.multi_overflow || self.multicast.contains(&dest)
            }
        } else if self.nouni {
            false
        } else {
            self.alluni || self.uni_overflow || dest == self.mac || self.unicast.contains(&dest)
        }
    }

    /// The filter as `query-rx-filter` reports it for NIC `name`;
    /// `ctrl_vlan` is whether the driver took `VIRTIO_NET_F_CTRL_VLAN`.
    /// Lists come in QEMU's order (it builds them by prepending).
    pub fn info(&self, name: &str, ctrl_vlan: bool) -> RxFilterInfo {
        let state = |none: bool, all: bool| {
            if none {
                RxState::None
            } else if all {
                RxState::All
            } else {
                RxState::Normal
            }
        };
        let vlan_table: Vec<u16> = (0..MAX_VLAN).rev().filter(|&id| self.vlan(id)).collect();
        let vlan = if !ctrl_vlan {
            RxState::All
        } else if vlan_table.is_empty() {
            RxState::None
        } else {
            RxState::Normal
        };
        RxFilterInfo {
            name: name.to_string(),
            promiscuous: self.promisc,
            multicast: state(self.nomulti, self.allmulti),
            unicast: state(self.nouni, self.alluni),
            vlan,
            broadcast_allowed: self.nobcast,
            multicast_overflow: self.multi_overflow,
            unicast_overflow: self.uni_overflow,
            main_mac: format_mac(&self.mac),
            vlan_table,
            unicast_table: self.unicast.iter().rev().map(format_mac).collect(),
            multicast_table: self.multicast.iter().rev().map(format_mac).collect(),
        }
    }
}
