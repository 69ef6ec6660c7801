//! Temporary snapshot overlays (`-drive snapshot=on`): writes go to an unlinked qcow2 file
//! in `$TMPDIR`, the image below is never written, and the overlay is a qcow2 image
//! qemu-img accepts.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{make_chain, pattern, qemu_img_ok, TempDir, BASE_SIZE};
use petrel_block::node::temp_snapshot::temp_dir;
use petrel_block::{info, BlockBackend, BlockGraph, BlockNode, ImageFormat, OpenOptions};

/// The `$TMPDIR` of this test binary, set once before any overlay is made.
fn tmpdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("petrel-block-tmpdir");
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("TMPDIR", &dir);
        dir
    })
}

/// Opens `file` read-only as the node `base`, then a temporary overlay over it.
fn snapshot(dir: &TempDir, file: &str, read_only: bool) -> (BlockGraph, std::sync::Arc<BlockNode>) {
    let tmp = tmpdir();
    let mut graph = BlockGraph::new();
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::new(dir.join(file))
    };
    graph.open(&opts, Some("base")).unwrap();
    let overlay = graph.append_temp_snapshot("base", read_only).unwrap();
    let file_node = graph.get(overlay.file_child().unwrap()).unwrap();
    let path = file_node.filename();
    assert_eq!(path.parent(), Some(tmp));
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("vl.") && name.len() == 9, "{name}");
    assert!(!path.exists(), "the overlay file was not unlinked");
    (graph, overlay)
}

/// The descriptor this process holds on the unlinked `path`, as `/proc/PID/fd/N`, which
/// other processes (qemu-img) can open.
fn open_fd_path(path: &Path) -> PathBuf {
    let deleted = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_str() == Some(deleted.as_str())))
        .map(|e| {
            Path::new("/proc")
                .join(std::process::id().to_string())
                .join("fd")
                .join(e.file_name())
        })
        .expect("an open descriptor on the overlay")
}

#[test]
fn temp_dir_follows_tmpdir() {
    let dir = tmpdir();
    assert_eq!(temp_dir(), dir);
}

#[test]
fn created_qcow2_is_what_qemu_img_makes() {
    let dir = TempDir::new("create-qcow2");
    let path = dir.join("new.qcow2");
    std::fs::File::create(&path).unwrap();
    petrel_block::image::create_qcow2(&path, (16 << 20) + 512).unwrap();
    qemu_img_ok(dir.path(), &["check", "-q", "new.qcow2"]);
    let out = qemu_img_ok(dir.path(), &["info", "--output=json", "new.qcow2"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], (16 << 20) + 512);
    assert_eq!(info["cluster-size"], 65536);
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
    assert_eq!(info["format-specific"]["data"]["refcount-bits"], 16);
    assert!(info.get("backing-filename").is_none());
}

#[test]
fn writes_stay_in_the_overlay_over_a_raw_image() {
    let dir = TempDir::new("snap-raw");
    let mut expected = make_chain(&dir);
    let (graph, overlay) = snapshot(&dir, "base.raw", false);
    let blk = BlockBackend::new("d0", overlay.clone(), false).unwrap();
    assert!(!blk.is_read_only());
    assert_eq!(blk.size(), BASE_SIZE as u64);
    blk.write_at(4096, &[0x5c; 70000]).unwrap();
    blk.write_at(BASE_SIZE as u64 - 512, &[0x6d; 512]).unwrap();
    expected[4096..4096 + 70000].fill(0x5c);
    expected[BASE_SIZE - 512..].fill(0x6d);
    let mut got = vec![0u8; BASE_SIZE];
    blk.read_at(0, &mut got).unwrap();
    assert!(got == expected, "reads see the writes over the image");
    blk.flush().unwrap();
    assert!(std::fs::read(dir.join("base.raw")).unwrap() == pattern(BASE_SIZE));

    // The unlinked overlay is consistent, and holds the image's contents with the writes.
    let file_node = graph.get(overlay.file_child().unwrap()).unwrap();
    let fd = open_fd_path(file_node.filename());
    let fd = fd.to_str().unwrap();
    qemu_img_ok(dir.path(), &["check", "-U", "-q", fd]);
    std::fs::write(dir.join("expected.raw"), &expected).unwrap();
    let image_opts = format!(
        "driver=qcow2,file.driver=file,file.filename={fd},backing.driver=raw,\
         backing.file.driver=file,backing.file.filename={}",
        dir.join("base.raw").display()
    );
    qemu_img_ok(
        dir.path(),
        &[
            "compare",
            "-U",
            "--image-opts",
            &image_opts,
            "driver=raw,file.driver=file,file.filename=expected.raw",
        ],
    );

    // As QEMU 7.2 describes it.
    let desc = info::describe(&graph, overlay.node_name()).unwrap();
    let base = dir.join("base.raw").display().to_string();
    let tmp = file_node.filename().display().to_string();
    assert_eq!((desc.drv.as_str(), desc.ro), ("qcow2", false));
    assert_eq!(desc.backing_file.as_deref(), Some(base.as_str()));
    assert_eq!(desc.backing_file_depth, 1);
    assert_eq!(
        desc.file,
        format!(
            "json:{{\"backing\": {{\"driver\": \"raw\", \"file\": {{\"driver\": \"file\", \
             \"filename\": \"{base}\"}}}}, \"driver\": \"qcow2\", \"file\": {{\"driver\": \
             \"file\", \"filename\": \"{tmp}\"}}}}"
        )
    );
    assert_eq!(desc.image.filename, desc.file);
    assert_eq!(desc.image.backing_filename, None);
    assert_eq!(desc.image.cluster_size, Some(65536));
    assert_eq!(desc.image.virtual_size, BASE_SIZE as u64);
    assert!(desc.image.actual_size.unwrap() > 0);
    let below = desc.image.backing_image.unwrap();
    assert_eq!(
        (below.filename.as_str(), below.format.as_str()),
        (base.as_str(), "raw")
    );
    let file_desc = info::describe(&graph, file_node.node_name()).unwrap();
    assert_eq!(file_desc.file, tmp);
    assert!(file_desc.cache.no_flush && !file_desc.cache.direct);
    assert!(file_desc.image.virtual_size > 3 * 65536, "{file_desc:?}");
    let base_desc = info::describe(&graph, "base").unwrap();
    assert!(base_desc.ro && !base_desc.cache.no_flush);
}

#[test]
fn writes_stay_in_the_overlay_over_a_qcow2_chain() {
    let dir = TempDir::new("snap-qcow2");
    let mut expected = make_chain(&dir);
    let before = std::fs::read(dir.join("ovl.qcow2")).unwrap();
    let (graph, overlay) = snapshot(&dir, "ovl.qcow2", false);
    let blk = BlockBackend::new("d0", overlay.clone(), false).unwrap();
    blk.write_at(100_000, &[0x42; 5000]).unwrap();
    expected[100_000..105_000].fill(0x42);
    let mut got = vec![0u8; BASE_SIZE];
    blk.read_at(0, &mut got).unwrap();
    assert!(got == expected);
    blk.flush().unwrap();
    let desc = info::describe(&graph, overlay.node_name()).unwrap();
    assert_eq!(desc.backing_file_depth, 2);
    assert_eq!(
        desc.backing_file.as_deref(),
        Some(dir.join("ovl.qcow2").display().to_string().as_str())
    );
    assert!(
        desc.file
            .starts_with("json:{\"backing\": {\"driver\": \"qcow2\", \"file\": "),
        "{}",
        desc.file
    );
    drop(blk);
    drop(graph);
    assert!(std::fs::read(dir.join("ovl.qcow2")).unwrap() == before);
    assert!(std::fs::read(dir.join("base.raw")).unwrap() == pattern(BASE_SIZE));
}

#[test]
fn read_only_drive_gets_a_read_only_overlay() {
    let dir = TempDir::new("snap-ro");
    make_chain(&dir);
    let (graph, overlay) = snapshot(&dir, "base.raw", true);
    assert!(overlay.read_only());
    let blk = BlockBackend::new("d0", overlay, false).unwrap();
    assert!(blk.is_read_only());
    assert!(blk.write_at(0, &[1; 512]).is_err());
    let base = graph.get("base").unwrap();
    assert_eq!(base.driver().as_str(), ImageFormat::Raw.as_str());
}
