//! Growing and shrinking raw and qcow2 disks.

mod common;

use common::{check_and_compare, make_chain, qemu_img_ok, TempDir, BASE_SIZE};
use petrel_block::{BackendError, BlockBackend, BlockGraph, ImageFormat, OpenOptions};

fn grow(dir: &TempDir, file: &str, format: ImageFormat) {
    let mut graph = BlockGraph::new();
    let mut opts = OpenOptions::new(dir.join(file));
    opts.format = Some(format);
    let root = graph.open(&opts, None).unwrap();
    let blk = BlockBackend::new("d", root, false).unwrap();
    let old = blk.size();
    let new = old + (3 << 20) + 512;
    blk.resize(new).unwrap();
    assert_eq!(blk.size(), new);
    let mut tail = vec![0xffu8; (new - old) as usize];
    blk.read_at(old, &mut tail).unwrap();
    assert!(tail.iter().all(|&b| b == 0), "{file}: new range not zero");
    blk.write_at(new - 100, &[3; 100]).unwrap();
    assert!(matches!(
        blk.read_at(new - 1, &mut [0; 2]),
        Err(BackendError::OutOfRange { .. })
    ));
    let mut end = [0u8; 100];
    blk.read_at(new - 100, &mut end).unwrap();
    assert_eq!(end, [3; 100]);
    let mut head = vec![0u8; 4096];
    blk.read_at(0, &mut head).unwrap();
    assert_eq!(head, common::pattern(4096));
}

#[test]
fn qcow2_overlay_grows_with_zeroes() {
    let dir = TempDir::new("resize-qcow2");
    make_chain(&dir);
    grow(&dir, "ovl.qcow2", ImageFormat::Qcow2);
    qemu_img_ok(dir.path(), &["check", "-q", "ovl.qcow2"]);
    let info = qemu_img_ok(dir.path(), &["info", "--output=json", "ovl.qcow2"]);
    let size = (BASE_SIZE + (3 << 20) + 512).to_string();
    assert!(
        info.contains(&format!("\"virtual-size\": {size}")),
        "{info}"
    );
}

#[test]
fn raw_grows_with_zeroes() {
    let dir = TempDir::new("resize-raw");
    make_chain(&dir);
    grow(&dir, "base.raw", ImageFormat::Raw);
    let len = std::fs::metadata(dir.join("base.raw")).unwrap().len();
    assert_eq!(len, (BASE_SIZE + (3 << 20) + 512) as u64);
}

/// A huge size on an image without a backing file costs metadata only, not the host's disk.
#[test]
fn qcow2_grows_to_a_pebibyte_sparsely() {
    let dir = TempDir::new("resize-huge");
    common::create_qcow2(dir.path(), "big.qcow2", "16M");
    let mut graph = BlockGraph::new();
    let mut opts = OpenOptions::new(dir.join("big.qcow2"));
    opts.format = Some(ImageFormat::Qcow2);
    let blk = BlockBackend::new("d", graph.open(&opts, None).unwrap(), false).unwrap();
    blk.resize(1 << 50).unwrap();
    assert_eq!(blk.size(), 1 << 50);
    let mut tail = [0xffu8; 512];
    blk.read_at((1 << 50) - 512, &mut tail).unwrap();
    assert_eq!(tail, [0u8; 512]);
    blk.flush().unwrap();
    drop(blk);
    let len = std::fs::metadata(dir.join("big.qcow2")).unwrap().len();
    assert!(len < 64 << 20, "the image grew to {len} bytes");
    qemu_img_ok(dir.path(), &["check", "-q", "big.qcow2"]);
}

/// Opens `file` in `dir` as a writable backend.
fn backend(dir: &TempDir, file: &str, format: ImageFormat) -> BlockBackend {
    let mut graph = BlockGraph::new();
    let mut opts = OpenOptions::new(dir.join(file));
    opts.format = Some(format);
    BlockBackend::new("d", graph.open(&opts, None).unwrap(), false).unwrap()
}

#[test]
fn raw_shrinks_and_grows_back_with_zeroes() {
    let dir = TempDir::new("shrink-raw");
    let base = make_chain(&dir);
    let blk = backend(&dir, "base.raw", ImageFormat::Raw);
    let small = (1 << 20) + 512;
    blk.resize(small).unwrap();
    assert_eq!(blk.size(), small);
    assert_eq!(
        std::fs::metadata(dir.join("base.raw")).unwrap().len(),
        small
    );
    assert!(matches!(
        blk.read_at(small - 1, &mut [0; 2]),
        Err(BackendError::OutOfRange { .. })
    ));
    let mut kept = vec![0u8; small as usize];
    blk.read_at(0, &mut kept).unwrap();
    assert_eq!(kept, base[..small as usize]);
    // What was cut is gone: growing back gives zeroes.
    blk.resize(BASE_SIZE as u64).unwrap();
    let mut tail = vec![0xffu8; BASE_SIZE - small as usize];
    blk.read_at(small, &mut tail).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
    // To nothing at all, as QEMU allows.
    blk.resize(0).unwrap();
    assert_eq!(blk.size(), 0);
    assert_eq!(std::fs::metadata(dir.join("base.raw")).unwrap().len(), 0);
}

/// Writes the pattern over the first `len` bytes of a fresh 16 MiB qcow2 `name`.
fn filled_qcow2(dir: &TempDir, name: &str, len: usize, options: &[&str]) -> Vec<u8> {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(options);
    args.extend_from_slice(&[name, "16M"]);
    qemu_img_ok(dir.path(), &args);
    let data = common::pattern(len);
    let blk = backend(dir, name, ImageFormat::Qcow2);
    blk.write_at(0, &data).unwrap();
    blk.flush().unwrap();
    data
}

/// Allocated clusters as `qemu-img check` counts them.
fn allocated_clusters(dir: &TempDir, name: &str) -> u64 {
    let out = qemu_img_ok(dir.path(), &["check", "--output=json", name]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["allocated-clusters"].as_u64().unwrap()
}

#[test]
fn qcow2_shrink_frees_the_clusters_past_the_end() {
    let dir = TempDir::new("shrink-qcow2");
    let data = filled_qcow2(&dir, "s.qcow2", 8 << 20, &[]);
    assert_eq!(allocated_clusters(&dir, "s.qcow2"), 128);
    // Inside the cluster at 3 MiB, 512-byte aligned but not cluster-aligned.
    let small = (3 << 20) + 512;
    let blk = backend(&dir, "s.qcow2", ImageFormat::Qcow2);
    blk.resize(small).unwrap();
    assert_eq!(blk.size(), small);
    assert!(matches!(
        blk.read_at(small, &mut [0; 512]),
        Err(BackendError::OutOfRange { .. })
    ));
    drop(blk);
    check_and_compare(&dir, &["s.qcow2"], "s.qcow2", &data[..small as usize]);
    // 48 clusters before 3 MiB, and the one the end falls in.
    assert_eq!(allocated_clusters(&dir, "s.qcow2"), 49);
    let info = qemu_img_ok(dir.path(), &["info", "--output=json", "s.qcow2"]);
    assert!(
        info.contains(&format!("\"virtual-size\": {small}")),
        "{info}"
    );

    // Grown back, the freed clusters read as zeroes; the cut-off part of the last kept
    // cluster shows its old bytes again, as it does in QEMU 7.2.
    let blk = backend(&dir, "s.qcow2", ImageFormat::Qcow2);
    blk.resize(8 << 20).unwrap();
    let mut back = vec![0xffu8; 8 << 20];
    blk.read_at(0, &mut back).unwrap();
    let cluster_end = (3 << 20) + (64 << 10);
    assert_eq!(back[..cluster_end], data[..cluster_end]);
    assert!(back[cluster_end..].iter().all(|&b| b == 0));
    drop(blk);
    qemu_img_ok(dir.path(), &["check", "-q", "s.qcow2"]);
}

#[test]
fn qcow2_overlay_shrunk_and_grown_does_not_show_its_backing_file() {
    let dir = TempDir::new("shrink-ovl");
    let base = make_chain(&dir);
    let blk = backend(&dir, "ovl.qcow2", ImageFormat::Qcow2);
    blk.write_at(0, &[7; 4096]).unwrap();
    blk.resize(1 << 20).unwrap();
    blk.resize(BASE_SIZE as u64).unwrap();
    let mut all = vec![0xffu8; BASE_SIZE];
    blk.read_at(0, &mut all).unwrap();
    drop(blk);
    let mut expected = base.clone();
    expected[..4096].fill(7);
    expected[1 << 20..].fill(0);
    assert_eq!(all, expected);
    check_and_compare(&dir, &["ovl.qcow2"], "ovl.qcow2", &expected);
    assert_eq!(std::fs::read(dir.join("base.raw")).unwrap(), base);
}

/// Clusters an internal snapshot still uses survive the shrink: the snapshot reverts to
/// the whole old disk.
#[test]
fn qcow2_v3_with_a_snapshot_shrinks_and_the_snapshot_keeps_its_data() {
    let dir = TempDir::new("shrink-snap");
    let data = filled_qcow2(&dir, "v3.qcow2", 8 << 20, &[]);
    qemu_img_ok(dir.path(), &["snapshot", "-c", "before", "v3.qcow2"]);
    let blk = backend(&dir, "v3.qcow2", ImageFormat::Qcow2);
    blk.resize(2 << 20).unwrap();
    blk.write_at(0, &[9; 512]).unwrap();
    drop(blk);
    let mut now = data[..2 << 20].to_vec();
    now[..512].fill(9);
    check_and_compare(&dir, &["v3.qcow2"], "v3.qcow2", &now);
    qemu_img_ok(dir.path(), &["snapshot", "-a", "before", "v3.qcow2"]);
    let mut expected = data;
    expected.resize(16 << 20, 0);
    check_and_compare(&dir, &["v3.qcow2"], "v3.qcow2", &expected);
}

#[test]
fn qcow2_v2_with_a_snapshot_cannot_be_resized() {
    let dir = TempDir::new("resize-v2snap");
    filled_qcow2(&dir, "v2.qcow2", 1 << 20, &["-o", "compat=0.10"]);
    qemu_img_ok(dir.path(), &["snapshot", "-c", "s", "v2.qcow2"]);
    let blk = backend(&dir, "v2.qcow2", ImageFormat::Qcow2);
    for size in [8 << 20, 32 << 20] {
        let err = blk.resize(size).unwrap_err();
        assert!(matches!(err, BackendError::V2Snapshots), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Can't resize a v2 image which has snapshots"
        );
    }
    assert_eq!(blk.size(), 16 << 20);
}
