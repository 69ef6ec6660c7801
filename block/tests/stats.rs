//! Statistics counters, and concurrent use from several threads.

mod common;

use std::sync::Arc;

use common::{make_chain, TempDir};
use petrel_block::{BackendError, BlockBackend, BlockGraph, OpenOptions};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn backend_is_send_and_sync() {
    assert_send_sync::<BlockBackend>();
    assert_send_sync::<BlockGraph>();
}

#[test]
fn counts_operations_and_bytes() {
    let dir = TempDir::new("stats");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .unwrap();
    let blk = BlockBackend::new("d", root, false).unwrap();
    let s = blk.stats().snapshot();
    assert_eq!(s.idle_time_ns, None);
    assert_eq!(s.rd_operations, 0);

    let mut buf = [0u8; 1000];
    blk.read_at(0, &mut buf).unwrap();
    blk.read_at(5000, &mut buf[..24]).unwrap();
    blk.write_at(70000, &[1; 300]).unwrap();
    blk.write_zeroes(1 << 20, 4096, false).unwrap();
    blk.discard(2 << 20, 65536).unwrap();
    blk.flush().unwrap();
    let size = blk.size();
    assert!(matches!(
        blk.read_at(size, &mut buf),
        Err(BackendError::OutOfRange { .. })
    ));

    let s = blk.stats().snapshot();
    assert_eq!(s.rd_operations, 2);
    assert_eq!(s.rd_bytes, 1024);
    assert_eq!(s.wr_operations, 2);
    assert_eq!(s.wr_bytes, 300 + 4096);
    assert_eq!(s.unmap_operations, 1);
    assert_eq!(s.unmap_bytes, 65536);
    assert_eq!(s.flush_operations, 1);
    assert_eq!(s.invalid_rd_operations, 1);
    assert_eq!(s.failed_rd_operations, 0);
    assert_eq!(s.wr_highest_offset, (1 << 20) + 4096);
    assert!(s.rd_total_time_ns > 0 && s.wr_total_time_ns > 0);
    assert!(s.idle_time_ns.is_some());
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["rd_operations"], 2);
    assert_eq!(json["timed_stats"], serde_json::json!([]));
}

#[test]
fn io_thread_and_query_thread() {
    let dir = TempDir::new("stats-mt");
    let base = make_chain(&dir);
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .unwrap();
    let blk = Arc::new(BlockBackend::new("d", root, false).unwrap());
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let blk = Arc::clone(&blk);
            let base = base.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let off = (t * 50 + i) * 4096;
                    blk.write_at(off, &[t as u8 + 1; 512]).unwrap();
                    let mut buf = [0u8; 4096];
                    blk.read_at(off, &mut buf).unwrap();
                    assert_eq!(buf[..512], [t as u8 + 1; 512]);
                    assert_eq!(buf[512..], base[off as usize + 512..off as usize + 4096]);
                }
            })
        })
        .collect();
    let mut last = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        let ops = blk.stats().snapshot().wr_operations;
        assert!(ops >= last);
        last = ops;
    }
    for w in workers {
        w.join().unwrap();
    }
    let s = blk.stats().snapshot();
    assert_eq!(s.wr_operations, 200);
    assert_eq!(s.rd_operations, 200);
    assert_eq!(s.wr_bytes, 200 * 512);
    drop(blk);
    drop(graph);
    common::qemu_img_ok(dir.path(), &["check", "-q", "ovl.qcow2"]);
}
