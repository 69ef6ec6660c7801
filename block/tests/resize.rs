//! Growing raw and qcow2 disks.

mod common;

use common::{make_chain, qemu_img_ok, TempDir, BASE_SIZE};
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
    assert!(matches!(blk.resize(old), Err(BackendError::Shrink { .. })));
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
