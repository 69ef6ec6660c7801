//! The tap backend against real tap interfaces, each test in a network namespace of its
//! own: ARP through the host's stack with and without the virtio-net header, `fd=`, named
//! interfaces, scripts, and QEMU's error messages.

mod common;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use common::frames::{arp_request, parse_arp, GUEST_MAC};
use common::{can_create_interfaces, in_netns, recv_until, run, send, wait_readable};
use petrel_net::{NetBackend, Offloads, TapBackend, TapOptions, VNET_HDR_LEN};

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

fn options(ifname: Option<&str>, vnet_hdr: Option<bool>) -> TapOptions {
    TapOptions {
        id: "t".into(),
        ifname: ifname.map(str::to_owned),
        script: Some("no".into()),
        downscript: Some("no".into()),
        vnet_hdr,
        ..TapOptions::default()
    }
}

/// Gives the interface the host's address, brings it up, sends an ARP request for that
/// address through the backend and returns the kernel's reply as received (header and all).
fn arp_through(tap: &mut TapBackend) -> Vec<u8> {
    let ifname = tap.ifname().to_owned();
    run(
        "ip",
        &["addr", "add", &format!("{HOST_IP}/24"), "dev", &ifname],
    );
    run("ip", &["link", "set", &ifname, "up"]);
    let hdr_len = if tap.vnet_hdr() { VNET_HDR_LEN } else { 0 };
    let mut frame = vec![0u8; hdr_len];
    frame.extend(arp_request(GUEST_MAC, GUEST_IP, HOST_IP));
    send(tap, &frame);
    recv_until(
        tap,
        Duration::from_secs(5),
        |f| {
            let arp = parse_arp(f.get(hdr_len..)?)?;
            (arp == (2, arp.1, HOST_IP, GUEST_IP)).then(|| f.to_vec())
        },
        |_, _| {},
    )
    .expect("no ARP reply from the host")
}

#[test]
fn tap_with_vnet_hdr_gets_the_hosts_arp_reply() {
    if !can_create_interfaces("tap_with_vnet_hdr_gets_the_hosts_arp_reply") {
        return;
    }
    in_netns(|| {
        let mut tap = TapBackend::open(&options(Some("ptest0"), None)).unwrap();
        assert!(tap.vnet_hdr(), "the kernel supports IFF_VNET_HDR");
        assert_eq!(tap.kind(), "tap");
        assert_eq!(tap.ifname(), "ptest0");
        assert_eq!(tap.info().get(), "ifname=ptest0,script=no,downscript=no");
        let reply = arp_through(&mut tap);
        // virtio_net_hdr: no flags, no GSO, no lengths; then the Ethernet frame.
        assert_eq!(&reply[..10], &[0u8; 10]);
        assert_eq!(&reply[VNET_HDR_LEN..VNET_HDR_LEN + 6], &GUEST_MAC);
        assert_eq!(&reply[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[0x08, 0x06]);
        tap.set_offloads(Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            tso_ecn: true,
            ufo: true,
        })
        .expect("offloads (UFO dropped when the kernel refuses it)");
        tap.set_offloads(Offloads::default()).unwrap();
    });
}

#[test]
fn tap_without_vnet_hdr_carries_bare_frames_on_a_kernel_named_interface() {
    if !can_create_interfaces("tap_without_vnet_hdr") {
        return;
    }
    in_netns(|| {
        let mut tap = TapBackend::open(&options(None, Some(false))).unwrap();
        assert!(!tap.vnet_hdr());
        let name = tap.ifname().to_owned();
        assert!(name.starts_with("tap"), "{name}");
        assert_eq!(
            tap.info().get(),
            format!("ifname={name},script=no,downscript=no")
        );
        let reply = arp_through(&mut tap);
        assert_eq!(&reply[..6], &GUEST_MAC);
        assert_eq!(reply.len(), 42, "a bare ARP reply");
        // Into a buffer too short for it, the reply comes cut, with its whole length.
        send(&mut tap, &arp_request(GUEST_MAC, GUEST_IP, HOST_IP));
        let mut short = [0u8; 20];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no second ARP reply");
            wait_readable(tap.rx_fd(), Duration::from_millis(50));
            if let Some(len) = tap.recv(&mut short).unwrap() {
                if short[..6] == GUEST_MAC && short[12..14] == [0x08, 0x06] {
                    assert_eq!(len, 42, "the whole length of a cut frame");
                    break;
                }
            }
        }
        // Offloads need the header; without it they are ignored.
        tap.set_offloads(Offloads {
            csum: true,
            ..Offloads::default()
        })
        .unwrap();
    });
}

#[test]
fn tap_attaches_an_existing_interface_by_name() {
    if !can_create_interfaces("tap_attaches_an_existing_interface_by_name") {
        return;
    }
    in_netns(|| {
        run(
            "ip",
            &["tuntap", "add", "mode", "tap", "name", "ptest1", "vnet_hdr"],
        );
        let mut tap = TapBackend::open(&options(Some("ptest1"), None)).unwrap();
        assert_eq!(tap.ifname(), "ptest1");
        assert!(tap.vnet_hdr());
        arp_through(&mut tap);
    });
}

#[test]
fn tap_fd_takes_over_an_open_tap() {
    if !can_create_interfaces("tap_fd_takes_over_an_open_tap") {
        return;
    }
    in_netns(|| {
        let first = TapBackend::open(&options(Some("ptest2"), Some(true))).unwrap();
        // SAFETY: dup() of the backend's open descriptor.
        let fd = unsafe { libc::dup(first.rx_fd()) };
        assert!(fd >= 0);
        let mut tap = TapBackend::open(&TapOptions {
            id: "t".into(),
            fd: Some(fd),
            ..TapOptions::default()
        })
        .unwrap();
        drop(first);
        assert_eq!(tap.info().get(), format!("fd={fd}"));
        assert_eq!(tap.ifname(), "ptest2");
        assert!(tap.vnet_hdr(), "follows the descriptor's IFF_VNET_HDR");
        arp_through(&mut tap);
    });
}

#[test]
fn tap_fd_that_is_not_a_tap_is_refused_clearly() {
    let with_fd = |fd| TapOptions {
        id: "t".into(),
        fd: Some(fd),
        ..TapOptions::default()
    };
    let err = |opts: TapOptions| TapBackend::open(&opts).unwrap_err().to_string();

    let mut mixed = with_fd(0);
    mixed.vnet_hdr = Some(true);
    assert_eq!(
        err(mixed),
        "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd="
    );

    // Far above any descriptor the test process has open (tests run in parallel, so a
    // number just closed could be reused by another test).
    let closed = 1 << 30;
    assert_eq!(
        err(with_fd(closed)),
        format!("t: Can't use file descriptor {closed}: Bad file descriptor")
    );

    let null = File::open("/dev/null").unwrap().into_raw_fd();
    assert_eq!(
        err(with_fd(null)),
        format!("Unable to query TUNGETIFF on FD {null}: Inappropriate ioctl for device")
    );

    if let Ok(tun) = File::options().read(true).write(true).open("/dev/net/tun") {
        let fd = tun.into_raw_fd();
        assert_eq!(
            err(with_fd(fd)),
            format!("Unable to query TUNGETIFF on FD {fd}: File descriptor in bad state")
        );
    }
}

#[test]
fn tap_runs_its_scripts_as_qemu_does() {
    if !can_create_interfaces("tap_runs_its_scripts_as_qemu_does") {
        return;
    }
    in_netns(|| {
        let mut opts = options(Some("ptest3"), None);
        opts.script = Some("/nonexistent".into());
        assert_eq!(
            TapBackend::open(&opts).unwrap_err().to_string(),
            "network script /nonexistent failed with status 256"
        );
        opts.script = Some("/bin/false".into());
        assert_eq!(
            TapBackend::open(&opts).unwrap_err().to_string(),
            "network script /bin/false failed with status 256"
        );

        let dir = std::env::temp_dir().join(format!("petrel-net-scripts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let script = dir.join("ifup");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nip link show \"$1\" >/dev/null && echo \"$0 $1\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        run("chmod", &["+x", script.to_str().unwrap()]);
        let script = script.to_str().unwrap().to_owned();
        opts.script = Some(script.clone());
        opts.downscript = Some(script.clone());
        let tap = TapBackend::open(&opts).unwrap();
        assert_eq!(
            tap.info().get(),
            format!("ifname=ptest3,script={script},downscript={script}")
        );
        let up = std::fs::read_to_string(&log).unwrap();
        assert_eq!(up, format!("{script} ptest3\n"));
        drop(tap);
        let both = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            both.lines().count(),
            2,
            "the down script ran while ptest3 existed: {both}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(tap_gone("ptest3"));
    });
}

/// Whether the interface no longer exists in this namespace.
fn tap_gone(ifname: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", ifname])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(false)
}

#[test]
fn tap_rx_fd_is_the_tap_descriptor() {
    if !can_create_interfaces("tap_rx_fd_is_the_tap_descriptor") {
        return;
    }
    in_netns(|| {
        let mut tap = TapBackend::open(&options(Some("ptest4"), None)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            tap.recv(&mut buf).unwrap(),
            None,
            "nothing waiting, no blocking"
        );
        assert!(tap.rx_fd() >= 0);
        assert_ne!(tap.rx_fd(), std::io::stdin().as_raw_fd());
    });
}
