//! `-netdev TYPE,id=ID,...` and `-nic TYPE,...`: network backends, in QEMU's QemuOpts syntax
//! or as JSON, giving the QAPI `Netdev` that `netdev_add` takes.

use petrel_devices::virtio::net::DEFAULT_QUEUE_SIZE;
use petrel_qmp::schema::types::{Netdev, NetdevBranch};
use serde_json::{Map, Value};

use super::config::{DeviceConfig, VirtioNetConfig};
use super::error::ArgError;
use super::opts::{parse_bool, parse_u32, Opts, Syntax};
use super::size::parse_size;

/// The backend types petrel builds; the schema's other `NetClientDriver` values are refused
/// as QEMU refuses a backend it was built without.
pub(crate) const BACKENDS: &[&str] = &["user", "tap", "socket"];

/// The members of each backend type, with how their QemuOpts strings are typed.
fn members(kind: &str) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match kind {
        "user" => &[
            ("hostname", Str),
            ("restrict", Bool),
            ("ipv4", Bool),
            ("ipv6", Bool),
            ("ip", Str),
            ("net", Str),
            ("host", Str),
            ("tftp", Str),
            ("bootfile", Str),
            ("dhcpstart", Str),
            ("dns", Str),
            ("dnssearch", List),
            ("domainname", Str),
            ("ipv6-prefix", Str),
            ("ipv6-prefixlen", Int),
            ("ipv6-host", Str),
            ("ipv6-dns", Str),
            ("smb", Str),
            ("smbserver", Str),
            ("hostfwd", List),
            ("guestfwd", List),
            ("tftp-server-name", Str),
        ],
        "tap" => &[
            ("ifname", Str),
            ("fd", Str),
            ("fds", Str),
            ("script", Str),
            ("downscript", Str),
            ("br", Str),
            ("helper", Str),
            ("sndbuf", Size),
            ("vnet_hdr", Bool),
            ("vhost", Bool),
            ("vhostfd", Str),
            ("vhostfds", Str),
            ("vhostforce", Bool),
            ("queues", Uint),
            ("poll-us", Uint),
        ],
        "socket" => &[
            ("fd", Str),
            ("listen", Str),
            ("connect", Str),
            ("mcast", Str),
            ("localaddr", Str),
            ("udp", Str),
        ],
        _ => &[],
    }
}

/// How a QemuOpts string becomes a JSON member.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    /// QAPI `int`.
    Int,
    /// QAPI `uint32`.
    Uint,
    Size,
    /// A repeatable key whose values become a `['String']` list.
    List,
}

/// Parses one `-netdev` into the JSON of a checked `Netdev`.
pub(crate) fn parse_netdev(arg: &str) -> Result<Value, ArgError> {
    let value = if arg.trim_start().starts_with('{') {
        serde_json::from_str(arg).map_err(|e| ArgError::InvalidNetdev(e.to_string()))?
    } else {
        let opts = Opts::parse(arg, Some("type"), Syntax::QemuOpts)?;
        opts_to_json(&opts, &[]).map_err(qemu_wording)?
    };
    check_netdev(value).map_err(qemu_wording)
}

/// QEMU words the errors of `-netdev` and `-nic` as its QAPI visitors do (capitalised, an
/// identifier hint on a second line), unlike petrel's wording for its other options.
fn qemu_wording(e: ArgError) -> ArgError {
    let text = match e {
        ArgError::MissingParameter(p) => format!("Parameter '{p}' is missing"),
        ArgError::UnknownParameter(p) => format!("Invalid parameter '{p}'"),
        ArgError::ExpectsBool(p) => format!("Parameter '{p}' expects 'on' or 'off'"),
        ArgError::InvalidId => "Parameter 'id' expects an identifier\n\
             Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."
            .into(),
        other => return other,
    };
    ArgError::InvalidNetdev(text)
}

/// Checks a netdev's JSON as `netdev_add` would: the id, a backend petrel has, and the
/// members of its type.
pub fn check_netdev(value: Value) -> Result<Value, ArgError> {
    match value["id"].as_str() {
        None => Err(ArgError::MissingParameter("id")),
        Some(id) if !super::chardev::is_identifier(id) => Err(ArgError::InvalidId),
        Some(_) => check_members(value),
    }
}

/// [`check_netdev`] without the identifier rule, for the ids petrel makes up itself.
fn check_members(value: Value) -> Result<Value, ArgError> {
    let kind = value["type"].as_str().unwrap_or_default().to_string();
    let netdev: Netdev = serde_json::from_value(value.clone()).map_err(|e| {
        let text = e.to_string();
        if value.get("type").is_none() {
            ArgError::MissingParameter("type")
        } else if text.contains("unknown variant") {
            ArgError::InvalidNetdevType(kind.clone())
        } else if let Some(field) = text
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            ArgError::InvalidNetdev(format!("Parameter '{field}' is unexpected"))
        } else {
            ArgError::InvalidNetdev(e.to_string())
        }
    })?;
    if !BACKENDS.contains(&kind.as_str()) {
        return Err(ArgError::NetBackendMissing(kind));
    }
    debug_assert!(!matches!(netdev.branch, NetdevBranch::Nic(_)));
    Ok(value)
}

/// Turns QemuOpts into netdev JSON, typing each member by the schema; `skip` lists keys that
/// belong to someone else (the NIC half of a `-nic`).
fn opts_to_json(opts: &Opts, skip: &[&str]) -> Result<Value, ArgError> {
    let kind = opts.get("type").unwrap_or_default();
    let known = members(kind);
    let mut map = Map::new();
    for (key, raw) in opts.iter() {
        if skip.contains(&key) {
            continue;
        }
        if key == "type" || key == "id" {
            map.insert(key.to_string(), Value::String(raw.to_string()));
            continue;
        }
        let Some(&(_, kind)) = known.iter().find(|(name, _)| *name == key) else {
            // An unknown type is reported for `type` rather than for its members.
            if known.is_empty() {
                continue;
            }
            return Err(ArgError::UnknownParameter(key.to_string()));
        };
        let value = match kind {
            Kind::Str => Value::String(raw.to_string()),
            Kind::Bool => Value::Bool(parse_bool(key, raw)?),
            Kind::Int | Kind::Uint => Value::from(parse_u32(key, raw).map_err(|_| {
                let what = if matches!(kind, Kind::Int) {
                    "an int64"
                } else {
                    "a uint64"
                };
                ArgError::InvalidNetdev(format!("Parameter '{key}' expects {what} value"))
            })?),
            Kind::Size => Value::from(parse_size(raw, 1).map_err(|_| {
                ArgError::InvalidNetdev(format!("Parameter '{key}' expects a size value"))
            })?),
            Kind::List => {
                let entry = map
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = entry {
                    list.push(serde_json::json!({ "str": raw }));
                }
                continue;
            }
        };
        map.insert(key.to_string(), value);
    }
    Ok(Value::Object(map))
}

/// The NIC model names `-nic model=` takes.
const NIC_MODELS: &[&str] = &["virtio-net-pci", "virtio"];

/// Parses one `-nic`: a netdev (unless `none`) and the virtio-net-pci device on it.
/// `index` counts the `-nic` options so far, for the generated netdev id.
pub(crate) fn parse_nic(
    arg: &str,
    index: usize,
) -> Result<Option<(Value, DeviceConfig)>, ArgError> {
    parse_nic_opts(arg, index).map_err(qemu_wording)
}

fn parse_nic_opts(arg: &str, index: usize) -> Result<Option<(Value, DeviceConfig)>, ArgError> {
    let mut opts = Opts::parse(arg, Some("type"), Syntax::QemuOpts)?;
    if opts.get("type") == Some("none") {
        return Ok(None);
    }
    if let Some(model) = opts.get("model") {
        if !NIC_MODELS.contains(&model) {
            return Err(ArgError::UnknownNicModel(model.to_string()));
        }
    }
    let mac = opts.get("mac").map(parse_mac).transpose()?;
    let netdev = if opts.get("id").is_some() {
        check_netdev(opts_to_json(&opts, &["model", "mac"])?)?
    } else {
        // QEMU's name for the backend of an anonymous -nic.
        opts.push("id", &format!("__org.qemu.nic{index}"));
        check_members(opts_to_json(&opts, &["model", "mac"])?)?
    };
    let device = DeviceConfig::VirtioNet(VirtioNetConfig {
        id: None,
        netdev: netdev["id"].as_str().map(str::to_string),
        mac,
        slot: None,
        rx_queue_size: DEFAULT_QUEUE_SIZE,
        tx_queue_size: DEFAULT_QUEUE_SIZE,
        host_mtu: None,
    });
    Ok(Some((netdev, device)))
}

/// A MAC address in QEMU's `xx:xx:xx:xx:xx:xx` form (`-` also separates).
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], ArgError> {
    let bad = || ArgError::InvalidMac(s.to_string());
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qemuopts_are_typed_by_the_schema() {
        let v = parse_netdev(
            "user,id=u0,restrict=on,hostfwd=tcp::5555-:22,hostfwd=udp::5556-:53,net=10.1.0.0/24",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "user", "id": "u0", "restrict": true, "net": "10.1.0.0/24",
                   "hostfwd": [{"str": "tcp::5555-:22"}, {"str": "udp::5556-:53"}]})
        );
        let v = parse_netdev("tap,id=t0,ifname=tap7,script=no,vnet_hdr=off,sndbuf=1k").unwrap();
        assert_eq!(v["vnet_hdr"], json!(false));
        assert_eq!(v["sndbuf"], json!(1024));
        let v = parse_netdev(r#"{"type": "socket", "id": "s", "listen": ":1234"}"#).unwrap();
        assert_eq!(v["listen"], json!(":1234"));
    }

    #[test]
    fn qemu_errors() {
        let err = |s| parse_netdev(s).unwrap_err().to_string();
        assert_eq!(
            err("foo,id=x"),
            "Parameter 'type' does not accept value 'foo'"
        );
        assert_eq!(err("user"), "Parameter 'id' is missing");
        assert_eq!(err("id=a"), "Parameter 'type' is missing");
        assert_eq!(
            err("user,id=1x"),
            "Parameter 'id' expects an identifier\n\
             Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."
        );
        assert_eq!(
            err("user,id=a,restrict=maybe"),
            "Parameter 'restrict' expects 'on' or 'off'"
        );
        assert_eq!(err("user,id=a,bogus=1"), "Invalid parameter 'bogus'");
        assert_eq!(
            err(r#"{"type": "user", "id": "a", "bogus": 1}"#),
            "Parameter 'bogus' is unexpected"
        );
        assert_eq!(err(r#"{"type": "user"}"#), "Parameter 'id' is missing");
        assert_eq!(
            err("tap,id=a,sndbuf=xyz"),
            "Parameter 'sndbuf' expects a size value"
        );
        assert_eq!(
            err("tap,id=a,queues=x"),
            "Parameter 'queues' expects a uint64 value"
        );
        assert_eq!(
            err("user,id=a,ipv6-prefixlen=x"),
            "Parameter 'ipv6-prefixlen' expects an int64 value"
        );
        assert_eq!(
            err("vde,id=v"),
            "network backend 'vde' is not compiled into this binary"
        );
    }

    #[test]
    fn nic_makes_a_netdev_and_a_device() {
        let (netdev, dev) = parse_nic("user,model=virtio-net-pci,mac=52:54:00:aa:bb:cc", 2)
            .unwrap()
            .unwrap();
        assert_eq!(netdev, json!({"type": "user", "id": "__org.qemu.nic2"}));
        assert_eq!(
            dev,
            DeviceConfig::VirtioNet(VirtioNetConfig {
                id: None,
                netdev: Some("__org.qemu.nic2".into()),
                mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]),
                slot: None,
                rx_queue_size: 256,
                tx_queue_size: 256,
                host_mtu: None,
            })
        );
        assert_eq!(parse_nic("none", 0).unwrap(), None);
        assert_eq!(
            parse_nic("user,model=e1000", 0),
            Err(ArgError::UnknownNicModel("e1000".into()))
        );
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Ok([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("1-2-3-4-5-6"), Ok([1, 2, 3, 4, 5, 6]));
        for bad in [
            "zz",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "520:54:00:12:34:56",
        ] {
            assert_eq!(parse_mac(bad), Err(ArgError::InvalidMac(bad.into())));
        }
    }
}
