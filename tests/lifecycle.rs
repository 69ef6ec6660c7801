//! Guest power events and process lifecycle: poweroff status, reboot, -no-reboot, -S,
//! -pidfile, -daemonize, signals, chardev backends.

use std::time::Duration;

use petrel_tests::{PetrelBuilder, TempDir, DEFAULT_TIMEOUT};

fn petrel() -> PetrelBuilder {
    PetrelBuilder::new(env!("CARGO_BIN_EXE_petrel"))
}

#[test]
fn guest_status_becomes_the_exit_status() {
    let mut p = petrel().append("petrel.test=boot petrel.status=3").spawn();
    p.wait_for_line("status: 3", DEFAULT_TIMEOUT);
    p.wait_for_line("poweroff: acpi", DEFAULT_TIMEOUT);
    p.expect_exit_code(3);
}

fn reboot_via(method: &str) {
    let mut p = petrel()
        .append(&format!("petrel.test=reboot petrel.reset={method}"))
        .spawn();
    p.wait_for_line("boot-count: 1", DEFAULT_TIMEOUT);
    p.wait_for_line(&format!("reboot: via {method}"), DEFAULT_TIMEOUT);
    p.wait_for_line("boot-count: 2", DEFAULT_TIMEOUT);
    assert_eq!(
        p.lines_with("petrel-guest: hello").len(),
        2,
        "{}",
        p.console()
    );
    p.expect_exit_code(0);
}

#[test]
fn reboot_through_acpi_reset_register_boots_again() {
    reboot_via("acpi");
}

#[test]
fn reboot_through_i8042_boots_again() {
    reboot_via("kbd");
}

#[test]
fn reboot_through_port_cf9_boots_again() {
    reboot_via("cf9");
}

#[test]
fn no_reboot_exits_on_reset() {
    let mut p = petrel()
        .append("petrel.test=reboot")
        .args(["-no-reboot"])
        .spawn();
    p.wait_for_line("reboot: via", DEFAULT_TIMEOUT);
    p.expect_exit_code(0);
    assert_eq!(
        p.lines_with("petrel-guest: hello").len(),
        1,
        "{}",
        p.console()
    );
    assert!(p.lines_with("boot-count: 2").is_empty());
}

#[test]
fn start_paused_runs_nothing_until_terminated() {
    let mut p = petrel().args(["-S"]).spawn();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(p.is_running());
    assert!(
        p.console().is_empty(),
        "a paused guest printed:\n{}",
        p.console()
    );
    p.signal(libc::SIGTERM);
    p.expect_exit_code(0);
    assert!(
        p.stderr().contains("terminating on signal 15"),
        "{}",
        p.stderr()
    );
}

#[test]
fn sigterm_stops_a_running_guest() {
    let mut p = petrel()
        .append("petrel.test=ioloop petrel.iters=100000000")
        .spawn();
    p.wait_for_line("ioloop: start", DEFAULT_TIMEOUT);
    p.signal(libc::SIGTERM);
    p.expect_exit_code(0);
}

#[test]
fn no_shutdown_keeps_the_process_after_poweroff() {
    let mut p = petrel().args(["-no-shutdown"]).spawn();
    p.wait_for_line("poweroff: acpi", DEFAULT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(p.is_running(), "petrel exited despite -no-shutdown");
    p.signal(libc::SIGTERM);
    p.expect_exit_code(0);
}

#[test]
fn pidfile_holds_the_pid_and_is_removed_at_exit() {
    let dir = TempDir::new("pidfile");
    let pidfile = dir.path().join("petrel.pid");
    let mut p = petrel()
        .args(["-pidfile", pidfile.to_str().unwrap(), "-S"])
        .spawn();
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    while !pidfile.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, p.pid());
    p.signal(libc::SIGTERM);
    p.expect_exit_code(0);
    assert!(!pidfile.exists(), "pid file left behind");
}

#[test]
fn serial_to_file_and_daemonize() {
    let dir = TempDir::new("daemon");
    let log = dir.path().join("serial.log");
    let pidfile = dir.path().join("petrel.pid");
    let mut p = petrel()
        .raw()
        .args(["-kernel", petrel_tests::guest_kernel().to_str().unwrap()])
        .args(["-nodefaults", "-display", "none", "-daemonize"])
        .args(["-serial", &format!("file:{}", log.display())])
        .args(["-pidfile", pidfile.to_str().unwrap()])
        .spawn();
    // The foreground process returns once the daemon is up.
    p.expect_exit_code(0);
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("poweroff: acpi") && !pidfile.exists() {
            assert!(text.contains("petrel-guest: hello"));
            assert!(text.contains("status: 0"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not finish:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serial_on_a_unix_socket_server() {
    use std::io::Read;
    let dir = TempDir::new("sock");
    let sock = dir.path().join("serial.sock");
    let mut p = petrel()
        .raw()
        .args(["-kernel", petrel_tests::guest_kernel().to_str().unwrap()])
        .args(["-nodefaults", "-display", "none"])
        .args([
            "-chardev",
            &format!("socket,id=ser0,path={},server=on,wait=on", sock.display()),
        ])
        .args(["-serial", "chardev:ser0"])
        .spawn();
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    let mut stream = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    stream.set_read_timeout(Some(DEFAULT_TIMEOUT)).unwrap();
    let _ = stream.read_to_string(&mut text);
    assert!(text.contains("petrel-guest: hello"), "{text}");
    assert!(text.contains("status: 0"), "{text}");
    p.expect_exit_code(0);
    assert!(!sock.exists(), "socket file left behind");
}
