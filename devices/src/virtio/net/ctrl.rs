//! Control queue commands (`struct virtio_net_ctrl_hdr` then the
//! command's data), answered `VIRTIO_NET_OK` or `VIRTIO_NET_ERR` as QEMU's
//! `virtio_net_handle_ctrl_iov` answers them.

use std::io::Read;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_net::*;
use virtio_queue::Reader;

use super::control::{Shared, S_ANNOUNCE};
use super::features::{has, GUEST_OFFLOADS};
use super::filter::{MAC_TABLE_ENTRIES, MAX_VLAN};
use crate::sync::lock;

/// `VIRTIO_NET_OK`.
pub const OK: u8 = VIRTIO_NET_OK as u8;
/// `VIRTIO_NET_ERR`.
pub const ERR: u8 = VIRTIO_NET_ERR as u8;

/// Length of a MAC address.
const ETH_ALEN: usize = 6;

/// What a command did besides its answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Effects {
    /// The receive filter changed: the listener is to be told.
    pub(super) filter_changed: bool,
    /// The guest offloads changed: the backend is to be told.
    pub(super) offloads_changed: bool,
}

/// Why a command failed: it is answered `VIRTIO_NET_ERR`.
struct Refused;

impl From<std::io::Error> for Refused {
    fn from(_: std::io::Error) -> Self {
        Refused
    }
}

impl From<virtio_queue::Error> for Refused {
    fn from(_: virtio_queue::Error) -> Self {
        Refused
    }
}

/// Executes the command of class `class` and code `cmd` whose data
/// `data` holds; returns the answer and what changed.
pub(super) fn execute(shared: &Shared, class: u8, cmd: u8, data: &mut Reader) -> (u8, Effects) {
    let cmd = u32::from(cmd);
    let result = match u32::from(class) {
        VIRTIO_NET_CTRL_RX => rx_mode(shared, cmd, data),
        VIRTIO_NET_CTRL_MAC => mac(shared, cmd, data),
        VIRTIO_NET_CTRL_VLAN => vlan(shared, cmd, data),
        VIRTIO_NET_CTRL_ANNOUNCE => announce_ack(shared, cmd),
        VIRTIO_NET_CTRL_GUEST_OFFLOADS => guest_offloads(shared, cmd, data),
        // Multiqueue, RSS and hash reports are not offered.
        _ => Err(Refused),
    };
    match result {
        Ok(effects) => (OK, effects),
        Err(Refused) => (ERR, Effects::default()),
    }
}

fn filter_changed() -> Result<Effects, Refused> {
    Ok(Effects {
        filter_changed: true,
        ..Effects::default()
    })
}

fn read_u8(data: &mut Reader) -> Result<u8, Refused> {
    let mut b = [0u8; 1];
    data.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(data: &mut Reader) -> Result<u16, Refused> {
    let mut b = [0u8; 2];
    data.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(data: &mut Reader) -> Result<u32, Refused> {
    let mut b = [0u8; 4];
    data.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_mac(data: &mut Reader) -> Result<[u8; ETH_ALEN], Refused> {
    let mut mac = [0u8; ETH_ALEN];
    data.read_exact(&mut mac)?;
    Ok(mac)
}

/// `VIRTIO_NET_CTRL_RX_*`: one byte, on or off.
fn rx_mode(shared: &Shared, cmd: u32, data: &mut Reader) -> Result<Effects, Refused> {
    let on = read_u8(data)? != 0;
    let mut filter = lock(&shared.filter);
    let flag = match cmd {
        VIRTIO_NET_CTRL_RX_PROMISC => &mut filter.promisc,
        VIRTIO_NET_CTRL_RX_ALLMULTI => &mut filter.allmulti,
        VIRTIO_NET_CTRL_RX_ALLUNI => &mut filter.alluni,
        VIRTIO_NET_CTRL_RX_NOMULTI => &mut filter.nomulti,
        VIRTIO_NET_CTRL_RX_NOUNI => &mut filter.nouni,
        VIRTIO_NET_CTRL_RX_NOBCAST => &mut filter.nobcast,
        _ => return Err(Refused),
    };
    *flag = on;
    filter_changed()
}

/// `VIRTIO_NET_CTRL_MAC_ADDR_SET` (exactly one address) and
/// `VIRTIO_NET_CTRL_MAC_TABLE_SET` (two `struct virtio_net_ctrl_mac`:
/// unicast then multicast). A table longer than the space left sets the
/// overflow flag instead (all such frames pass).
fn mac(shared: &Shared, cmd: u32, data: &mut Reader) -> Result<Effects, Refused> {
    if cmd == VIRTIO_NET_CTRL_MAC_ADDR_SET {
        if data.available_bytes() != ETH_ALEN {
            return Err(Refused);
        }
        let mac = read_mac(data)?;
        lock(&shared.filter).mac = mac;
        return filter_changed();
    }
    if cmd != VIRTIO_NET_CTRL_MAC_TABLE_SET {
        return Err(Refused);
    }
    let entries = u64::from(read_u32(data)?);
    let bytes = entries * ETH_ALEN as u64;
    if bytes > data.available_bytes() as u64 {
        return Err(Refused);
    }
    let mut rest = data.split_at(bytes as usize)?;
    let (unicast, uni_overflow) = read_table(data, entries, MAC_TABLE_ENTRIES)?;

    let entries = u64::from(read_u32(&mut rest)?);
    if entries * ETH_ALEN as u64 != rest.available_bytes() as u64 {
        return Err(Refused);
    }
    let room = MAC_TABLE_ENTRIES - unicast.len();
    let (multicast, multi_overflow) = read_table(&mut rest, entries, room)?;

    let mut filter = lock(&shared.filter);
    filter.unicast = unicast;
    filter.multicast = multicast;
    filter.uni_overflow = uni_overflow;
    filter.multi_overflow = multi_overflow;
    filter_changed()
}

/// Reads a table of `entries` addresses if it fits in `room`; otherwise
/// nothing, and overflow.
fn read_table(
    data: &mut Reader,
    entries: u64,
    room: usize,
) -> Result<(Vec<[u8; ETH_ALEN]>, bool), Refused> {
    if entries > room as u64 {
        return Ok((Vec::new(), true));
    }
    let table = (0..entries)
        .map(|_| read_mac(data))
        .collect::<Result<_, _>>()?;
    Ok((table, false))
}

/// `VIRTIO_NET_CTRL_VLAN_ADD` / `_DEL`: a 16-bit VLAN id.
fn vlan(shared: &Shared, cmd: u32, data: &mut Reader) -> Result<Effects, Refused> {
    let id = read_u16(data)?;
    if id >= MAX_VLAN {
        return Err(Refused);
    }
    let on = match cmd {
        VIRTIO_NET_CTRL_VLAN_ADD => true,
        VIRTIO_NET_CTRL_VLAN_DEL => false,
        _ => return Err(Refused),
    };
    lock(&shared.filter).set_vlan(id, on);
    filter_changed()
}

/// `VIRTIO_NET_CTRL_ANNOUNCE_ACK`: only while an announcement is pending.
fn announce_ack(shared: &Shared, cmd: u32) -> Result<Effects, Refused> {
    if cmd != VIRTIO_NET_CTRL_ANNOUNCE_ACK {
        return Err(Refused);
    }
    let old = shared.status.fetch_and(!S_ANNOUNCE, Ordering::AcqRel);
    if old & S_ANNOUNCE == 0 {
        return Err(Refused);
    }
    Ok(Effects::default())
}

/// `VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET`: a 64-bit mask of guest offload
/// features, within those the driver accepted.
fn guest_offloads(shared: &Shared, cmd: u32, data: &mut Reader) -> Result<Effects, Refused> {
    let acked = shared.acked();
    if !has(acked, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || cmd != VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET {
        return Err(Refused);
    }
    let mut b = [0u8; 8];
    data.read_exact(&mut b)?;
    // RSC is a Windows driver's business, not offered; QEMU ignores it here.
    let offloads = u64::from_le_bytes(b) & !(1 << VIRTIO_NET_F_RSC_EXT);
    if !shared.vnet_hdr || offloads & !(acked & GUEST_OFFLOADS) != 0 {
        return Err(Refused);
    }
    shared.guest_offloads.store(offloads, Ordering::Release);
    Ok(Effects {
        offloads_changed: true,
        ..Effects::default()
    })
}
