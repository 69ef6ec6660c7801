//! `-blockdev` options: a named `file` node, `backing: null`, and linking an open node as
//! the backing layer.

mod common;

use common::{check_and_compare, create_qcow2, make_chain, pattern, TempDir, BASE_SIZE};
use petrel_block::info;
use petrel_block::node::{BackingOption, NodeOptions};
use petrel_block::{BlockBackend, BlockGraph, ImageFormat, NodeDriver, NodeError, OpenOptions};

fn names(node: &str, file: Option<&str>, backing: BackingOption) -> NodeOptions {
    NodeOptions {
        node_name: Some(node.into()),
        file_node_name: file.map(str::to_string),
        backing,
    }
}

#[test]
fn named_file_node() {
    let dir = TempDir::new("bdev-file");
    create_qcow2(dir.path(), "d.qcow2", "1M");
    let opts = OpenOptions::new(dir.join("d.qcow2"));
    let mut graph = BlockGraph::new();
    let fmt = graph
        .open_with(
            &opts,
            &names("fmt", Some("proto"), BackingOption::FromHeader),
        )
        .unwrap();
    assert_eq!(fmt.file_child(), Some("proto"));
    let proto = graph.get("proto").unwrap();
    assert_eq!(proto.driver(), NodeDriver::File);
    assert!(!proto.auto_named());
    assert_eq!(info::describe(&graph, "proto").unwrap().drv, "file");
    drop(proto);

    let err = |n: NodeOptions, graph: &mut BlockGraph| graph.open_with(&opts, &n).unwrap_err();
    let e = err(
        names("other", Some("proto"), BackingOption::FromHeader),
        &mut graph,
    );
    assert_eq!(e.to_string(), "Duplicate nodes with node-name='proto'");
    let e = err(
        names("same", Some("same"), BackingOption::FromHeader),
        &mut graph,
    );
    assert_eq!(e.to_string(), "Duplicate nodes with node-name='same'");
    let e = err(
        names("ok", Some("1bad"), BackingOption::FromHeader),
        &mut graph,
    );
    assert!(matches!(e, NodeError::InvalidName(_)), "{e}");
    // Failed opens add nothing.
    assert_eq!(graph.nodes().count(), 2);

    // Removing the format node leaves the file node the user named, as QEMU does.
    drop(fmt);
    graph.remove("fmt").unwrap();
    let left: Vec<_> = graph.nodes().map(|n| n.node_name().to_string()).collect();
    assert_eq!(left, ["proto"]);
}

#[test]
fn backing_null_reads_zeroes_where_unallocated() {
    let dir = TempDir::new("bdev-null");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let opts = OpenOptions::new(dir.join("ovl.qcow2"));
    let root = graph
        .open_with(&opts, &names("ovl", None, BackingOption::None))
        .unwrap();
    assert_eq!(root.backing_child(), None);
    // Only the overlay and its file: the base was not opened.
    assert_eq!(graph.nodes().count(), 2);
    let desc = info::describe(&graph, "ovl").unwrap();
    assert_eq!(desc.backing_file_depth, 0);
    // As QEMU reports it: no backing file name, the recorded format still there.
    assert_eq!(desc.backing_file, None);
    assert_eq!(desc.image.backing_filename_format.as_deref(), Some("raw"));
    // The header's backing file is not opened: QEMU names the node by its options.
    assert_eq!(
        desc.file,
        format!(
            "json:{{\"backing\": null, \"driver\": \"qcow2\", \"file\": {{\"driver\": \
             \"file\", \"filename\": \"{}\"}}}}",
            dir.join("ovl.qcow2").display()
        )
    );

    let blk = BlockBackend::new("d", root, false).unwrap();
    let mut buf = vec![0xffu8; BASE_SIZE];
    blk.read_at(0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "unallocated clusters read as zeroes"
    );
    blk.write_at(65536 + 100, &[5; 300]).unwrap();
    blk.read_at(65536, &mut buf[..4096]).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0) && buf[100..400].iter().all(|&b| b == 5));
}

#[test]
fn link_an_open_node_as_backing() {
    let dir = TempDir::new("bdev-link");
    let mut expected = make_chain(&dir);
    {
        let mut graph = BlockGraph::new();
        let base_opts = OpenOptions {
            format: Some(ImageFormat::Raw),
            read_only: true,
            ..OpenOptions::new(dir.join("base.raw"))
        };
        graph
            .open_with(
                &base_opts,
                &names("base", Some("base-file"), BackingOption::None),
            )
            .unwrap();
        let opts = OpenOptions::new(dir.join("ovl.qcow2"));
        let root = graph
            .open_with(
                &opts,
                &names("ovl", None, BackingOption::Node("base".into())),
            )
            .unwrap();
        assert_eq!(root.backing_child(), Some("base"));
        // base, its file, the overlay and its file: nothing opened twice.
        assert_eq!(graph.nodes().count(), 4);
        let desc = info::describe(&graph, "ovl").unwrap();
        assert_eq!(desc.backing_file_depth, 1);
        // As QEMU 7.2 reports a linked backing node: `backing_file` is its file, and the
        // overlay, whose header names "base.raw", is named by its options.
        let base = dir.join("base.raw").display().to_string();
        assert_eq!(desc.backing_file.as_deref(), Some(base.as_str()));
        assert_eq!(desc.image.backing_filename.as_deref(), Some("base.raw"));
        assert_eq!(
            desc.file,
            format!(
                "json:{{\"backing\": {{\"driver\": \"raw\", \"file\": {{\"driver\": \
                 \"file\", \"filename\": \"{base}\"}}}}, \"driver\": \"qcow2\", \"file\": \
                 {{\"driver\": \"file\", \"filename\": \"{}\"}}}}",
                dir.join("ovl.qcow2").display()
            )
        );
        assert_eq!(desc.image.backing_image.unwrap().filename, base);
        assert!(matches!(
            graph.remove("base"),
            Err(NodeError::UsedByNode { ref parent, .. }) if parent == "ovl"
        ));

        let blk = BlockBackend::new("d", root, false).unwrap();
        let mut got = vec![0u8; BASE_SIZE];
        blk.read_at(0, &mut got).unwrap();
        assert!(got == expected, "reads fall through to the linked node");
        blk.write_at(4096, &[0xee; 8192]).unwrap();
        expected[4096..4096 + 8192].fill(0xee);
        blk.flush().unwrap();
        // The linked node is shared with the overlay: it cannot be discarded or resized.
        let base_blk = BlockBackend::new("b", graph.get("base").unwrap(), false).unwrap();
        assert!(base_blk.is_read_only());
        assert!(base_blk.resize(1 << 30).is_err());
    }
    check_and_compare(&dir, &["ovl.qcow2"], "ovl.qcow2", &expected);
    assert!(std::fs::read(dir.join("base.raw")).unwrap() == pattern(BASE_SIZE));
}

#[test]
fn backing_reference_errors() {
    let dir = TempDir::new("bdev-err");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let raw = OpenOptions {
        format: Some(ImageFormat::Raw),
        ..OpenOptions::new(dir.join("base.raw"))
    };
    graph
        .open_with(&raw, &names("rw-base", None, BackingOption::None))
        .unwrap();
    let ovl = OpenOptions::new(dir.join("ovl.qcow2"));
    let err = |graph: &mut BlockGraph, opts: &OpenOptions, backing: &str| {
        let n = names("top", None, BackingOption::Node(backing.into()));
        graph.open_with(opts, &n).unwrap_err().to_string()
    };
    assert_eq!(
        err(&mut graph, &ovl, "nope"),
        "Could not open backing file: Cannot find device='nope' nor node-name='nope'"
    );
    assert_eq!(
        err(&mut graph, &ovl, "rw-base"),
        "Node 'rw-base' must be read-only to be used as a backing layer"
    );
    let file = graph
        .get("rw-base")
        .unwrap()
        .file_child()
        .unwrap()
        .to_string();
    let ro = OpenOptions {
        read_only: true,
        ..raw.clone()
    };
    graph
        .open_with(&ro, &names("ro-base", None, BackingOption::None))
        .unwrap();
    let ro_file = graph
        .get("ro-base")
        .unwrap()
        .file_child()
        .unwrap()
        .to_string();
    assert_eq!(
        err(&mut graph, &ovl, &ro_file),
        format!("Node '{ro_file}' is a protocol node and has no image to access")
    );
    assert_eq!(
        err(&mut graph, &raw, "ro-base"),
        "Parameter 'backing' is unexpected"
    );
    // Nothing was added by the failures.
    assert_eq!(graph.nodes().count(), 4);
    assert!(graph.get(&file).is_some());
}
