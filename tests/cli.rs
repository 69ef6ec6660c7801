//! Command-line errors: each gets a message naming what is wrong and exit status 1, never a
//! panic.

use petrel_tests::{PetrelBuilder, TempDir, DEFAULT_TIMEOUT};

fn petrel() -> PetrelBuilder {
    PetrelBuilder::new(env!("CARGO_BIN_EXE_petrel"))
}

fn expect_error(p: PetrelBuilder, needle: &str) {
    let mut p = p.spawn();
    p.expect_exit_code(1);
    let err = p.stderr();
    assert!(err.starts_with("petrel: "), "{err}");
    assert!(
        err.contains(needle),
        "stderr does not mention '{needle}':\n{err}"
    );
    assert!(p.console().is_empty(), "the guest ran:\n{}", p.console());
}

#[test]
fn missing_kernel_file() {
    expect_error(
        petrel()
            .raw()
            .args(["-kernel", "/nonexistent/vmlinuz", "-display", "none"]),
        "/nonexistent/vmlinuz",
    );
}

#[test]
fn corrupt_kernel() {
    let dir = TempDir::new("corrupt");
    let path = dir.path().join("garbage.bin");
    std::fs::write(&path, vec![0x5au8; 64 * 1024]).unwrap();
    expect_error(
        petrel()
            .raw()
            .args(["-kernel", path.to_str().unwrap(), "-display", "none"]),
        "is not a bzImage or an ELF kernel",
    );
}

#[test]
fn truncated_elf_kernel() {
    let dir = TempDir::new("truncated");
    let path = dir.path().join("truncated.elf");
    let good = std::fs::read(petrel_tests::guest_kernel()).unwrap();
    std::fs::write(&path, &good[..200.min(good.len())]).unwrap();
    expect_error(
        petrel()
            .raw()
            .args(["-kernel", path.to_str().unwrap(), "-display", "none"]),
        "cannot load kernel",
    );
}

#[test]
fn impossible_memory_sizes() {
    expect_error(petrel().args(["-m", "0"]), "-m");
    expect_error(petrel().args(["-m", "12Q"]), "-m");
    expect_error(petrel().args(["-m", "1000000T"]), "-m");
    expect_error(petrel().args(["-m", "-5"]), "-m");
}

#[test]
fn unknown_option() {
    expect_error(
        petrel().args(["-frobnicate"]),
        "-frobnicate: invalid option",
    );
}

#[test]
fn option_missing_its_argument() {
    expect_error(petrel().raw().args(["-kernel"]), "-kernel");
}

#[test]
fn too_many_cpus() {
    expect_error(petrel().args(["-smp", "100000"]), "-smp");
}

#[test]
fn unsupported_accelerator() {
    expect_error(petrel().args(["-accel", "tcg"]), "KVM");
}

#[test]
fn no_kernel_at_all() {
    expect_error(petrel().raw().args(["-display", "none"]), "-kernel");
}

#[test]
fn help_and_version() {
    let mut p = petrel().raw().args(["--version"]).spawn();
    p.expect_exit_code(0);
    assert!(
        p.console().starts_with("petrel version "),
        "{}",
        p.console()
    );
    let mut p = petrel().raw().args(["-h"]).spawn();
    p.expect_exit_code(0);
    for opt in ["-kernel", "-append", "-smp", "-serial", "-no-reboot"] {
        assert!(p.console().contains(opt), "help lacks {opt}");
    }
    let _ = DEFAULT_TIMEOUT;
}
