//! The receive filter as `query-rx-filter` reports it (QAPI `RxFilterInfo`).

use serde::{Deserialize, Serialize};

/// QAPI `RxState`: how a class of frames is filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxState {
    /// Filtered by the tables.
    Normal,
    /// None pass.
    None,
    /// All pass.
    All,
}

/// QAPI `RxFilterInfo`, with QAPI's member names when serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RxFilterInfo {
    /// The NIC's net client name.
    pub name: String,
    /// Promiscuous mode.
    pub promiscuous: bool,
    /// Multicast frames.
    pub multicast: RxState,
    /// Unicast frames.
    pub unicast: RxState,
    /// VLAN-tagged frames.
    pub vlan: RxState,
    /// What QEMU's virtio-net reports here: its `nobcast` flag, which is
    /// true when broadcasts are refused (kept as QEMU 7.2 has it, so
    /// clients see the same answer).
    pub broadcast_allowed: bool,
    /// The driver gave more multicast addresses than the table holds.
    pub multicast_overflow: bool,
    /// The driver gave more unicast addresses than the table holds.
    pub unicast_overflow: bool,
    /// The NIC's MAC address, `xx:xx:xx:xx:xx:xx`.
    pub main_mac: String,
    /// VLAN ids that pass, highest first (QEMU builds the list by
    /// prepending).
    pub vlan_table: Vec<u16>,
    /// Extra unicast addresses, last given first.
    pub unicast_table: Vec<String>,
    /// Multicast addresses, last given first.
    pub multicast_table: Vec<String>,
}

/// A MAC address as QEMU prints it: lower-case hex pairs joined by colons.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
