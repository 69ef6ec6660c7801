//! Writes through a qcow2 overlay over a raw base, checked with qemu-img.

mod common;

use common::{check_and_compare, create_overlay, make_chain, TempDir, BASE_SIZE};
use petrel_block::info;
use petrel_block::{BlockBackend, BlockGraph, NodeDriver, OpenOptions};

#[test]
fn overlay_writes_fall_through_and_check_clean() {
    let dir = TempDir::new("chain");
    let mut expected = make_chain(&dir);
    {
        let mut graph = BlockGraph::new();
        let root = graph
            .open(&OpenOptions::new(dir.join("ovl.qcow2")), Some("disk0"))
            .unwrap();
        assert_eq!(root.driver(), NodeDriver::Qcow2);
        assert_eq!(root.size(), BASE_SIZE as u64);
        let backing = graph.get(root.backing_child().unwrap()).unwrap();
        assert_eq!(backing.driver(), NodeDriver::Raw);
        assert!(backing.read_only());
        assert_eq!(backing.filename(), dir.join("base.raw"));
        let file = graph.get(root.file_child().unwrap()).unwrap();
        assert_eq!(file.driver(), NodeDriver::File);
        assert!(file.node_name().starts_with("#block"));

        let blk = BlockBackend::new("drive0", root, false).unwrap();
        let mut write = |offset: usize, data: &[u8]| {
            blk.write_at(offset as u64, data).unwrap();
            expected[offset..offset + data.len()].copy_from_slice(data);
        };
        write(65536, &[0xaa; 4096]);
        // Unaligned, across a cluster boundary.
        write(3 * 65536 - 300, &[0x5b; 1000]);
        write(12345, &[0x11; 7]);
        write(BASE_SIZE - 1, &[0xee]);

        blk.write_zeroes(1 << 20, 70000, false).unwrap();
        expected[1 << 20..(1 << 20) + 70000].fill(0);
        blk.write_zeroes(2 << 20, 3 * 65536, true).unwrap();
        expected[2 << 20..(2 << 20) + 3 * 65536].fill(0);
        // Discarded contents are unspecified: overwrite them afterwards.
        blk.discard(3 << 20, 65536).unwrap();
        blk.write_at(3 << 20, &[0x77; 65536]).unwrap();
        expected[3 << 20..(3 << 20) + 65536].fill(0x77);
        blk.flush().unwrap();

        let mut got = vec![0u8; BASE_SIZE];
        blk.read_at(0, &mut got).unwrap();
        assert!(got == expected, "read-back differs");
        // An unaligned read that is half overlay, half base.
        let mut part = vec![0u8; 5000];
        blk.read_at(65536 + 2000, &mut part).unwrap();
        assert_eq!(part, expected[65536 + 2000..65536 + 7000]);

        let desc = info::describe(&graph, "disk0").unwrap();
        assert_eq!(desc.drv, "qcow2");
        // QEMU's `backing_file` is the backing node's file; the header's name is the image's.
        let base = dir.join("base.raw").display().to_string();
        assert_eq!(desc.backing_file.as_deref(), Some(base.as_str()));
        assert_eq!(desc.image.backing_filename.as_deref(), Some("base.raw"));
        // Opened as its header says: named by its file.
        assert_eq!(desc.file, dir.join("ovl.qcow2").display().to_string());
        assert_eq!(desc.backing_file_depth, 1);
        assert_eq!(desc.image.cluster_size, Some(65536));
        assert_eq!(desc.image.backing_image.as_ref().unwrap().format, "raw");
        assert_eq!(info::describe_all(&graph).len(), 4);
    }
    check_and_compare(&dir, &["ovl.qcow2"], "ovl.qcow2", &expected);
    // The base is untouched.
    assert!(std::fs::read(dir.join("base.raw")).unwrap() == common::pattern(BASE_SIZE));
}

#[test]
fn two_level_chain_and_direct_io() {
    let dir = TempDir::new("chain2");
    let mut expected = make_chain(&dir);
    create_overlay(&dir, "ovl.qcow2", "qcow2", "top.qcow2");
    let mut opts = OpenOptions::new(dir.join("top.qcow2"));
    opts.direct = true;
    let mut graph = BlockGraph::new();
    // The target directory is on a local filesystem that supports O_DIRECT: failing to
    // open is a failure, not a reason to skip.
    let root = graph
        .open(&opts, None)
        .expect("open a 3-level chain with O_DIRECT");
    assert!(root.node_name().starts_with("#block"));
    let desc = info::describe(&graph, root.node_name()).unwrap();
    assert_eq!(desc.backing_file_depth, 2);
    assert!(desc.cache.direct);
    let blk = BlockBackend::new("d", root, false).unwrap();
    blk.write_at(777, &[9; 3333]).unwrap();
    expected[777..777 + 3333].fill(9);
    let mut got = vec![0u8; BASE_SIZE];
    blk.read_at(0, &mut got).unwrap();
    assert!(got == expected);
    drop(blk);
    drop(graph);
    check_and_compare(&dir, &["top.qcow2", "ovl.qcow2"], "top.qcow2", &expected);
}
