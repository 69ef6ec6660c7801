//! change-backing-file: the new name on disk (read back by qemu-img), in the node's
//! description, and QEMU's errors.

mod common;

use common::{
    check_and_compare, create_overlay, create_overlay_with, make_chain, qemu_img, qemu_img_ok,
    TempDir, BASE_SIZE,
};
use petrel_block::info;
use petrel_block::node::{BackingOption, NodeOptions};
use petrel_block::{BlockBackend, BlockGraph, OpenOptions};
use serde_json::Value;

/// `qemu-img info` of `image` in `dir`, as JSON.
fn qemu_info(dir: &TempDir, image: &str) -> Value {
    let out = qemu_img_ok(dir.path(), &["info", "--output=json", "-U", image]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn rename_backing_of_a_writable_overlay() {
    let dir = TempDir::new("cbf-rw");
    let mut expected = make_chain(&dir);
    {
        let mut graph = BlockGraph::new();
        let root = graph
            .open(&OpenOptions::new(dir.join("ovl.qcow2")), Some("disk0"))
            .unwrap();
        let blk = BlockBackend::new("drive0", root, false).unwrap();
        blk.write_at(70000, &[0x11; 5000]).unwrap();
        expected[70000..75000].fill(0x11);

        graph.change_backing_file("disk0", "renamed.raw").unwrap();
        let info = qemu_info(&dir, "ovl.qcow2");
        assert_eq!(info["backing-filename"], "renamed.raw");
        // The recorded backing format stays what it was.
        assert_eq!(info["backing-filename-format"], "raw");
        let desc = info::describe(&graph, "disk0").unwrap();
        // As in QEMU 7.2, `backing_file` is the backing node's file, which has not changed;
        // the header no longer leads to it, so the node is named by its open options.
        let base = dir.join("base.raw").display().to_string();
        assert_eq!(desc.backing_file.as_deref(), Some(base.as_str()));
        let json = format!(
            "json:{{\"backing\": {{\"driver\": \"raw\", \"file\": {{\"driver\": \"file\", \
             \"filename\": \"{base}\"}}}}, \"driver\": \"qcow2\", \"file\": {{\"driver\": \
             \"file\", \"filename\": \"{}\"}}}}",
            dir.join("ovl.qcow2").display()
        );
        assert_eq!(desc.file, json);
        assert_eq!(desc.image.filename, json);
        assert_eq!(desc.image.backing_filename.as_deref(), Some("renamed.raw"));
        let full = dir.join("renamed.raw").display().to_string();
        assert_eq!(
            desc.image.full_backing_filename.as_deref(),
            Some(full.as_str())
        );

        // The overlay still reads through its backing layer and allocates after the reopen,
        // including growing its tables (which rewrites the header's first bytes).
        blk.write_at(3 << 20, &[0x22; 70000]).unwrap();
        expected[3 << 20..(3 << 20) + 70000].fill(0x22);
        blk.resize((BASE_SIZE as u64) * 64).unwrap();
        blk.write_at((BASE_SIZE as u64) * 63, &[0x33; 512]).unwrap();
        let mut got = vec![0u8; BASE_SIZE];
        blk.read_at(0, &mut got).unwrap();
        assert!(got == expected);
        blk.flush().unwrap();
    }
    assert_eq!(
        qemu_info(&dir, "ovl.qcow2")["backing-filename"],
        "renamed.raw"
    );
    std::fs::rename(dir.join("base.raw"), dir.join("renamed.raw")).unwrap();
    qemu_img_ok(dir.path(), &["check", "-q", "ovl.qcow2"]);
    // Reopened, petrel follows the new name.
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .unwrap();
    let blk = BlockBackend::new("d", root, true).unwrap();
    let mut head = vec![0u8; BASE_SIZE];
    blk.read_at(0, &mut head).unwrap();
    assert!(head == expected);
}

#[test]
fn rename_in_a_read_only_middle_layer_and_version_2() {
    let dir = TempDir::new("cbf-ro");
    let expected = make_chain(&dir);
    // ovl.qcow2 is version 3; mid.qcow2 version 2, whose extensions start right after the
    // 72-byte header.
    create_overlay_with(
        &dir,
        "ovl.qcow2",
        "qcow2",
        "mid.qcow2",
        &["-o", "compat=0.10"],
    );
    create_overlay(&dir, "mid.qcow2", "qcow2", "top.qcow2");
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("top.qcow2")), Some("top"))
        .unwrap();
    let mid = graph.get(root.backing_child().unwrap()).unwrap();
    assert!(mid.read_only());
    let name = "a/longer/relative/name/for/the/overlay.qcow2";
    graph.change_backing_file(mid.node_name(), name).unwrap();
    let info = qemu_info(&dir, "mid.qcow2");
    assert_eq!(info["backing-filename"], name);
    assert_eq!(info["backing-filename-format"], "qcow2");
    assert_eq!(info["format-specific"]["data"]["compat"], "0.10");
    let desc = info::describe(&graph, "top").unwrap();
    let mid_image = desc.image.backing_image.unwrap();
    assert_eq!(mid_image.backing_filename.as_deref(), Some(name));
    // Back to the real name: the chain checks clean and reads the base.
    graph
        .change_backing_file(mid.node_name(), "ovl.qcow2")
        .unwrap();
    drop((root, mid, graph));
    check_and_compare(&dir, &["mid.qcow2", "top.qcow2"], "top.qcow2", &expected);
}

#[test]
fn errors_are_qemus_and_leave_the_header_alone() {
    let dir = TempDir::new("cbf-err");
    make_chain(&dir);
    create_overlay_with(
        &dir,
        "base.raw",
        "raw",
        "small.qcow2",
        &["-o", "cluster_size=512"],
    );
    let mut graph = BlockGraph::new();
    graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), Some("ovl"))
        .unwrap();
    graph
        .open(&OpenOptions::new(dir.join("small.qcow2")), Some("small"))
        .unwrap();
    let names = NodeOptions {
        node_name: Some("alone".into()),
        backing: BackingOption::None,
        ..NodeOptions::default()
    };
    let alone = OpenOptions {
        read_only: true,
        ..OpenOptions::new(dir.join("ovl.qcow2"))
    };
    graph.open_with(&alone, &names).unwrap();
    let base = graph
        .get("ovl")
        .unwrap()
        .backing_child()
        .unwrap()
        .to_string();

    let err = |node: &str, name: &str| {
        graph
            .change_backing_file(node, name)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("nope", "x"),
        "Cannot find device='' nor node-name='nope'"
    );
    let no_backing = "not allowing backing file change on an image without a backing file";
    assert_eq!(err(&base, "x"), no_backing, "a raw node");
    assert_eq!(err("alone", "x"), no_backing, "opened with backing: null");
    let long = "x".repeat(1024);
    assert_eq!(
        err("ovl", &long),
        format!("Could not change backing file to '{long}': Invalid argument")
    );
    let wide = "y".repeat(400);
    assert_eq!(
        err("small", &wide),
        format!("Could not change backing file to '{wide}': No space left on device")
    );
    drop(graph);
    for image in ["ovl.qcow2", "small.qcow2"] {
        assert_eq!(qemu_info(&dir, image)["backing-filename"], "base.raw");
        qemu_img_ok(dir.path(), &["check", "-q", image]);
    }
    // The longest name QEMU takes fits a 64 KiB cluster.
    let mut graph = BlockGraph::new();
    graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), Some("ovl"))
        .unwrap();
    let longest = "z".repeat(1023);
    graph.change_backing_file("ovl", &longest).unwrap();
    assert_eq!(
        qemu_info(&dir, "ovl.qcow2")["backing-filename"],
        longest.as_str()
    );
    // An empty name removes it.
    graph.change_backing_file("ovl", "").unwrap();
    assert!(qemu_info(&dir, "ovl.qcow2")
        .get("backing-filename")
        .is_none());
    // The node keeps its backing layer, which `backing_file` names.
    let base = dir.join("base.raw").display().to_string();
    let desc = info::describe(&graph, "ovl").unwrap();
    assert_eq!(desc.backing_file.as_deref(), Some(base.as_str()));
    assert_eq!(desc.image.backing_filename, None);
    let (ok, text) = qemu_img(dir.path(), &["check", "-q", "ovl.qcow2"]);
    assert!(ok, "{text}");
}
