//! A host that runs out of space: writes fail with ENOSPC, classified for `werror=enospc`,
//! and the same write succeeds once space is freed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{create_qcow2, qemu_img_ok, TempDir};
use petrel_block::{BlockBackend, BlockGraph, ImageFormat, OpenOptions};

/// A 1 MiB tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    /// Mounts it; panics with the reason if it cannot (the test needs root).
    fn mount(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a 1 MiB tmpfs on {} to run out of space for real: {} \
             (this test must run as root, or with CAP_SYS_ADMIN)",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Fills the tmpfs but for about `left` bytes with the file `filler`.
fn fill(fs: &Tmpfs, left: u64) {
    let total = 1 << 20;
    std::fs::write(fs.path().join("filler"), vec![1u8; (total - left) as usize]).unwrap();
}

/// Writes `data` at `offset` until space runs out, then frees it and writes again.
fn run_out_and_recover(fs: &Tmpfs, blk: &BlockBackend, offset: u64, data: &[u8]) {
    let err = blk.write_at(offset, data).expect_err("the tmpfs is full");
    assert!(err.is_no_space(), "{err:?}");
    assert_eq!(err.errno(), 28);
    assert_eq!(err.reason(), "No space left on device");
    assert_eq!(blk.stats().snapshot().failed_wr_operations, 1);

    std::fs::remove_file(fs.path().join("filler")).unwrap();
    blk.write_at(offset, data).expect("space was freed");
    blk.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    blk.read_at(offset, &mut back).unwrap();
    assert!(back == data);
}

#[test]
fn raw_write_runs_out_of_space() {
    let fs = Tmpfs::mount("enospc-raw");
    let path = fs.path().join("disk.raw");
    // A sparse 8 MiB disk on a 1 MiB filesystem.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    fill(&fs, 256 << 10);
    let mut graph = BlockGraph::new();
    let opts = OpenOptions {
        format: Some(ImageFormat::Raw),
        ..OpenOptions::new(&path)
    };
    let blk = BlockBackend::new("d", graph.open(&opts, None).unwrap(), false).unwrap();
    run_out_and_recover(&fs, &blk, 3 << 20, &[0xab; 512 << 10]);
}

#[test]
fn qcow2_allocation_runs_out_of_space() {
    let fs = Tmpfs::mount("enospc-qcow2");
    create_qcow2(fs.path(), "disk.qcow2", "8M");
    fill(&fs, 256 << 10);
    let mut graph = BlockGraph::new();
    let opts = OpenOptions::new(fs.path().join("disk.qcow2"));
    let blk = BlockBackend::new("d", graph.open(&opts, None).unwrap(), false).unwrap();
    run_out_and_recover(&fs, &blk, 5 << 20, &[0xcd; 512 << 10]);
    drop(blk);
    drop(graph);
    qemu_img_ok(fs.path(), &["check", "-q", "disk.qcow2"]);
}
