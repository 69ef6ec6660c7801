//! The network layer against a fake NIC and fake backends.

use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use petrel_net::{InfoText, NetBackend, NetError, Offloads, SendStatus};
use serde_json::json;

use super::{NetLayer, NetdevError, Nic, NicControl, Opened};
use crate::api::net::{NetData, NetRequest};

struct FakeBackend {
    kind: &'static str,
    info: InfoText,
}

/// A backend of type `kind` with a user netdev's text.
fn backend(kind: &'static str) -> Opened {
    Opened::plain(FakeBackend {
        kind,
        info: InfoText::new("net=10.0.2.0,restrict=off"),
    })
}

impl NetBackend for FakeBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn vnet_hdr(&self) -> bool {
        false
    }
    fn set_offloads(&mut self, _: Offloads) -> Result<(), NetError> {
        Ok(())
    }
    fn try_send(&mut self, _: &[IoSlice<'_>]) -> Result<SendStatus, NetError> {
        Ok(SendStatus::Sent)
    }
    fn recv(&mut self, _: &mut [u8]) -> Result<Option<usize>, NetError> {
        Ok(None)
    }
    fn rx_fd(&self) -> RawFd {
        -1
    }
    fn info(&self) -> InfoText {
        self.info.clone()
    }
}

struct FakeNic {
    link: Mutex<Vec<bool>>,
    has_backend: AtomicBool,
    /// What the guest made the MAC address.
    mac: Mutex<[u8; 6]>,
}

impl Default for FakeNic {
    fn default() -> Self {
        FakeNic {
            link: Mutex::default(),
            has_backend: AtomicBool::default(),
            mac: Mutex::new(NetLayer::default_mac(0)),
        }
    }
}

impl NicControl for FakeNic {
    fn set_link(&self, up: bool) {
        self.link.lock().unwrap().push(up);
    }
    fn set_backend(&self, backend: Option<Box<dyn NetBackend>>) {
        self.has_backend.store(backend.is_some(), Ordering::SeqCst);
    }
    fn rx_filter(&self) -> serde_json::Value {
        json!({"promiscuous": true})
    }
    fn mac(&self) -> [u8; 6] {
        *self.mac.lock().unwrap()
    }
}

/// A layer with netdevs u0 (on NIC nic0) and u1 (free).
fn layer() -> (NetLayer, Arc<FakeNic>) {
    let mut net = NetLayer::default();
    net.add("u0", backend("user")).unwrap();
    net.add("u1", backend("user")).unwrap();
    let fake = Arc::new(FakeNic::default());
    let backend = net.take_backend("u0");
    fake.set_backend(backend);
    net.add_nic(Nic {
        name: "nic0".into(),
        id: Some("nic0".into()),
        devfn: 3 << 3,
        control: fake.clone(),
        filter_event_armed: Arc::new(AtomicBool::new(false)),
        deleted_peer: None,
        seq: 0,
    });
    (net, fake)
}

fn text(net: &mut NetLayer) -> String {
    match net.serve(NetRequest::InfoNetwork) {
        Ok(Some(NetData::Text(t))) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn info_network_as_qemu_prints_it() {
    let (mut net, fake) = layer();
    assert!(fake.has_backend.load(Ordering::SeqCst));
    assert_eq!(
        text(&mut net),
        // Creation order, as QEMU lists its net clients: u0 (shown under its NIC), u1,
        // nic0; a netdev added later comes after the NIC.
        "u1: index=0,type=user,net=10.0.2.0,restrict=off\r\n\
         nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \
         \\ u0: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
    );
    net.add("u2", backend("socket")).unwrap();
    assert!(text(&mut net).ends_with(
        "\\ u0: index=0,type=user,net=10.0.2.0,restrict=off\r\n\
         u2: index=0,type=socket,net=10.0.2.0,restrict=off\r\n"
    ));
}

#[test]
fn info_network_shows_the_backends_text_of_the_moment() {
    let (mut net, _) = layer();
    let s0 = backend("socket");
    let (free, used) = (s0.backend.info(), net.netdevs[0].info.clone());
    free.set("");
    net.add("s0", s0).unwrap();
    assert!(text(&mut net).ends_with("s0: index=0,type=socket,\r\n"));
    // A listening socket's peer connects: the text changes, for a free netdev and for
    // one whose backend is the NIC's.
    free.set("socket: connection from 127.0.0.1:40000");
    used.set("socket: connection from 127.0.0.1:40001");
    let now = text(&mut net);
    assert!(
        now.ends_with("s0: index=0,type=socket,socket: connection from 127.0.0.1:40000\r\n"),
        "{now}"
    );
    assert!(
        now.contains(" \\ u0: index=0,type=user,socket: connection from 127.0.0.1:40001\r\n"),
        "{now}"
    );
}

#[test]
fn info_network_shows_the_mac_the_guest_set() {
    let (mut net, fake) = layer();
    *fake.mac.lock().unwrap() = [0x02, 0xab, 0xcd, 0xef, 0x01, 0x0a];
    assert!(text(&mut net)
        .contains("nic0: index=0,type=nic,model=virtio-net-pci,macaddr=02:ab:cd:ef:01:0a\r\n"));
}

#[test]
fn default_macs_count_up_from_qemus_first() {
    assert_eq!(
        NetLayer::default_mac(0),
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    );
    assert_eq!(
        NetLayer::default_mac(2),
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x58]
    );
}

#[test]
fn deleting_a_netdev_in_use_leaves_the_nic_without_peer_and_link() {
    let (mut net, fake) = layer();
    net.serve(NetRequest::Del { id: "u0".into() }).unwrap();
    assert!(!fake.has_backend.load(Ordering::SeqCst));
    assert_eq!(*fake.link.lock().unwrap(), vec![false]);
    // QEMU still shows the deleted peer under the NIC, and the id is free again.
    assert!(text(&mut net).contains(" \\ u0: index=0,type=user"));
    net.add("u0", backend("user")).unwrap();
    let again = net.serve(NetRequest::Del { id: "u0".into() });
    assert!(again.is_ok());
    let missing = net.serve(NetRequest::Del { id: "u0".into() }).unwrap_err();
    assert!(missing.is_device_not_found());
    assert_eq!(missing.to_string(), "Device 'u0' not found");
}

#[test]
fn set_link_on_the_nic_or_its_netdev() {
    let (mut net, fake) = layer();
    let set = |net: &mut NetLayer, name: &str, up| {
        net.serve(NetRequest::SetLink {
            name: name.into(),
            up,
        })
    };
    set(&mut net, "nic0", false).unwrap();
    set(&mut net, "u0", true).unwrap();
    // A netdev without a NIC accepts it and nothing else changes.
    set(&mut net, "u1", false).unwrap();
    assert_eq!(*fake.link.lock().unwrap(), vec![false, true]);
    let err = set(&mut net, "zz", true).unwrap_err();
    assert!(err.is_device_not_found());
    assert_eq!(err.to_string(), "Device 'zz' not found");
}

#[test]
fn rx_filter_queries_name_the_nic_and_rearm_the_event() {
    let (mut net, _) = layer();
    let armed = net.nics()[0].filter_event_armed.clone();
    assert!(!NetLayer::filter_event_due(&armed));
    match net.serve(NetRequest::QueryRxFilter { name: None }) {
        Ok(Some(NetData::RxFilters(v))) => {
            assert_eq!(v, vec![json!({"name": "nic0", "promiscuous": true})])
        }
        other => panic!("{other:?}"),
    }
    assert!(NetLayer::filter_event_due(&armed));
    assert!(!NetLayer::filter_event_due(&armed));
    let mut err = |name: &str| {
        net.serve(NetRequest::QueryRxFilter {
            name: Some(name.into()),
        })
        .unwrap_err()
        .to_string()
    };
    assert_eq!(err("u0"), "net client(u0) isn't a NIC");
    assert_eq!(err("zz"), "invalid net client name: zz");
}

#[test]
fn duplicate_ids_are_refused() {
    let (mut net, _) = layer();
    let e = net.add("u1", backend("user")).unwrap_err();
    assert!(matches!(e, NetdevError::DuplicateId(_)));
    assert_eq!(e.to_string(), "Duplicate ID 'u1'");
}

fn hmp(net: &mut NetLayer, req: NetRequest) -> String {
    match net.serve(req) {
        Ok(Some(NetData::Text(t))) => t,
        other => panic!("{other:?}"),
    }
}

fn add(netdev: Option<&str>, rule: &str) -> NetRequest {
    NetRequest::HostfwdAdd {
        netdev: netdev.map(str::to_owned),
        rule: rule.to_owned(),
    }
}

fn remove(netdev: Option<&str>, rule: &str) -> NetRequest {
    NetRequest::HostfwdRemove {
        netdev: netdev.map(str::to_owned),
        rule: rule.to_owned(),
    }
}

#[test]
fn user_networking_commands_find_their_netdev_as_qemu() {
    // The fakes say "user" but have no user control: to QEMU they are other devices.
    let (mut net, _) = layer();
    let rule = "tcp:127.0.0.1:1-:22";
    assert_eq!(
        hmp(&mut net, add(None, rule)),
        "user mode network stack not in use\r\n"
    );
    assert_eq!(
        hmp(&mut net, remove(Some("u1"), "tcp::1")),
        "invalid device specified\r\n"
    );
    // A NIC is no netdev.
    assert_eq!(
        hmp(&mut net, add(Some("nic0"), rule)),
        "unrecognized netdev id 'nic0'\r\n"
    );
    assert_eq!(hmp(&mut net, NetRequest::InfoUsernet), "");
}

#[test]
fn user_networking_commands_reach_the_first_user_netdev_or_the_named_one() {
    let (mut net, _) = layer();
    for id in ["n1", "n2"] {
        let opened = super::open_backend(&json!({"type": "user", "id": id}), None).unwrap();
        net.add(id, opened).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rule = format!("tcp:127.0.0.1:{port}-:22");
    assert_eq!(hmp(&mut net, add(Some("n2"), &rule)), "");
    assert_eq!(
        hmp(&mut net, add(Some("n2"), &rule)),
        format!("Could not set up host forwarding rule '{rule}'\r\n")
    );
    assert_eq!(
        hmp(&mut net, add(None, "foo")),
        "Invalid host forwarding rule 'foo' (No : separators)\r\n"
    );
    let table = hmp(&mut net, NetRequest::InfoUsernet);
    let lines: Vec<&str> = table.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "Hub -1 (n1):");
    assert!(lines[1].starts_with("  Protocol[State]"), "{table}");
    assert_eq!(lines[2], "Hub -1 (n2):");
    assert!(lines[4].starts_with("  TCP[HOST_FORWARD]"), "{table}");
    let fields: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        fields[2..6],
        ["127.0.0.1", &port.to_string(), "10.0.2.15", "22"]
    );
    assert_eq!(lines.len(), 5, "{table}");
    assert!(!table.replace("\r\n", "").contains('\n'), "{table:?}");
    // Without a netdev id, the first user netdev (n1) has no such rule.
    let key = format!("tcp:127.0.0.1:{port}");
    assert_eq!(
        hmp(&mut net, remove(None, &key)),
        format!("host forwarding rule for {key} not found\r\n")
    );
    assert_eq!(
        hmp(&mut net, remove(Some("n2"), &key)),
        format!("host forwarding rule for {key} removed\r\n")
    );
    assert_eq!(
        hmp(&mut net, remove(Some("n2"), "tcp::0x10")),
        "invalid format\r\n"
    );
    assert_eq!(
        hmp(&mut net, remove(Some("zz"), &key)),
        "unrecognized netdev id 'zz'\r\n"
    );
}
