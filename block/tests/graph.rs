//! Node names, lookup, removal rules and JSON descriptions.

mod common;

use common::{make_chain, TempDir};
use petrel_block::info;
use petrel_block::{BlockBackend, BlockGraph, NodeError, OpenOptions};

#[test]
fn names_and_removal() {
    let dir = TempDir::new("graph");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let opts = OpenOptions::new(dir.join("ovl.qcow2"));
    let root = graph.open(&opts, Some("disk0")).unwrap();
    // file + raw base, file + qcow2 overlay
    assert_eq!(graph.nodes().count(), 4);
    let auto: Vec<_> = graph
        .nodes()
        .filter(|n| n.node_name() != "disk0")
        .map(|n| n.node_name().to_string())
        .collect();
    assert!(auto
        .iter()
        .all(|n| n.starts_with("#block") && n.auto_named_ok()));

    assert!(matches!(
        graph.open(&opts, Some("disk0")),
        Err(NodeError::Duplicate(_))
    ));
    assert!(matches!(
        graph.open(&opts, Some("0bad")),
        Err(NodeError::InvalidName(_))
    ));
    assert!(matches!(
        graph.open(&opts, Some("#block1")),
        Err(NodeError::InvalidName(_))
    ));
    assert!(matches!(
        graph.remove("nothing"),
        Err(NodeError::NotFound(_))
    ));

    let backing = root.backing_child().unwrap().to_string();
    assert!(matches!(
        graph.remove(&backing),
        Err(NodeError::UsedByNode { ref parent, .. }) if parent == "disk0"
    ));
    let blk = BlockBackend::new("drive0", root, false).unwrap();
    assert!(matches!(graph.remove("disk0"), Err(NodeError::InUse(_))));
    drop(blk);
    graph.remove("disk0").unwrap();
    assert_eq!(
        graph.nodes().count(),
        0,
        "implicit children go with their parent"
    );
}

#[test]
fn describe_serialises_like_qapi() {
    let dir = TempDir::new("graph-json");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), Some("disk0"))
        .unwrap();
    let json = serde_json::to_value(info::describe_all(&graph)).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 4);
    let top = list.iter().find(|n| n["node-name"] == "disk0").unwrap();
    assert_eq!(top["drv"], "qcow2");
    assert_eq!(top["ro"], false);
    assert_eq!(top["encrypted"], false);
    assert_eq!(
        top["backing_file"],
        dir.join("base.raw").display().to_string().as_str()
    );
    assert_eq!(top["image"]["backing-filename"], "base.raw");
    assert_eq!(top["backing_file_depth"], 1);
    assert_eq!(top["cache"]["no-flush"], false);
    let image = &top["image"];
    assert_eq!(image["virtual-size"], common::BASE_SIZE as u64);
    assert_eq!(image["cluster-size"], 65536);
    assert_eq!(image["format"], "qcow2");
    assert_eq!(image["backing-filename-format"], "raw");
    assert_eq!(image["backing-image"]["format"], "raw");
    assert!(image["actual-size"].as_u64().unwrap() > 0);
    let file = list.iter().find(|n| n["drv"] == "file").unwrap();
    assert_eq!(file["backing_file_depth"], 0);
    assert!(file.get("backing_file").is_none());
}

trait AutoName {
    fn auto_named_ok(&self) -> bool;
}

impl AutoName for String {
    /// `#block`, then digits only.
    fn auto_named_ok(&self) -> bool {
        let digits = &self["#block".len()..];
        digits.len() >= 3 && digits.chars().all(|c| c.is_ascii_digit())
    }
}
