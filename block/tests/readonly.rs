//! Read-only nodes and backends refuse writes.

mod common;

use common::{make_chain, TempDir};
use petrel_block::{BackendError, BlockBackend, BlockGraph, OpenOptions};

#[test]
fn read_only_image_refuses_writes() {
    let dir = TempDir::new("ro");
    let base = make_chain(&dir);
    let before = std::fs::read(dir.join("ovl.qcow2")).unwrap();
    let mut graph = BlockGraph::new();
    let mut opts = OpenOptions::new(dir.join("ovl.qcow2"));
    opts.read_only = true;
    let root = graph.open(&opts, Some("ro0")).unwrap();
    assert!(root.read_only());
    let blk = BlockBackend::new("d", root, false).unwrap();
    assert!(blk.is_read_only());
    assert!(matches!(
        blk.write_at(0, &[1; 512]),
        Err(BackendError::ReadOnly)
    ));
    assert!(matches!(
        blk.write_zeroes(0, 512, true),
        Err(BackendError::ReadOnly)
    ));
    assert!(matches!(blk.discard(0, 512), Err(BackendError::ReadOnly)));
    assert!(matches!(blk.resize(1 << 30), Err(BackendError::ReadOnly)));
    let mut buf = vec![0u8; 8192];
    blk.read_at(100, &mut buf).unwrap();
    assert_eq!(buf, base[100..100 + 8192]);
    blk.flush().unwrap();
    let stats = blk.stats().snapshot();
    assert_eq!(stats.invalid_wr_operations, 2);
    assert_eq!(stats.invalid_unmap_operations, 1);
    assert_eq!(stats.wr_operations, 0);
    drop(blk);
    drop(graph);
    assert!(std::fs::read(dir.join("ovl.qcow2")).unwrap() == before);
}

#[test]
fn read_only_backend_on_writable_node() {
    let dir = TempDir::new("ro-backend");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .unwrap();
    let blk = BlockBackend::new("d", root, true).unwrap();
    assert!(matches!(
        blk.write_at(0, &[1; 512]),
        Err(BackendError::ReadOnly)
    ));
}
