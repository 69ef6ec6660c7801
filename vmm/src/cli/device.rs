//! `-device DRIVER,prop=value,...`: guest devices. petrel has `virtio-blk-pci`,
//! `virtio-net-pci` and `virtio-balloon-pci`.

use petrel_devices::virtio::net::{self, NetParams};

use super::config::{
    DeviceConfig, ListTopic, VirtioBalloonConfig, VirtioBlkConfig, VirtioNetConfig,
};
use super::error::ArgError;
use super::netdev::parse_mac;
use super::opts::{parse_bool, parse_u32, Opts, Parsed, Syntax};

/// The device models `-device help` lists: (name, bus, description).
pub(crate) const DEVICE_MODELS: &[(&str, &str, &str)] = &[
    (
        "virtio-blk-pci",
        "PCI",
        "virtio block device (alias virtio-blk)",
    ),
    (
        "virtio-net-pci",
        "PCI",
        "virtio network device (alias virtio-net)",
    ),
    (
        "virtio-balloon-pci",
        "PCI",
        "virtio memory balloon (alias virtio-balloon)",
    ),
];

/// Properties of virtio-balloon-pci.
const VIRTIO_BALLOON_KEYS: &[&str] = &[
    "driver",
    "id",
    "deflate-on-oom",
    "page-poison",
    "addr",
    "bus",
    "disable-legacy",
    "disable-modern",
];

/// Properties of virtio-net-pci.
const VIRTIO_NET_KEYS: &[&str] = &[
    "driver",
    "id",
    "netdev",
    "mac",
    "addr",
    "bus",
    "disable-legacy",
    "disable-modern",
    "bootindex",
    "rx_queue_size",
    "tx_queue_size",
    "host_mtu",
];

/// Properties of virtio-blk-pci.
const VIRTIO_BLK_KEYS: &[&str] = &[
    "driver",
    "id",
    "drive",
    "serial",
    "num-queues",
    "queue-size",
    "addr",
    "bus",
    "disable-legacy",
    "disable-modern",
    "bootindex",
];

/// Parses one `-device`.
pub(crate) fn parse_device(arg: &str) -> Result<Parsed<DeviceConfig>, ArgError> {
    let opts = Opts::parse(arg, Some("driver"), Syntax::QemuOpts)?;
    let driver = opts.get("driver").unwrap_or_default();
    if matches!(driver, "help" | "?") || opts.wants_help() && driver.is_empty() {
        return Ok(Parsed::List(ListTopic::Devices));
    }
    match driver {
        "virtio-blk-pci" | "virtio-blk" => virtio_blk(&opts).map(Parsed::Value),
        "virtio-net-pci" | "virtio-net" => virtio_net(&opts).map(Parsed::Value),
        "virtio-balloon-pci" | "virtio-balloon" => virtio_balloon(&opts).map(Parsed::Value),
        other => Err(ArgError::UnknownDevice(other.to_string())),
    }
}

fn virtio_net(opts: &Opts) -> Result<DeviceConfig, ArgError> {
    opts.check_known(VIRTIO_NET_KEYS)?;
    let id = pci_common(opts)?;
    let mac = opts.get("mac").map(parse_mac).transpose()?;
    let slot = opts.get("addr").map(parse_addr).transpose()?;
    let number = |key| opts.get(key).map(|v| small(key, v)).transpose();
    let params = NetParams {
        rx_queue_size: number("rx_queue_size")?.unwrap_or(net::DEFAULT_QUEUE_SIZE),
        tx_queue_size: number("tx_queue_size")?.unwrap_or(net::DEFAULT_QUEUE_SIZE),
        host_mtu: number("host_mtu")?.filter(|&mtu| mtu != 0),
        ..NetParams::default()
    };
    // What QEMU's realize checks, in its words.
    params
        .check()
        .map_err(|e| ArgError::DeviceRefused(e.to_string()))?;
    Ok(DeviceConfig::VirtioNet(VirtioNetConfig {
        id,
        netdev: opts.get("netdev").map(str::to_string),
        mac,
        slot,
        rx_queue_size: params.rx_queue_size,
        tx_queue_size: params.tx_queue_size,
        host_mtu: params.host_mtu,
    }))
}

fn virtio_balloon(opts: &Opts) -> Result<DeviceConfig, ArgError> {
    opts.check_known(VIRTIO_BALLOON_KEYS)?;
    let id = pci_common(opts)?;
    Ok(DeviceConfig::Balloon(VirtioBalloonConfig {
        id,
        deflate_on_oom: opts.get_bool("deflate-on-oom")?.unwrap_or(false),
        page_poison: opts.get_bool("page-poison")?.unwrap_or(true),
        slot: opts.get("addr").map(parse_addr).transpose()?,
    }))
}

fn virtio_blk(opts: &Opts) -> Result<DeviceConfig, ArgError> {
    opts.check_known(VIRTIO_BLK_KEYS)?;
    let drive = opts
        .get("drive")
        .filter(|d| !d.is_empty())
        .ok_or(ArgError::DriveNotSet)?;
    let id = pci_common(opts)?;
    let num_queues = match opts.get("num-queues") {
        Some(v) => small("num-queues", v)?,
        None => 1,
    };
    let queue_size = match opts.get("queue-size") {
        Some(v) => small("queue-size", v)?,
        None => petrel_devices::virtio::block::DEFAULT_QUEUE_SIZE,
    };
    Ok(DeviceConfig::VirtioBlk(VirtioBlkConfig {
        id,
        drive: drive.to_string(),
        serial: opts.get("serial").map(str::to_string),
        num_queues,
        queue_size,
        slot: opts.get("addr").map(parse_addr).transpose()?,
    }))
}

/// Checks what every virtio PCI function takes: `id`, `bus`, the modern/legacy switches and
/// `bootindex`. Returns the id.
fn pci_common(opts: &Opts) -> Result<Option<String>, ArgError> {
    let id = opts.get("id").map(str::to_string);
    if let Some(id) = &id {
        if !super::chardev::is_identifier(id) {
            return Err(ArgError::InvalidId);
        }
    }
    if let Some(bus) = opts
        .get("bus")
        .filter(|b| !matches!(*b, "pcie.0" | "pci.0"))
    {
        return Err(ArgError::UnsupportedValue {
            key: "bus".into(),
            value: bus.into(),
        });
    }
    if opts.get_bool("disable-modern")? == Some(true) {
        return Err(ArgError::UnsupportedValue {
            key: "disable-modern".into(),
            value: "on".into(),
        });
    }
    if let Some(v) = opts.get("disable-legacy") {
        // Only the modern interface exists, so `on` describes petrel and `off` cannot.
        if v != "auto" && !parse_bool("disable-legacy", v)? {
            return Err(ArgError::UnsupportedValue {
                key: "disable-legacy".into(),
                value: v.into(),
            });
        }
    }
    if let Some(v) = opts.get("bootindex") {
        parse_u32("bootindex", v)?;
    }
    Ok(id)
}

fn small(key: &str, v: &str) -> Result<u16, ArgError> {
    u16::try_from(parse_u32(key, v)?).map_err(|_| ArgError::ExpectsNumber(key.to_string()))
}

/// QEMU's PCI `addr`: `slot[.function]` in hex, function 0 here.
fn parse_addr(v: &str) -> Result<u8, ArgError> {
    let bad = || ArgError::InvalidPciAddress(v.to_string());
    let (slot, func) = v.split_once('.').unwrap_or((v, "0"));
    let slot = slot.trim_start_matches("0x");
    let slot = u8::from_str_radix(slot, 16).map_err(|_| bad())?;
    if slot > 31 || func != "0" || slot == 0 {
        return Err(bad());
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk(arg: &str) -> VirtioBlkConfig {
        match parse_device(arg).unwrap() {
            Parsed::Value(DeviceConfig::VirtioBlk(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn virtio_blk_properties() {
        let c =
            blk("virtio-blk-pci,drive=d0,id=disk0,serial=abc,num-queues=2,queue-size=128,addr=0x5");
        assert_eq!(c.drive, "d0");
        assert_eq!(c.id.as_deref(), Some("disk0"));
        assert_eq!(c.serial.as_deref(), Some("abc"));
        assert_eq!((c.num_queues, c.queue_size, c.slot), (2, 128, Some(5)));
        let d = blk("driver=virtio-blk,drive=x");
        assert_eq!(
            (d.num_queues, d.queue_size, d.slot, d.id),
            (1, 256, None, None)
        );
        assert_eq!(blk("virtio-blk-pci,drive=x,addr=1f.0").slot, Some(31));
    }

    #[test]
    fn virtio_balloon_properties() {
        let balloon = |arg: &str| match parse_device(arg) {
            Ok(Parsed::Value(DeviceConfig::Balloon(c))) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            balloon("virtio-balloon-pci,id=b0,deflate-on-oom=on,page-poison=off,addr=0x6"),
            VirtioBalloonConfig {
                id: Some("b0".into()),
                deflate_on_oom: true,
                page_poison: false,
                slot: Some(6),
            }
        );
        let d = balloon("virtio-balloon");
        assert_eq!(
            (d.id, d.deflate_on_oom, d.page_poison, d.slot),
            (None, false, true, None)
        );
        assert_eq!(
            parse_device("virtio-balloon-pci,deflate-on-oom=maybe"),
            Err(ArgError::ExpectsBool("deflate-on-oom".into()))
        );
        assert_eq!(
            parse_device("virtio-balloon-pci,bootindex=1"),
            Err(ArgError::UnknownParameter("bootindex".into()))
        );
    }

    #[test]
    fn virtio_net_queue_sizes_and_mtu() {
        let nic = |arg: &str| match parse_device(arg) {
            Ok(Parsed::Value(DeviceConfig::VirtioNet(c))) => Ok(c),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let c = nic("virtio-net-pci,rx_queue_size=1024,tx_queue_size=512,host_mtu=9000").unwrap();
        assert_eq!(
            (c.rx_queue_size, c.tx_queue_size, c.host_mtu),
            (1024, 512, Some(9000))
        );
        let d = nic("virtio-net-pci,host_mtu=0").unwrap();
        assert_eq!(
            (d.rx_queue_size, d.tx_queue_size, d.host_mtu),
            (256, 256, None)
        );
        // QEMU 7.2's realize errors, receive queue first.
        assert_eq!(
            nic("virtio-net-pci,tx_queue_size=100,rx_queue_size=2048"),
            Err(
                "Invalid rx_queue_size (= 2048), must be a power of 2 between 256 and 1024.".into()
            )
        );
        assert_eq!(
            nic("virtio-net-pci,tx_queue_size=384"),
            Err("Invalid tx_queue_size (= 384), must be a power of 2 between 256 and 1024".into())
        );
        assert_eq!(
            nic("virtio-net-pci,host_mtu=70000"),
            Err("parameter 'host_mtu' expects a non-negative integer".into())
        );
        assert_eq!(
            nic("virtio-net-pci,rx_queue_size=big"),
            Err("parameter 'rx_queue_size' expects a non-negative integer".into())
        );
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse_device("help"), Ok(Parsed::List(ListTopic::Devices)));
        assert_eq!(
            parse_device("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:07,id=nic0,addr=4"),
            Ok(Parsed::Value(DeviceConfig::VirtioNet(VirtioNetConfig {
                id: Some("nic0".into()),
                netdev: Some("n0".into()),
                mac: Some([0x52, 0x54, 0, 0, 0, 7]),
                slot: Some(4),
                rx_queue_size: 256,
                tx_queue_size: 256,
                host_mtu: None,
            })))
        );
        assert_eq!(
            parse_device("virtio-net-pci,mac=zz"),
            Err(ArgError::InvalidMac("zz".into()))
        );
        assert_eq!(
            parse_device("e1000,netdev=n"),
            Err(ArgError::UnknownDevice("e1000".into()))
        );
        assert_eq!(parse_device("virtio-blk-pci"), Err(ArgError::DriveNotSet));
        assert_eq!(
            parse_device("virtio-blk-pci,drive=x,addr=0x20"),
            Err(ArgError::InvalidPciAddress("0x20".into()))
        );
        assert_eq!(
            parse_device("virtio-blk-pci,drive=x,foo=1"),
            Err(ArgError::UnknownParameter("foo".into()))
        );
        assert!(matches!(
            parse_device("virtio-blk-pci,drive=x,bus=pci.1"),
            Err(ArgError::UnsupportedValue { .. })
        ));
    }
}
