//! I/O throttling: QEMU's validation messages, admitted rates on the real clock,
//! and the limits `query-block` reports.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use petrel_block::info;
use petrel_block::throttle::{ThrottleConfig, ThrottleError};
use petrel_block::{BlockBackend, BlockGraph, ImageFormat, OpenOptions};

fn config() -> ThrottleConfig {
    ThrottleConfig::default()
}

#[test]
fn validation_messages_are_qemus() {
    let cases: Vec<(ThrottleConfig, &str)> = vec![
        (
            ThrottleConfig {
                bps: 1,
                bps_rd: 1,
                ..config()
            },
            "bps/iops/max total values and read/write values cannot be used at the same time",
        ),
        (
            ThrottleConfig {
                iops_max: 10,
                iops_wr_max: 10,
                iops_wr: 5,
                iops: 5,
                ..config()
            },
            "bps/iops/max total values and read/write values cannot be used at the same time",
        ),
        (
            ThrottleConfig {
                bps: 1000,
                iops_size: 4096,
                ..config()
            },
            "iops size requires an iops value to be set",
        ),
        (
            ThrottleConfig {
                bps_wr: -1,
                ..config()
            },
            "bps/iops/max values must be within [0, 1000000000000000]",
        ),
        (
            ThrottleConfig {
                iops: 1_000_000_000_000_001,
                ..config()
            },
            "bps/iops/max values must be within [0, 1000000000000000]",
        ),
        (
            ThrottleConfig {
                bps: 100,
                bps_max_length: 0,
                ..config()
            },
            "the burst length cannot be 0",
        ),
        (
            ThrottleConfig {
                bps: 100,
                bps_max_length: 5,
                ..config()
            },
            "burst length set without burst rate",
        ),
        (
            ThrottleConfig {
                iops_rd_max: 100,
                ..config()
            },
            "bps_max/iops_max require corresponding bps/iops values",
        ),
        (
            ThrottleConfig {
                bps: 1000,
                bps_max: 999,
                ..config()
            },
            "bps_max/iops_max cannot be lower than bps/iops",
        ),
        (
            ThrottleConfig {
                iops: 10,
                iops_max: 20,
                iops_max_length: 1 << 32,
                ..config()
            },
            "iops_max_length value must be in the range [0, 4294967295]",
        ),
    ];
    for (cfg, want) in cases {
        let err = cfg.validate().expect_err(want);
        assert_eq!(err.to_string(), want, "{cfg:?}");
    }
    let ok = ThrottleConfig {
        bps_rd: 1000,
        bps_wr: 2000,
        iops: 100,
        iops_max: 1000,
        iops_max_length: 60,
        iops_size: 4096,
        ..config()
    };
    assert_eq!(ok.validate(), Ok(()));
    assert!(ok.is_enabled());
    assert!(!config().is_enabled());
    assert_eq!(config().validate(), Ok(()));
}

/// A raw disk of `size` bytes, its graph and a backend on it.
fn open_disk(dir: &TempDir, size: u64) -> (BlockGraph, BlockBackend) {
    let path = dir.join("disk.raw");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut graph = BlockGraph::new();
    let opts = OpenOptions {
        format: Some(ImageFormat::Raw),
        ..OpenOptions::new(path)
    };
    let root = graph.open(&opts, Some("disk0")).unwrap();
    let blk = BlockBackend::new("drive0", root, false).unwrap();
    (graph, blk)
}

/// Does `bytes`-sized I/O through `blk` for `run`, waiting as the throttle says; returns the
/// admission times since the start.
fn throttled_io(blk: &BlockBackend, write: bool, bytes: usize, run: Duration) -> Vec<Duration> {
    let start = Instant::now();
    let mut buf = vec![0x5au8; bytes];
    let mut times = Vec::new();
    let mut offset = 0u64;
    while start.elapsed() < run {
        match blk.throttle_admit(write, bytes as u64) {
            Ok(()) => {
                times.push(start.elapsed());
                if write {
                    blk.write_at(offset, &buf).unwrap();
                } else {
                    blk.read_at(offset, &mut buf).unwrap();
                }
                offset = (offset + bytes as u64) % (blk.size() - bytes as u64);
            }
            Err(wait) => std::thread::sleep(wait),
        }
    }
    times
}

fn per_second(times: &[Duration], from: f64, to: f64) -> f64 {
    let n = times
        .iter()
        .filter(|t| (from..to).contains(&t.as_secs_f64()))
        .count();
    n as f64 / (to - from)
}

fn assert_within(got: f64, want: f64, what: &str) {
    let err = (got - want).abs() / want;
    assert!(
        err <= 0.10,
        "{what}: {got:.1} vs {want:.1} ({:.1}% off)",
        err * 100.0
    );
}

#[test]
fn admitted_rates_follow_bps_and_iops_on_the_real_clock() {
    let dir = TempDir::new("throttle-rate");
    let (_graph, blk) = open_disk(&dir, 64 << 20);
    let dir2 = TempDir::new("throttle-rate2");
    let (_graph2, blk2) = open_disk(&dir2, 64 << 20);
    let bps = 2 << 20;
    blk.set_throttle(ThrottleConfig {
        bps_wr: bps,
        ..config()
    })
    .unwrap();
    let iops = 200;
    blk2.set_throttle(ThrottleConfig { iops, ..config() })
        .unwrap();
    let run = Duration::from_secs(2);
    let (writes, reads) = std::thread::scope(|s| {
        let w = s.spawn(|| throttled_io(&blk, true, 16384, run));
        let r = s.spawn(|| throttled_io(&blk2, false, 512, run));
        (w.join().unwrap(), r.join().unwrap())
    });
    eprintln!(
        "write bytes/s {:.0} (limit {bps}), read ops/s {:.1} (limit {iops})",
        per_second(&writes, 0.0, 2.0) * 16384.0,
        per_second(&reads, 0.0, 2.0)
    );
    // Over the whole run (including QEMU's tenth-of-a-second initial burst) and after it.
    assert_within(
        per_second(&writes, 0.0, 2.0) * 16384.0,
        bps as f64,
        "bps over 2 s",
    );
    assert_within(
        per_second(&writes, 0.5, 2.0) * 16384.0,
        bps as f64,
        "bps steady",
    );
    assert_within(per_second(&reads, 0.0, 2.0), iops as f64, "iops over 2 s");
    assert_within(per_second(&reads, 0.5, 2.0), iops as f64, "iops steady");
    // A write limit leaves reads alone.
    let t = Instant::now();
    for _ in 0..1000 {
        blk.throttle_admit(false, 1 << 20).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn refusal_says_how_long_and_zero_config_disables() {
    let dir = TempDir::new("throttle-wait");
    let (_graph, blk) = open_disk(&dir, 1 << 20);
    for _ in 0..100_000 {
        blk.throttle_admit(true, 1 << 30).unwrap();
    }
    blk.set_throttle(ThrottleConfig {
        iops_wr: 10,
        ..config()
    })
    .unwrap();
    // Bucket capacity is one operation: two go, the third waits about 100 ms.
    blk.throttle_admit(true, 512).unwrap();
    blk.throttle_admit(true, 512).unwrap();
    let wait = blk.throttle_admit(true, 512).unwrap_err();
    assert!(
        wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // Reads are not limited by iops_wr.
    blk.throttle_admit(false, 512).unwrap();
    std::thread::sleep(wait);
    blk.throttle_admit(true, 512).unwrap();
    // An invalid configuration leaves the old one in force.
    let err = blk
        .set_throttle(ThrottleConfig {
            iops_wr: -5,
            ..config()
        })
        .unwrap_err();
    assert_eq!(err, ThrottleError::OutOfRange);
    assert_eq!(blk.throttle_config().iops_wr, 10);
    // All zeroes: unthrottled again.
    blk.set_throttle(config()).unwrap();
    for _ in 0..1000 {
        blk.throttle_admit(true, 512).unwrap();
    }
    assert_eq!(blk.throttle_config(), config());
}

#[test]
fn query_block_reports_limits_as_qemu() {
    let dir = TempDir::new("throttle-info");
    let (graph, blk) = open_disk(&dir, 1 << 20);

    let json = |v: &info::BlockDeviceInfo| serde_json::to_value(v).unwrap();
    let plain = json(&info::describe_backend(&graph, &blk).unwrap());
    assert_eq!(plain["bps"], 0);
    for absent in ["bps_max", "bps_max_length", "iops_size", "group"] {
        assert!(plain.get(absent).is_none(), "{absent} in {plain}");
    }

    blk.set_throttle(ThrottleConfig {
        bps: 1_000_000,
        bps_max: 5_000_000,
        bps_max_length: 30,
        iops_rd: 100,
        iops_wr: 50,
        iops_size: 8192,
        ..config()
    })
    .unwrap();
    let v = json(&info::describe_backend(&graph, &blk).unwrap());
    assert_eq!(v["bps"], 1_000_000);
    assert_eq!(v["bps_rd"], 0);
    assert_eq!(v["iops_rd"], 100);
    assert_eq!(v["iops_wr"], 50);
    assert_eq!(v["bps_max"], 5_000_000);
    assert_eq!(v["bps_max_length"], 30);
    assert_eq!(v["iops_size"], 8192);
    // A burst rate that is not set is absent, and so is its length.
    assert!(v.get("iops_rd_max").is_none() && v.get("iops_rd_max_length").is_none());
    // No group given: the backend's name.
    assert_eq!(v["group"], "drive0");
    // query-named-block-nodes asks without a backend and reports no limits.
    let node = json(&info::describe(&graph, "disk0").unwrap());
    assert_eq!(node["bps"], 0);
    assert!(node.get("group").is_none() && node.get("bps_max").is_none());

    // A named group sticks when later updates name none.
    blk.set_throttle(ThrottleConfig {
        bps: 1,
        group: Some("slow".into()),
        ..config()
    })
    .unwrap();
    blk.set_throttle(ThrottleConfig { bps: 2, ..config() })
        .unwrap();
    let v = json(&info::describe_backend(&graph, &blk).unwrap());
    assert_eq!(
        (v["bps"].clone(), v["group"].clone()),
        (2.into(), "slow".into())
    );
    // Disabled: back to zeroes and no group.
    blk.set_throttle(config()).unwrap();
    assert_eq!(json(&info::describe_backend(&graph, &blk).unwrap()), plain);
}
