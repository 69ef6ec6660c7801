//! `-drive file=...,if=virtio|none,...`: a disk image and, for `if=virtio`, its device.
//!
//! QEMU's QemuOpts syntax. The image is opened when the machine is built, so a missing or
//! broken file is reported then, with the image's own error.

use std::path::PathBuf;

use petrel_devices::virtio::block::{ErrorAction, ErrorPolicy};

use super::config::{CacheConfig, DriveConfig, DriveInterface};
use super::error::ArgError;
use super::opts::{parse_bool, Opts, Syntax};

/// Keys `-drive` takes, besides the `throttling.*` family.
const KEYS: &[&str] = &[
    "file",
    "format",
    "if",
    "id",
    "node-name",
    "readonly",
    "read-only",
    "cache",
    "cache.direct",
    "cache.no-flush",
    "cache.writeback",
    "werror",
    "rerror",
    "serial",
    "discard",
    "snapshot",
    "aio",
    "detect-zeroes",
    "media",
];

/// `-drive` throttling keys, with the QMP member each sets; the member's name is also the
/// legacy `-drive` spelling (`bps=`, `iops_rd=`).
pub(crate) const THROTTLE_KEYS: &[(&str, &str)] = &[
    ("throttling.bps-total", "bps"),
    ("throttling.bps-read", "bps_rd"),
    ("throttling.bps-write", "bps_wr"),
    ("throttling.iops-total", "iops"),
    ("throttling.iops-read", "iops_rd"),
    ("throttling.iops-write", "iops_wr"),
    ("throttling.bps-total-max", "bps_max"),
    ("throttling.bps-read-max", "bps_rd_max"),
    ("throttling.bps-write-max", "bps_wr_max"),
    ("throttling.iops-total-max", "iops_max"),
    ("throttling.iops-read-max", "iops_rd_max"),
    ("throttling.iops-write-max", "iops_wr_max"),
    ("throttling.bps-total-max-length", "bps_max_length"),
    ("throttling.bps-read-max-length", "bps_rd_max_length"),
    ("throttling.bps-write-max-length", "bps_wr_max_length"),
    ("throttling.iops-total-max-length", "iops_max_length"),
    ("throttling.iops-read-max-length", "iops_rd_max_length"),
    ("throttling.iops-write-max-length", "iops_wr_max_length"),
    ("throttling.iops-size", "iops_size"),
];

/// Counts `-drive`s per interface, for QEMU's generated ids.
#[derive(Debug, Default)]
pub(crate) struct DriveIndex {
    virtio: u32,
    none: u32,
}

/// Parses one `-drive`; `index` numbers drives without `id=` as QEMU does.
pub(crate) fn parse_drive(arg: &str, index: &mut DriveIndex) -> Result<DriveConfig, ArgError> {
    let opts = Opts::parse(arg, None, Syntax::QemuOpts)?;
    let throttle_names: Vec<&str> = THROTTLE_KEYS
        .iter()
        .flat_map(|&(new, member)| [new, member])
        .collect();
    let known: Vec<&str> = KEYS.iter().copied().chain(throttle_names).collect();
    opts.check_known(&known)?;

    let file = opts.get("file").ok_or(ArgError::MissingParameter("file"))?;
    if file.is_empty() {
        return Err(ArgError::MissingParameter("file"));
    }
    let interface = match opts.get("if").unwrap_or("ide") {
        "virtio" => DriveInterface::Virtio,
        "none" => DriveInterface::None,
        other => {
            return Err(ArgError::UnsupportedValue {
                key: "if".into(),
                value: other.into(),
            })
        }
    };
    let format = match opts.get("format") {
        None => None,
        Some(f @ ("raw" | "qcow2")) => Some(f.to_string()),
        Some(other) => return Err(ArgError::UnknownFormat(other.to_string())),
    };
    if let Some(m) = opts.get("media").filter(|m| *m != "disk") {
        return Err(ArgError::UnsupportedValue {
            key: "media".into(),
            value: m.into(),
        });
    }
    if let Some(a) = opts.get("aio").filter(|a| *a != "threads") {
        return Err(ArgError::UnsupportedValue {
            key: "aio".into(),
            value: a.into(),
        });
    }
    if let Some(d) = opts.get("detect-zeroes").filter(|d| *d != "off") {
        return Err(ArgError::UnsupportedValue {
            key: "detect-zeroes".into(),
            value: d.into(),
        });
    }
    let read_only = opts.get_bool("readonly")?.or(opts.get_bool("read-only")?);
    let discard_unmap = match opts.get("discard").unwrap_or("ignore") {
        "ignore" | "off" => false,
        "unmap" | "on" => true,
        other => return Err(ArgError::InvalidDiscard(other.to_string())),
    };
    let id = match opts.get("id") {
        Some(id) => {
            if !super::chardev::is_identifier(id) {
                return Err(ArgError::InvalidId);
            }
            id.to_string()
        }
        None => match interface {
            DriveInterface::Virtio => {
                index.virtio += 1;
                format!("virtio{}", index.virtio - 1)
            }
            DriveInterface::None => {
                index.none += 1;
                format!("none{}", index.none - 1)
            }
        },
    };
    let policy = ErrorPolicy {
        read: match opts.get("rerror") {
            None => ErrorAction::Report,
            Some("enospc") => return Err(ArgError::InvalidErrorAction("rerror", "enospc".into())),
            Some(v) => v
                .parse()
                .map_err(|_| ArgError::InvalidErrorAction("rerror", v.into()))?,
        },
        write: match opts.get("werror") {
            None => ErrorAction::Enospc,
            Some(v) => v
                .parse()
                .map_err(|_| ArgError::InvalidErrorAction("werror", v.into()))?,
        },
    };
    let mut throttle = Vec::new();
    for &(new, member) in THROTTLE_KEYS {
        if let Some((key, v)) = [new, member]
            .iter()
            .find_map(|k| opts.get(k).map(|v| (*k, v)))
        {
            let n: u64 = v
                .parse()
                .map_err(|_| ArgError::ExpectsNumber(key.to_string()))?;
            throttle.push((member.to_string(), n));
        }
    }
    Ok(DriveConfig {
        id,
        interface,
        file: PathBuf::from(file),
        format,
        node_name: opts.get("node-name").map(str::to_string),
        read_only: read_only.unwrap_or(false),
        cache: cache_config(&opts)?,
        error_policy: policy,
        serial: opts.get("serial").map(str::to_string),
        discard_unmap,
        snapshot: opts.get_bool("snapshot")?.unwrap_or(false),
        throttle,
    })
}

/// `-snapshot`: turns `snapshot=on` for the drive parsed from `arg` unless `arg` sets
/// `snapshot` itself, as QEMU's `drive_enable_snapshot` does (so `snapshot=off` wins).
pub(crate) fn apply_global_snapshot(drive: &mut DriveConfig, arg: &str) {
    let given = Opts::parse(arg, None, Syntax::QemuOpts).is_ok_and(|o| o.get("snapshot").is_some());
    if !given {
        drive.snapshot = true;
    }
}

/// `cache=` as QEMU maps it, then the individual `cache.*` flags over it.
fn cache_config(opts: &Opts) -> Result<CacheConfig, ArgError> {
    let mut c = match opts.get("cache").unwrap_or("writeback") {
        "writeback" => CacheConfig::default(),
        "none" | "off" => CacheConfig {
            direct: true,
            ..CacheConfig::default()
        },
        "writethrough" => CacheConfig {
            writeback: false,
            ..CacheConfig::default()
        },
        "directsync" => CacheConfig {
            writeback: false,
            direct: true,
            no_flush: false,
        },
        "unsafe" => CacheConfig {
            no_flush: true,
            ..CacheConfig::default()
        },
        other => return Err(ArgError::InvalidCacheMode(other.to_string())),
    };
    if let Some(v) = opts.get("cache.direct") {
        c.direct = parse_bool("cache.direct", v)?;
    }
    if let Some(v) = opts.get("cache.no-flush") {
        c.no_flush = parse_bool("cache.no-flush", v)?;
    }
    if let Some(v) = opts.get("cache.writeback") {
        c.writeback = parse_bool("cache.writeback", v)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arg: &str) -> Result<DriveConfig, ArgError> {
        parse_drive(arg, &mut DriveIndex::default())
    }

    #[test]
    fn virtio_drive_defaults() {
        let d = parse("file=/x.img,if=virtio").unwrap();
        assert_eq!(d.id, "virtio0");
        assert_eq!(d.interface, DriveInterface::Virtio);
        assert_eq!(d.file, PathBuf::from("/x.img"));
        assert_eq!(d.format, None);
        assert!(!d.read_only && !d.snapshot && !d.discard_unmap);
        assert_eq!(d.cache, CacheConfig::default());
        assert_eq!(d.error_policy, ErrorPolicy::default());
        assert!(d.throttle.is_empty());
    }

    #[test]
    fn generated_ids_count_per_interface() {
        let mut index = DriveIndex::default();
        let ids: Vec<String> = [
            "file=a,if=virtio",
            "file=b,if=none",
            "file=c,if=virtio",
            "file=d,if=none,id=x",
            "file=e,if=none",
        ]
        .iter()
        .map(|a| parse_drive(a, &mut index).unwrap().id)
        .collect();
        assert_eq!(ids, ["virtio0", "none0", "virtio1", "x", "none1"]);
    }

    #[test]
    fn every_option() {
        let d = parse(
            "file=/a,,b.qcow2,format=qcow2,if=none,id=d0,node-name=n0,readonly=on,\
             cache=none,werror=stop,rerror=ignore,serial=S1,discard=unmap,snapshot=on,\
             throttling.bps-total=1000,iops_rd=5",
        )
        .unwrap();
        assert_eq!(d.file, PathBuf::from("/a,b.qcow2"));
        assert_eq!(d.format.as_deref(), Some("qcow2"));
        assert_eq!(d.node_name.as_deref(), Some("n0"));
        assert!(d.read_only && d.snapshot && d.discard_unmap);
        assert!(d.cache.direct && d.cache.writeback && !d.cache.no_flush);
        assert_eq!(d.error_policy.write, ErrorAction::Stop);
        assert_eq!(d.error_policy.read, ErrorAction::Ignore);
        assert_eq!(d.serial.as_deref(), Some("S1"));
        assert_eq!(
            d.throttle,
            [("bps".to_string(), 1000), ("iops_rd".to_string(), 5)]
        );
    }

    #[test]
    fn global_snapshot_is_a_default() {
        for (arg, want) in [
            ("file=x,if=none", true),
            ("file=x,if=none,snapshot=off", false),
            ("file=x,if=none,snapshot=on", true),
        ] {
            let mut d = parse(arg).unwrap();
            apply_global_snapshot(&mut d, arg);
            assert_eq!(d.snapshot, want, "{arg}");
        }
    }

    #[test]
    fn cache_modes() {
        let c = |m: &str| parse(&format!("file=x,if=none,cache={m}")).unwrap().cache;
        assert!(!c("writethrough").writeback);
        assert!(c("directsync").direct && !c("directsync").writeback);
        assert!(c("unsafe").no_flush);
        assert!(matches!(
            parse("file=x,if=none,cache=fast"),
            Err(ArgError::InvalidCacheMode(_))
        ));
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(parse("if=virtio"), Err(ArgError::MissingParameter("file")));
        assert!(matches!(
            parse("file=x,if=ide"),
            Err(ArgError::UnsupportedValue { .. })
        ));
        assert!(matches!(
            parse("file=x"),
            Err(ArgError::UnsupportedValue { .. })
        ));
        assert_eq!(
            parse("file=x,if=none,format=vmdk"),
            Err(ArgError::UnknownFormat("vmdk".into()))
        );
        assert_eq!(
            parse("file=x,if=none,rerror=enospc"),
            Err(ArgError::InvalidErrorAction("rerror", "enospc".into()))
        );
        assert_eq!(
            parse("file=x,if=none,werror=retry"),
            Err(ArgError::InvalidErrorAction("werror", "retry".into()))
        );
        assert_eq!(
            parse("file=x,if=none,bogus=1"),
            Err(ArgError::UnknownParameter("bogus".into()))
        );
        assert_eq!(
            parse("file=x,if=none,throttling.bps-total=fast"),
            Err(ArgError::ExpectsNumber("throttling.bps-total".into()))
        );
        assert_eq!(parse("file=x,if=none,id=1x"), Err(ArgError::InvalidId));
    }
}
