//! The test guest drives a virtio-blk disk that petrel gives it from `-drive`, `-blockdev`
//! and `-device`; the host checks the image files with its own eyes and with qemu-img.

use std::path::Path;
use std::process::Command;

use petrel_tests::{PetrelBuilder, TempDir, DEFAULT_TIMEOUT};

const SECTOR: usize = 512;
const DISK_SIZE: u64 = 16 << 20;

fn petrel() -> PetrelBuilder {
    PetrelBuilder::new(env!("CARGO_BIN_EXE_petrel"))
}

/// What the guest's `blk` scenario writes to a sector: its LBA, then the fill byte.
fn sector_bytes(lba: u64, fill: u8) -> Vec<u8> {
    let mut s = vec![fill; SECTOR];
    s[..8].copy_from_slice(&lba.to_le_bytes());
    s
}

fn raw_image(dir: &TempDir, name: &str) -> String {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    path.display().to_string()
}

fn qemu_img(dir: &Path, args: &[&str]) -> String {
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
    assert!(out.status.success(), "qemu-img {args:?}: {text}");
    text
}

/// Runs the `blk` scenario over `disk_args` and checks it passed.
fn run_blk(disk_args: &[&str], append: &str) -> String {
    let mut p = petrel()
        .args(disk_args.iter().copied())
        .append(&format!("petrel.test=blk {append}"))
        .spawn();
    let (status, _) = p.wait_for_line("status: ", DEFAULT_TIMEOUT);
    let console = p.console();
    assert_eq!(status, "status: 0", "guest failed:\n{console}");
    p.expect_exit_code(0);
    console
}

#[test]
fn guest_writes_land_in_a_raw_image() {
    let dir = TempDir::new("disk-raw");
    let img = raw_image(&dir, "d.raw");
    let console = run_blk(
        &[
            "-drive",
            &format!("file={img},format=raw,if=virtio,serial=PETREL-SN1"),
        ],
        "petrel.blk.lba=40 petrel.blk.count=16 petrel.blk.pattern=0x5c",
    );
    assert!(
        console.contains("blk: capacity=32768 size=512 ro=0 serial=PETREL-SN1"),
        "{console}"
    );
    assert!(console.contains("blk: write ok") && console.contains("blk: flush ok"));
    let data = std::fs::read(&img).unwrap();
    for lba in 40..56u64 {
        let at = lba as usize * SECTOR;
        assert_eq!(
            &data[at..at + SECTOR],
            &sector_bytes(lba, 0x5c)[..],
            "sector {lba}"
        );
    }
    // Nothing outside the range was touched.
    assert!(data[..40 * SECTOR].iter().all(|&b| b == 0));
    assert!(data[56 * SECTOR..].iter().all(|&b| b == 0));
}

#[test]
fn qcow2_overlay_takes_writes_and_reads_fall_through() {
    let dir = TempDir::new("disk-qcow2");
    let base = raw_image(&dir, "base.raw");
    // The base gets a pattern first, through petrel itself.
    run_blk(
        &["-drive", &format!("file={base},format=raw,if=virtio")],
        "petrel.blk.lba=0 petrel.blk.count=32 petrel.blk.pattern=0x11",
    );
    let base_before = std::fs::read(&base).unwrap();
    qemu_img(
        dir.path(),
        &[
            "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", "ov.qcow2",
        ],
    );
    let ov = dir.path().join("ov.qcow2").display().to_string();
    // Writes through the overlay, with -blockdev and -device this time.
    run_blk(
        &[
            "-blockdev",
            &format!("driver=file,filename={ov},node-name=f0"),
            "-blockdev",
            "driver=qcow2,file=f0,node-name=d0",
            "-device",
            "virtio-blk-pci,drive=d0,id=disk0",
        ],
        "petrel.blk.lba=1000 petrel.blk.count=24 petrel.blk.pattern=0x77",
    );
    // Reads of the base's range fall through to it.
    run_blk(
        &["-drive", &format!("file={ov},format=qcow2,if=virtio")],
        "petrel.blk.mode=read petrel.blk.lba=0 petrel.blk.count=32 petrel.blk.pattern=0x11",
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "the base image changed"
    );
    qemu_img(dir.path(), &["check", "ov.qcow2"]);
    // What the guest saw: the base with the overlay's sectors on top.
    let mut expected = base_before;
    for lba in 1000..1024u64 {
        let at = lba as usize * SECTOR;
        expected[at..at + SECTOR].copy_from_slice(&sector_bytes(lba, 0x77));
    }
    std::fs::write(dir.path().join("expected.raw"), &expected).unwrap();
    qemu_img(
        dir.path(),
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "ov.qcow2",
            "expected.raw",
        ],
    );
}

#[test]
fn read_only_drive_refuses_guest_writes() {
    let dir = TempDir::new("disk-ro");
    let img = raw_image(&dir, "ro.raw");
    let mut p = petrel()
        .args([
            "-drive",
            &format!("file={img},format=raw,if=none,id=d0,readonly=on"),
            "-device",
            "virtio-blk-pci,drive=d0",
        ])
        .append("petrel.test=blk")
        .spawn();
    let (line, _) = p.wait_for_line("blk: capacity=", DEFAULT_TIMEOUT);
    assert!(line.contains("ro=1"), "{line}");
    p.wait_for_line("blk: write FAILED", DEFAULT_TIMEOUT);
    p.expect_exit_code(1);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0));
}

/// A broken or missing image stops petrel at start with the image's error.
#[test]
fn bad_images_are_refused_at_start() {
    let dir = TempDir::new("disk-bad");
    let garbage = dir.path().join("garbage.qcow2");
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    qemu_img(
        dir.path(),
        &["create", "-q", "-f", "qcow2", "t.qcow2", "64M"],
    );
    let truncated = dir.path().join("t.qcow2");
    // Cut inside the header.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap();
    f.set_len(48).unwrap();
    let missing = dir.path().join("missing.raw");
    let cases = [
        (
            format!("file={},if=virtio", missing.display()),
            format!(
                "Could not open '{}': No such file or directory",
                missing.display()
            ),
        ),
        (
            format!("file={},format=qcow2,if=virtio", garbage.display()),
            format!("Image '{}' is not", garbage.display()),
        ),
        (
            format!("file={},format=qcow2,if=virtio", truncated.display()),
            format!("'{}'", truncated.display()),
        ),
    ];
    for (drive, want) in cases {
        let mut p = petrel().args(["-drive", &drive]).spawn();
        p.expect_exit_code(1);
        let err = p.stderr();
        assert!(
            err.contains(&want),
            "-drive {drive}: wanted '{want}' in:\n{err}"
        );
    }
}

#[test]
fn pci_slot_and_two_disks() {
    let dir = TempDir::new("disk-two");
    let a = raw_image(&dir, "a.raw");
    let b = raw_image(&dir, "b.raw");
    let mut p = petrel()
        .args([
            "-drive",
            &format!("file={a},format=raw,if=none,id=da"),
            "-drive",
            &format!("file={b},format=raw,if=none,id=db"),
            "-device",
            "virtio-blk-pci,drive=db,addr=0x7",
            "-device",
            "virtio-blk-pci,drive=da,addr=0x3",
        ])
        .append("petrel.test=blk petrel.blk.lba=3")
        .spawn();
    p.wait_for_line("pci: 00:03.0 1af4:1042", DEFAULT_TIMEOUT);
    p.wait_for_line("pci: 00:07.0 1af4:1042", DEFAULT_TIMEOUT);
    let (status, _) = p.wait_for_line("status: ", DEFAULT_TIMEOUT);
    assert_eq!(status, "status: 0", "{}", p.console());
    p.expect_exit_code(0);
    // The guest drives the first function it finds: slot 3, drive da.
    let da = std::fs::read(&a).unwrap();
    assert_eq!(&da[3 * SECTOR..4 * SECTOR], &sector_bytes(3, 0xa5)[..]);
    assert!(std::fs::read(&b).unwrap().iter().all(|&x| x == 0));
}

/// The guest never flushes here (blkbench does not): petrel must still leave a consistent
/// qcow2 image when it exits.
#[test]
fn qcow2_is_consistent_after_exit_without_a_guest_flush() {
    let dir = TempDir::new("disk-noflush");
    qemu_img(
        dir.path(),
        &["create", "-q", "-f", "qcow2", "n.qcow2", "64M"],
    );
    let img = dir.path().join("n.qcow2").display().to_string();
    let mut p = petrel()
        .args(["-drive", &format!("file={img},if=virtio")])
        .append("petrel.test=blkbench petrel.blk.bench=randwrite petrel.blk.ops=2000")
        .spawn();
    p.wait_for_line("blkbench: done", DEFAULT_TIMEOUT);
    let (status, _) = p.wait_for_line("status: ", DEFAULT_TIMEOUT);
    assert_eq!(status, "status: 0", "{}", p.console());
    p.expect_exit_code(0);
    qemu_img(dir.path(), &["check", "n.qcow2"]);
}

/// A scratch directory with an empty `tmp` in it, for petrel's `TMPDIR`.
fn dir_with_tmpdir(tag: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    (dir, tmp)
}

/// The files in `tmp` petrel holds open (what its `/proc/PID/fd` links to), each once.
fn fds_in(pid: u32, tmp: &Path) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut files: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(tmp))
        .map(|target| target.display().to_string())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Runs the `blk` scenario over `disk_args` with `TMPDIR=tmp` (and `-no-shutdown`, to look at
/// the process once the guest is done): petrel must hold `overlays` temporary overlays,
/// `tmp/vl.XXXXXX` files already unlinked, and leave `tmp` empty when it exits.
fn run_blk_with_tmpdir(disk_args: &[&str], append: &str, tmp: &Path, overlays: usize) {
    let mut p = petrel()
        .args(disk_args.iter().copied())
        .args(["-no-shutdown"])
        .env("TMPDIR", tmp.to_str().unwrap())
        .append(&format!("petrel.test=blk {append}"))
        .spawn();
    let (status, _) = p.wait_for_line("status: ", DEFAULT_TIMEOUT);
    assert_eq!(status, "status: 0", "guest failed:\n{}", p.console());
    let fds = fds_in(p.pid(), tmp);
    assert_eq!(fds.len(), overlays, "overlays held: {fds:?}");
    for fd in &fds {
        let name = fd.strip_prefix(&format!("{}/", tmp.display())).unwrap();
        assert!(
            name.starts_with("vl.") && name.len() == 9 + " (deleted)".len(),
            "{fd}"
        );
        assert!(fd.ends_with(" (deleted)"), "{fd}");
    }
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    p.signal(libc::SIGTERM);
    p.expect_exit_code(0);
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "a temporary file was left behind"
    );
}

/// `snapshot=on`: the guest reads the image through a temporary qcow2 overlay and its
/// writes (which it reads back itself) go only to the overlay; the image file stays
/// byte-identical, raw or qcow2.
#[test]
fn snapshot_on_keeps_raw_and_qcow2_images_unchanged() {
    let (dir, tmp) = dir_with_tmpdir("disk-snapshot");
    let raw = raw_image(&dir, "s.raw");
    let mut data = std::fs::read(&raw).unwrap();
    for lba in 0..32u64 {
        let at = lba as usize * SECTOR;
        data[at..at + SECTOR].copy_from_slice(&sector_bytes(lba, 0x11));
    }
    std::fs::write(&raw, &data).unwrap();
    qemu_img(
        dir.path(),
        &["convert", "-f", "raw", "-O", "qcow2", "s.raw", "s.qcow2"],
    );
    let qcow2 = dir.path().join("s.qcow2").display().to_string();
    for (image, drive) in [
        (&raw, format!("file={raw},format=raw,if=virtio,snapshot=on")),
        (
            &qcow2,
            format!("file={qcow2},if=virtio,snapshot=on,cache=none"),
        ),
    ] {
        let before = std::fs::read(image).unwrap();
        run_blk_with_tmpdir(
            &["-drive", &drive],
            "petrel.blk.mode=read petrel.blk.lba=0 petrel.blk.count=32 petrel.blk.pattern=0x11",
            &tmp,
            1,
        );
        // Over the image's own sectors and past them.
        run_blk_with_tmpdir(
            &["-drive", &drive],
            "petrel.blk.lba=16 petrel.blk.count=64 petrel.blk.pattern=0x5c",
            &tmp,
            1,
        );
        assert!(
            std::fs::read(image).unwrap() == before,
            "{image} was written"
        );
    }
    qemu_img(dir.path(), &["check", "s.qcow2"]);
}

/// `-snapshot` puts every drive that does not say otherwise on a temporary overlay;
/// `snapshot=off` keeps a drive on its image.
#[test]
fn global_snapshot_spares_drives_with_snapshot_off() {
    let (dir, tmp) = dir_with_tmpdir("disk-global-snapshot");
    let a = raw_image(&dir, "a.raw");
    let b = raw_image(&dir, "b.raw");
    let c = raw_image(&dir, "c.raw");
    run_blk_with_tmpdir(
        &[
            "-snapshot",
            "-drive",
            &format!("file={a},format=raw,if=none,id=da"),
            "-drive",
            &format!("file={b},format=raw,if=none,id=db,snapshot=off"),
            "-drive",
            &format!("file={c},format=raw,if=none,id=dc"),
            "-device",
            "virtio-blk-pci,drive=da,addr=0x3",
            "-device",
            "virtio-blk-pci,drive=db,addr=0x4",
        ],
        "petrel.blk.lba=3",
        &tmp,
        2,
    );
    // The guest wrote to the first disk it found, da, which was on an overlay.
    assert!(std::fs::read(&a).unwrap().iter().all(|&x| x == 0));
}
