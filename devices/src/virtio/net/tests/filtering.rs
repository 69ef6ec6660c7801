//! The control queue and the receive filter it programs.

use super::*;

#[test]
fn rx_filter_unicast_broadcast_multicast() {
    let (dev, ctl, mut drv, peer) = running(false, 0);
    // Promiscuous after reset, as QEMU.
    assert!(delivered(&mut drv, &ctl, &peer, &eth(STRANGER, 64)));
    assert_eq!(drv.command(CLASS_RX, 0, &[0]), CTRL_OK); // PROMISC off
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(STRANGER, 64)));
    assert!(delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 64)));
    assert!(delivered(&mut drv, &ctl, &peer, &eth(BROADCAST, 64)));
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(MULTICAST, 64)));
    // Tables: STRANGER as an extra unicast address, MULTICAST joined.
    let mut table = 1u32.to_le_bytes().to_vec();
    table.extend_from_slice(&STRANGER);
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(&MULTICAST);
    assert_eq!(drv.command(CLASS_MAC, 0, &table), CTRL_OK); // MAC_TABLE_SET
    assert!(delivered(&mut drv, &ctl, &peer, &eth(STRANGER, 64)));
    assert!(delivered(&mut drv, &ctl, &peer, &eth(MULTICAST, 64)));
    assert!(!delivered(
        &mut drv,
        &ctl,
        &peer,
        &eth([0x33, 0x33, 0, 0, 0, 1], 64)
    ));
    // allmulti, nomulti, nobcast, nouni.
    assert_eq!(drv.command(CLASS_RX, 1, &[1]), CTRL_OK);
    assert!(delivered(
        &mut drv,
        &ctl,
        &peer,
        &eth([0x33, 0x33, 0, 0, 0, 1], 64)
    ));
    assert_eq!(drv.command(CLASS_RX, 3, &[1]), CTRL_OK);
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(MULTICAST, 64)));
    assert!(delivered(&mut drv, &ctl, &peer, &eth(BROADCAST, 64)));
    assert_eq!(drv.command(CLASS_RX, 5, &[1]), CTRL_OK);
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(BROADCAST, 64)));
    assert_eq!(drv.command(CLASS_RX, 4, &[1]), CTRL_OK);
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 64)));
    // A new address replaces the old one.
    assert_eq!(drv.command(CLASS_RX, 4, &[0]), CTRL_OK);
    let new_mac = [0x02, 1, 2, 3, 4, 5];
    assert_eq!(drv.command(CLASS_MAC, 1, &new_mac), CTRL_OK); // MAC_ADDR_SET
    assert!(delivered(&mut drv, &ctl, &peer, &eth(new_mac, 64)));
    assert!(!delivered(&mut drv, &ctl, &peer, &eth(OUR_MAC, 64)));
    assert_eq!(ctl.mac(), new_mac);
    let mut mac = [0u8; 6];
    dev.read_config(0, &mut mac);
    assert_eq!(mac, new_mac);
}

#[test]
fn rx_filter_vlans() {
    let (_dev, ctl, mut drv, peer) = running(false, 0);
    assert_eq!(drv.command(CLASS_RX, 0, &[0]), CTRL_OK);
    // With CTRL_VLAN taken, no VLAN passes until the driver adds it.
    assert!(!delivered(&mut drv, &ctl, &peer, &tagged(OUR_MAC, 5)));
    assert_eq!(drv.command(CLASS_VLAN, 0, &5u16.to_le_bytes()), CTRL_OK);
    assert!(delivered(&mut drv, &ctl, &peer, &tagged(OUR_MAC, 5)));
    assert!(!delivered(&mut drv, &ctl, &peer, &tagged(OUR_MAC, 6)));
    assert_eq!(drv.command(CLASS_VLAN, 1, &5u16.to_le_bytes()), CTRL_OK);
    assert!(!delivered(&mut drv, &ctl, &peer, &tagged(OUR_MAC, 5)));
    assert_eq!(drv.command(CLASS_VLAN, 0, &4096u16.to_le_bytes()), CTRL_ERR);

    // Without CTRL_VLAN every VLAN passes.
    let (_dev, ctl, mut drv, peer) = running(false, bit(VIRTIO_NET_F_CTRL_VLAN));
    assert_eq!(drv.command(CLASS_RX, 0, &[0]), CTRL_OK);
    assert!(delivered(&mut drv, &ctl, &peer, &tagged(OUR_MAC, 77)));
    assert_eq!(ctl.query_rx_filter().vlan, RxState::All);
}

#[test]
fn control_commands_answer_ok_or_err() {
    let (dev, ctl, mut drv, peer) = running(true, 0);
    // Receive modes take exactly one byte; unknown ones are refused.
    assert_eq!(drv.command(CLASS_RX, 2, &[1]), CTRL_OK);
    assert_eq!(drv.command(CLASS_RX, 2, &[]), CTRL_ERR);
    assert_eq!(drv.command(CLASS_RX, 6, &[1]), CTRL_ERR);
    // MAC_ADDR_SET wants exactly six bytes.
    assert_eq!(drv.command(CLASS_MAC, 1, &[1, 2, 3, 4, 5]), CTRL_ERR);
    assert_eq!(drv.command(CLASS_MAC, 1, &[2, 2, 3, 4, 5, 6, 7]), CTRL_ERR);
    assert_eq!(drv.command(CLASS_MAC, 7, &[]), CTRL_ERR);
    // MAC_TABLE_SET: lengths must match the data.
    let mut table = 0u32.to_le_bytes().to_vec();
    table.extend_from_slice(&2u32.to_le_bytes());
    table.extend_from_slice(&MULTICAST);
    assert_eq!(drv.command(CLASS_MAC, 0, &table), CTRL_ERR);
    table.extend_from_slice(&[0x01, 0, 0x5e, 0, 0, 1]);
    assert_eq!(drv.command(CLASS_MAC, 0, &table), CTRL_OK);
    // More unicast addresses than the table holds: overflow.
    let mut table = 65u32.to_le_bytes().to_vec();
    table.extend((0..65 * 6).map(|i| (i % 7) as u8 & 0xfe));
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(&MULTICAST);
    assert_eq!(drv.command(CLASS_MAC, 0, &table), CTRL_OK);
    let info = ctl.query_rx_filter();
    assert!(info.unicast_overflow && !info.multicast_overflow);
    assert!(info.unicast_table.is_empty());
    assert_eq!(info.multicast_table, vec!["01:00:5e:00:00:fb".to_string()]);
    // VLAN with a short id.
    assert_eq!(drv.command(CLASS_VLAN, 0, &[1]), CTRL_ERR);
    assert_eq!(drv.command(CLASS_VLAN, 2, &1u16.to_le_bytes()), CTRL_ERR);
    // ANNOUNCE_ACK only answers an announcement.
    assert_eq!(drv.command(CLASS_ANNOUNCE, 0, &[]), CTRL_ERR);
    drv.irq.take_after(0, QUIET);
    assert!(ctl.announce());
    assert_eq!(
        drv.irq.take_after(0, QUIET),
        vec![VirtioInterruptType::Config]
    );
    assert_eq!(dev.config().status, 3);
    assert_eq!(drv.command(CLASS_ANNOUNCE, 0, &[]), CTRL_OK);
    assert_eq!(dev.config().status, 1);
    // Multiqueue is not offered; unknown classes are refused.
    assert_eq!(drv.command(CLASS_MQ, 0, &1u16.to_le_bytes()), CTRL_ERR);
    assert_eq!(drv.command(9, 0, &[]), CTRL_ERR);
    // Guest offloads: a subset of what the driver accepted.
    let csum_only = bit(VIRTIO_NET_F_GUEST_CSUM).to_le_bytes();
    assert_eq!(drv.command(CLASS_OFFLOADS, 0, &csum_only), CTRL_OK);
    assert_eq!(
        peer.offloads.lock().unwrap().last(),
        Some(&Offloads {
            csum: true,
            ..Offloads::default()
        })
    );
    assert_eq!(
        drv.command(CLASS_OFFLOADS, 0, &bit(VIRTIO_NET_F_MQ).to_le_bytes()),
        CTRL_ERR
    );
    assert_eq!(drv.command(CLASS_OFFLOADS, 1, &csum_only), CTRL_ERR);
    // A chain without room for the answer is completed with nothing.
    let out = drv.alloc(3);
    drv.ctrl.add(&drv.mem, &[(out, 3, false)]);
    drv.ctrl.kick();
    assert_eq!(drv.ctrl.wait_used(&drv.mem).1, 0);
}

#[test]
fn guest_offloads_need_a_backend_with_header() {
    let (_dev, _ctl, mut drv, _peer) = running(false, 0);
    assert_eq!(
        drv.command(CLASS_OFFLOADS, 0, &0u64.to_le_bytes()),
        CTRL_ERR
    );
}

#[test]
fn query_rx_filter_reports_as_qemu_does() {
    let (mut dev, _peer) = device(false);
    let ctl = dev.control();
    let fresh = ctl.query_rx_filter();
    assert_eq!(
        fresh,
        RxFilterInfo {
            name: "net0".to_string(),
            promiscuous: true,
            multicast: RxState::Normal,
            unicast: RxState::Normal,
            vlan: RxState::All,
            broadcast_allowed: false,
            multicast_overflow: false,
            unicast_overflow: false,
            main_mac: "52:54:00:12:34:56".to_string(),
            vlan_table: Vec::new(),
            unicast_table: Vec::new(),
            multicast_table: Vec::new(),
        }
    );
    let mut drv = start(&mut dev, 0, false);
    assert_eq!(ctl.query_rx_filter().vlan, RxState::None);
    drv.command(CLASS_RX, 0, &[0]);
    drv.command(CLASS_RX, 3, &[1]);
    drv.command(CLASS_RX, 2, &[1]);
    drv.command(CLASS_RX, 5, &[1]);
    drv.command(CLASS_VLAN, 0, &3u16.to_le_bytes());
    drv.command(CLASS_VLAN, 0, &100u16.to_le_bytes());
    let mut table = 2u32.to_le_bytes().to_vec();
    table.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    table.extend_from_slice(&0u32.to_le_bytes());
    drv.command(CLASS_MAC, 0, &table);
    let info = ctl.query_rx_filter();
    assert!(!info.promiscuous);
    assert_eq!(info.multicast, RxState::None);
    assert_eq!(info.unicast, RxState::All);
    assert_eq!(info.vlan, RxState::Normal);
    // QEMU reports its nobcast flag here.
    assert!(info.broadcast_allowed);
    assert_eq!(info.vlan_table, vec![100, 3]);
    assert_eq!(
        info.unicast_table,
        vec![
            "02:00:00:00:00:02".to_string(),
            "02:00:00:00:00:01".to_string()
        ]
    );
}

#[test]
fn filter_listener_hears_every_change() {
    let (mut dev, _peer) = device(false);
    let ctl = dev.control();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    ctl.set_filter_listener(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    let mut drv = start(&mut dev, 0, false);
    drv.command(CLASS_RX, 0, &[0]);
    drv.command(CLASS_RX, 0, &[0]);
    drv.command(CLASS_MAC, 1, &OUR_MAC);
    drv.command(CLASS_VLAN, 0, &1u16.to_le_bytes());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Refused commands change nothing.
    drv.command(CLASS_RX, 9, &[0]);
    drv.command(CLASS_ANNOUNCE, 0, &[]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
