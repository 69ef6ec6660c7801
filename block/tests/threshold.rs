//! Write thresholds: one BLOCK_WRITE_THRESHOLD per arming, on format and `file` nodes.

mod common;

use std::sync::{Arc, Mutex};

use common::{create_qcow2, TempDir};
use petrel_block::info;
use petrel_block::node::NodeOptions;
use petrel_block::threshold::WriteThresholdEvent;
use petrel_block::{BlockBackend, BlockGraph, ImageFormat, OpenOptions};

/// Events the graph reported, shared with its notifier.
type Events = Arc<Mutex<Vec<WriteThresholdEvent>>>;

/// Opens `file` in `dir` as `disk0` over a `file` node called `proto`, recording events.
fn open(dir: &TempDir, file: &str, format: ImageFormat) -> (BlockGraph, BlockBackend, Events) {
    let mut graph = BlockGraph::new();
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    graph.set_write_threshold_notifier(Some(Box::new(move |e| sink.lock().unwrap().push(e))));
    let opts = OpenOptions {
        format: Some(format),
        ..OpenOptions::new(dir.join(file))
    };
    let names = NodeOptions {
        node_name: Some("disk0".into()),
        file_node_name: Some("proto".into()),
        ..NodeOptions::default()
    };
    let root = graph.open_with(&opts, &names).unwrap();
    let blk = BlockBackend::new("drive0", root, false).unwrap();
    (graph, blk, events)
}

fn event(node: &str, amount_exceeded: u64, write_threshold: u64) -> WriteThresholdEvent {
    WriteThresholdEvent {
        node_name: node.into(),
        amount_exceeded,
        write_threshold,
    }
}

/// Takes the events reported so far.
fn take(events: &Events) -> Vec<WriteThresholdEvent> {
    std::mem::take(&mut *events.lock().unwrap())
}

#[test]
fn raw_format_and_file_thresholds_fire_once() {
    let dir = TempDir::new("wthr-raw");
    std::fs::File::create(dir.join("d.raw"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let (graph, blk, events) = open(&dir, "d.raw", ImageFormat::Raw);
    let disk = graph.get("disk0").unwrap();
    let proto = graph.get("proto").unwrap();
    disk.set_write_threshold(1 << 20);
    assert_eq!(
        info::describe(&graph, "disk0").unwrap().write_threshold,
        1 << 20
    );

    // Ending exactly at the threshold does not pass it.
    blk.write_at((1 << 20) - 4096, &[1; 4096]).unwrap();
    assert!(take(&events).is_empty());
    blk.write_at((1 << 20) - 512, &[2; 4096]).unwrap();
    assert_eq!(take(&events), [event("disk0", 3584, 1 << 20)]);
    // Disarmed: reported as 0, and further writes are silent.
    assert_eq!(disk.write_threshold(), 0);
    assert_eq!(info::describe(&graph, "disk0").unwrap().write_threshold, 0);
    blk.write_at(5 << 20, &[3; 4096]).unwrap();
    assert!(take(&events).is_empty());

    // A raw node's file sees the same offsets; write-zeroes and discard count as writes.
    proto.set_write_threshold(2 << 20);
    disk.set_write_threshold(6 << 20);
    blk.write_zeroes(2 << 20, 100, false).unwrap();
    assert_eq!(take(&events), [event("proto", 100, 2 << 20)]);
    blk.discard((6 << 20) - 4096, 8192).unwrap();
    assert_eq!(take(&events), [event("disk0", 4096, 6 << 20)]);
    assert_eq!((disk.write_threshold(), proto.write_threshold()), (0, 0));

    // Reads and refused writes do not count.
    disk.set_write_threshold(4096);
    blk.read_at(0, &mut [0; 8192]).unwrap();
    assert!(blk.write_at(8 << 20, &[0; 1]).is_err());
    assert!(take(&events).is_empty());
    // Without a notifier, passing the threshold still disarms it.
    graph.set_write_threshold_notifier(None);
    blk.write_at(0, &[4; 8192]).unwrap();
    assert_eq!(disk.write_threshold(), 0);
    assert!(take(&events).is_empty());
}

#[test]
fn qcow2_file_threshold_follows_host_allocation() {
    let dir = TempDir::new("wthr-qcow2");
    create_qcow2(dir.path(), "d.qcow2", "64M");
    let (graph, blk, events) = open(&dir, "d.qcow2", ImageFormat::Qcow2);
    let disk = graph.get("disk0").unwrap();
    let proto = graph.get("proto").unwrap();
    let file_len = || std::fs::metadata(dir.join("d.qcow2")).unwrap().len();

    // The guest writes far into the disk; the image file only grows by what it allocates.
    let before = file_len();
    proto.set_write_threshold(before);
    disk.set_write_threshold((40 << 20) + 1);
    blk.write_at(40 << 20, &[7; 4096]).unwrap();
    let got = take(&events);
    assert_eq!(got.len(), 2, "{got:?}");
    // The format node sees guest offsets.
    assert_eq!(got[0], event("disk0", 4095, (40 << 20) + 1));
    // The file node sees where the data landed: in a new cluster past the old end.
    assert_eq!(got[1].node_name, "proto");
    assert_eq!(got[1].write_threshold, before);
    let host_end = before + got[1].amount_exceeded;
    assert!(
        host_end > before && host_end <= file_len(),
        "{host_end} vs {}",
        file_len()
    );
    assert_eq!((host_end - 4096) % 65536, 0, "data starts a cluster");

    // Rewriting the allocated cluster stays below a threshold set past it.
    proto.set_write_threshold(host_end);
    blk.write_at(40 << 20, &[8; 4096]).unwrap();
    assert!(take(&events).is_empty());
    // A new allocation passes it.
    blk.write_at(10 << 20, &[9; 512]).unwrap();
    let got = take(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].node_name, "proto");
    assert!(got[0].amount_exceeded > 0);
    assert_eq!(proto.write_threshold(), 0);
}
