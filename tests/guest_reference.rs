//! The test guest's own drivers, checked against the reference implementation: QEMU 7.2 with
//! the same devices petrel will emulate. When a petrel test fails later, this tells whether the
//! guest or petrel is wrong.

use std::process::Command;

use petrel_tests::workspace_root;

#[test]
fn guest_virtio_blk_driver_works_on_qemu() {
    let script = workspace_root().join("resources/guest/test-blk.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("microvm")
        .output()
        .expect("run resources/guest/test-blk.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the guest's virtio-blk checks failed under QEMU:\n{text}"
    );
}
