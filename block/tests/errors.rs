//! Missing, garbage, truncated and mismatched images give the documented errors.

mod common;

use common::{create_qcow2, make_chain, qemu_img_ok, TempDir};
use petrel_block::header::HeaderError;
use petrel_block::image::{self, ImageError};
use petrel_block::{BlockBackend, BlockGraph, ImageFormat, NodeError, OpenOptions};
use std::os::unix::fs::FileExt;

fn open(path: std::path::PathBuf, format: Option<ImageFormat>) -> Result<image::Image, ImageError> {
    let mut opts = OpenOptions::new(path);
    opts.format = format;
    image::open(&opts)
}

#[test]
fn missing_file() {
    let dir = TempDir::new("err-missing");
    let path = dir.join("nope.qcow2");
    let err = open(path.clone(), None).err().unwrap();
    assert!(matches!(&err, ImageError::NotFound(p) if *p == path));
    assert!(err.to_string().contains("No such file or directory"));
}

#[test]
fn garbage_as_qcow2_is_a_format_mismatch() {
    let dir = TempDir::new("err-garbage");
    let path = dir.join("garbage.img");
    std::fs::write(&path, vec![0x42u8; 65536]).unwrap();
    let err = open(path.clone(), Some(ImageFormat::Qcow2)).err().unwrap();
    assert!(matches!(
        err,
        ImageError::FormatMismatch {
            format: ImageFormat::Qcow2,
            ..
        }
    ));
    // Probed, garbage is raw, as in QEMU.
    let img = open(path, None).unwrap();
    assert_eq!(img.info.format, ImageFormat::Raw);
}

#[test]
fn truncated_qcow2_header() {
    let dir = TempDir::new("err-trunc");
    let path = dir.join("trunc.qcow2");
    std::fs::write(&path, b"QFI\xfb\0\0\0\x03\0\0").unwrap();
    let err = open(path, None).err().unwrap();
    assert!(
        matches!(
            err,
            ImageError::BadHeader {
                source: HeaderError::Truncated(10),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_qcow2_metadata() {
    let dir = TempDir::new("err-corrupt");
    create_qcow2(dir.path(), "c.qcow2", "1M");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("c.qcow2"))
        .unwrap();
    // An unaligned L1 table offset.
    f.write_all_at(&0x12345u64.to_be_bytes(), 40).unwrap();
    drop(f);
    let err = open(dir.join("c.qcow2"), None).err().unwrap();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    // A bad version.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("c.qcow2"))
        .unwrap();
    f.write_all_at(&7u32.to_be_bytes(), 4).unwrap();
    drop(f);
    let err = open(dir.join("c.qcow2"), None).err().unwrap();
    assert!(
        matches!(
            err,
            ImageError::BadHeader {
                source: HeaderError::Version(7),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_backing_file_is_named() {
    let dir = TempDir::new("err-backing");
    make_chain(&dir);
    std::fs::remove_file(dir.join("base.raw")).unwrap();
    let err = open(dir.join("ovl.qcow2"), None).err().unwrap();
    match &err {
        ImageError::BackingMissing { image, backing } => {
            assert_eq!(*image, dir.join("ovl.qcow2"));
            assert_eq!(*backing, dir.join("base.raw"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("base.raw"));
    // Through the graph, nothing is left behind.
    let mut graph = BlockGraph::new();
    let err = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        NodeError::Image(ImageError::BackingMissing { .. })
    ));
    assert_eq!(graph.nodes().count(), 0);
}

#[test]
fn backing_format_mismatch() {
    let dir = TempDir::new("err-bfmt");
    std::fs::write(dir.join("base.raw"), vec![0u8; 1 << 20]).unwrap();
    qemu_img_ok(
        dir.path(),
        &[
            "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.raw", "-u", "o.qcow2", "1M",
        ],
    );
    let err = open(dir.join("o.qcow2"), None).err().unwrap();
    match &err {
        ImageError::Backing { source, .. } => {
            assert!(
                matches!(**source, ImageError::FormatMismatch { .. }),
                "{err}"
            )
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn unknown_format_name() {
    let err = "vmdk".parse::<ImageFormat>().err().unwrap();
    assert_eq!(err.to_string(), "Unknown driver 'vmdk'");
}

#[test]
fn file_node_cannot_back_a_backend() {
    let dir = TempDir::new("err-filenode");
    make_chain(&dir);
    let mut graph = BlockGraph::new();
    let root = graph
        .open(&OpenOptions::new(dir.join("ovl.qcow2")), None)
        .unwrap();
    let file = graph.get(root.file_child().unwrap()).unwrap();
    let err = BlockBackend::new("d", file, false).err().unwrap();
    assert!(err.to_string().contains("protocol node"), "{err}");
}

#[test]
fn backing_loop_is_too_deep() {
    let dir = TempDir::new("err-loop");
    create_qcow2(dir.path(), "a.qcow2", "1M");
    qemu_img_ok(
        dir.path(),
        &[
            "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "a.qcow2", "a.qcow2",
        ],
    );
    let err = open(dir.join("a.qcow2"), None).err().unwrap();
    assert!(matches!(err, ImageError::ChainTooDeep(_)), "{err}");
}
