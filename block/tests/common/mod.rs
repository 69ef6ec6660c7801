//! Helpers shared by the block tests: scratch directories and qemu-img.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("petrel-block-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs qemu-img in `dir`; returns (success, stdout+stderr).
pub fn qemu_img(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs qemu-img and asserts success.
pub fn qemu_img_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = qemu_img(dir, args);
    assert!(ok, "qemu-img {args:?} failed: {text}");
    text
}

/// Creates an empty qcow2 image `name` of `size` (qemu-img syntax) in `dir`.
pub fn create_qcow2(dir: &Path, name: &str, size: &str) {
    qemu_img_ok(dir, &["create", "-q", "-f", "qcow2", name, size]);
}

/// The known pattern of the raw base image.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

pub const BASE_SIZE: usize = 4 << 20;

/// Creates the qcow2 `name` in `dir` over `backing` (of format `backing_format`).
pub fn create_overlay(dir: &TempDir, backing: &str, backing_format: &str, name: &str) {
    create_overlay_with(dir, backing, backing_format, name, &[]);
}

/// [`create_overlay`] with more qemu-img options (`-o compat=0.10`, ...).
pub fn create_overlay_with(
    dir: &TempDir,
    backing: &str,
    backing_format: &str,
    name: &str,
    options: &[&str],
) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["-F", backing_format, "-b", backing, name]);
    qemu_img_ok(dir.path(), &args);
}

/// `qemu-img check` of every image in `checked`, then `qemu-img compare` of the qcow2 `image`
/// with the raw `expected` contents.
pub fn check_and_compare(dir: &TempDir, checked: &[&str], image: &str, expected: &[u8]) {
    std::fs::write(dir.join("expected.raw"), expected).unwrap();
    for name in checked {
        qemu_img_ok(dir.path(), &["check", "-q", name]);
    }
    qemu_img_ok(
        dir.path(),
        &[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            image,
            "expected.raw",
        ],
    );
}

/// Creates `base.raw` (pattern) and `ovl.qcow2` over it in `dir`; returns the base contents.
pub fn make_chain(dir: &TempDir) -> Vec<u8> {
    let base = pattern(BASE_SIZE);
    std::fs::write(dir.join("base.raw"), &base).unwrap();
    create_overlay(dir, "base.raw", "raw", "ovl.qcow2");
    base
}
