//! virtio-net: a network card over a `petrel_net::NetBackend`.
//!
//! So far the receive filter the driver programs through the control
//! queue ([`RxFilter`]) and how `query-rx-filter` reports it
//! ([`RxFilterInfo`]).

mod filter;
mod info;

pub use filter::{RxFilter, MAC_TABLE_ENTRIES, MAX_VLAN};
pub use info::{format_mac, RxFilterInfo, RxState};
