//! Real Linux through petrel, nested: this machine's KVM cannot run stock Linux, so the tests
//! start L0 = QEMU with TCG (`-cpu max` has SVM), whose guest L1 is Debian's cloud kernel with
//! kvm-amd loaded, and run petrel inside L1 to boot L2 = the same kernel with a busybox
//! initramfs. `resources/nested/build.sh` builds the kernel and both initramfs images once;
//! this module appends petrel, its libraries and the run's arguments to L1's initramfs as a
//! second cpio archive, starts L0, and reads L0's serial console, which carries L1's console,
//! petrel's stdout (L2's serial port) and petrel's stderr. `resources/nested/README.md` lists
//! the markers.
//!
//! At most one L0 runs at a time in a test process (TCG is CPU-heavy): [`Nested::spawn`] waits
//! for the previous run to end. `PETREL_NESTED_DUMP=1` prints each run's console with arrival
//! times when it ends; `PETREL_NESTED_QEMU` names another QEMU binary for L0.
//!
//! petrel is the binary the test names (`CARGO_BIN_EXE_petrel`: the debug build under
//! `cargo test`), so the tier always runs the petrel just built.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{run_build_script, TempDir};

/// Default limit for a whole nested run, from L0's start to its exit.
pub const NESTED_TIMEOUT: Duration = Duration::from_secs(240);

/// L2's kernel command line before the harness's own words: serial console, few messages.
pub const L2_BASE_APPEND: &str = "console=ttyS0 quiet";

/// L0: QEMU with TCG (`-cpu max` offers SVM with nested paging), one vCPU (TCG is
/// single-threaded per vCPU and the CI machines have two cores), 2 GiB for L1 and the L2 it
/// runs, the serial port on stdout, no other devices, and exit instead of rebooting.
const L0_ARGS: &str = "-accel tcg -cpu max -M q35 -m 2048 -smp 1 -nodefaults -no-reboot \
                       -nographic -display none -serial stdio -monitor none";

/// L1's kernel command line. `panic=-1` with L0's `-no-reboot` ends L0 on an L1 panic.
const L1_APPEND: &str = "console=ttyS0 quiet panic=-1";

/// x86 Linux's COMMAND_LINE_SIZE, which bounds L2's command line (and so `l2_command`).
const L2_CMDLINE_MAX: usize = 2048;

/// The files `resources/nested/build.sh` makes.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The Debian cloud kernel (L1's kernel; L1 also carries a copy for L2).
    pub bzimage: PathBuf,
    /// L1's initramfs without petrel.
    pub l1_base: PathBuf,
    /// L2's initramfs (also inside `l1_base` as /l2/initramfs.cpio).
    pub l2_initramfs: PathBuf,
    /// The kernel's release string.
    pub kernel_release: String,
}

/// Builds (or finds up to date) the nested artifacts, once per test process.
pub fn artifacts() -> Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS
        .get_or_init(|| {
            let dir = PathBuf::from(run_build_script("resources/nested/build.sh"));
            let release = std::fs::read_to_string(dir.join("kernel-release"))
                .expect("kernel-release")
                .trim()
                .to_string();
            Artifacts {
                bzimage: dir.join("bzImage"),
                l1_base: dir.join("l1-base.cpio"),
                l2_initramfs: dir.join("l2-initramfs.cpio"),
                kernel_release: release,
            }
        })
        .clone()
}

/// What L2's /init does after the command: `l2end=` on its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2End {
    /// `poweroff -f` (the default).
    Poweroff,
    /// `reboot -f`.
    Reboot,
    /// Stay up (init sleeps).
    None,
}

impl L2End {
    fn word(self) -> &'static str {
        match self {
            L2End::Poweroff => "poweroff",
            L2End::Reboot => "reboot",
            L2End::None => "none",
        }
    }
}

/// The device name L1 gives the `index`th disk attached with [`Nested::disk`] (`/dev/vda`...).
pub fn l1_disk(index: usize) -> String {
    assert!(index < 26, "at most 26 disks");
    format!("/dev/vd{}", (b'a' + index as u8) as char)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (for [`Nested::qmp_port`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Builder for a nested run.
#[derive(Clone, Debug)]
pub struct Nested {
    petrel: PathBuf,
    petrel_args: Vec<String>,
    petrel_env: Vec<(String, String)>,
    l2_command: String,
    l2_end: L2End,
    l2_append: String,
    default_l2_args: bool,
    disks: Vec<PathBuf>,
    qmp_port: Option<u16>,
    l1_files: Vec<(String, Vec<u8>)>,
    l1_httpd: Option<u16>,
    timeout: Duration,
}

impl Nested {
    /// A run of the petrel binary at `petrel` (tests pass `env!("CARGO_BIN_EXE_petrel")`).
    /// By default petrel gets `-kernel /l2/bzImage -initrd /l2/initramfs.cpio -append <L2
    /// command line> -nodefaults -serial stdio -display none`, then [`Nested::petrel_args`].
    pub fn new(petrel: &str) -> Nested {
        Nested {
            petrel: PathBuf::from(petrel),
            petrel_args: Vec::new(),
            petrel_env: Vec::new(),
            l2_command: String::new(),
            l2_end: L2End::Poweroff,
            l2_append: String::new(),
            default_l2_args: true,
            disks: Vec::new(),
            qmp_port: None,
            l1_files: Vec::new(),
            l1_httpd: None,
            timeout: NESTED_TIMEOUT,
        }
    }

    /// More arguments for petrel (after the default ones).
    pub fn petrel_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.petrel_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Only the arguments given with [`Nested::petrel_args`]: no default kernel, initrd,
    /// command line or serial options.
    pub fn raw_petrel_args(mut self) -> Self {
        self.default_l2_args = false;
        self
    }

    /// An environment variable for petrel (e.g. `PETREL_LOG`).
    pub fn petrel_env(mut self, key: &str, value: &str) -> Self {
        self.petrel_env.push((key.into(), value.into()));
        self
    }

    /// The shell script L2 runs between `L2-BEGIN` and `L2-END` (busybox sh; stdout and
    /// stderr go to L2's console; /bin/cmos reads and writes CMOS bytes).
    pub fn l2_command(mut self, script: &str) -> Self {
        self.l2_command = script.to_string();
        self
    }

    /// What L2 does after the command.
    pub fn l2_end(mut self, end: L2End) -> Self {
        self.l2_end = end;
        self
    }

    /// Extra words for L2's kernel command line.
    pub fn l2_append(mut self, words: &str) -> Self {
        if !self.l2_append.is_empty() {
            self.l2_append.push(' ');
        }
        self.l2_append.push_str(words);
        self
    }

    /// Attaches a host file to L1 as a raw virtio disk; L1 sees the `n`th one as
    /// [`l1_disk`]`(n)`, to be passed on to petrel.
    pub fn disk(mut self, host_path: impl AsRef<Path>) -> Self {
        self.disks.push(host_path.as_ref().to_path_buf());
        self
    }

    /// Forwards 127.0.0.1:`port` on the host to L1's `port` (L0 user networking; L1 gets
    /// 10.0.2.15/24) so a QMP server petrel opens there is reachable from the test.
    pub fn qmp_port(mut self, port: u16) -> Self {
        self.qmp_port = Some(port);
        self
    }

    /// A file for L1's root file system (in the per-run archive), at `path` relative to `/`
    /// (e.g. `nested/www/blob`, which [`Nested::l1_httpd`] serves as `/blob`).
    pub fn l1_file(mut self, path: &str, data: &[u8]) -> Self {
        let path = path.trim_start_matches('/');
        assert!(
            !path.is_empty() && !path.starts_with("nested/args") && !path.starts_with("nested/env"),
            "bad L1 file path {path:?}"
        );
        self.l1_files.push((path.to_string(), data.to_vec()));
        self
    }

    /// Runs busybox `httpd` in L1 on 127.0.0.1:`port`, serving `/nested/www` (files added with
    /// [`Nested::l1_file`]), before petrel starts. A guest on petrel's user network (slirp)
    /// reaches it as 10.0.2.2:`port`: slirp connects to L1's loopback for that address.
    pub fn l1_httpd(mut self, port: u16) -> Self {
        self.l1_httpd = Some(port);
        self
    }

    /// Limit for the whole run (default [`NESTED_TIMEOUT`]), counted from L0's start.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// L2's kernel command line this run uses.
    pub fn l2_cmdline(&self) -> String {
        let mut s = format!(
            "{L2_BASE_APPEND} l2end={} l2cmd={}",
            self.l2_end.word(),
            base64(self.l2_command.as_bytes())
        );
        if !self.l2_append.is_empty() {
            s.push(' ');
            s.push_str(&self.l2_append);
        }
        s
    }

    fn full_petrel_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.default_l2_args {
            let cmdline = self.l2_cmdline();
            assert!(
                cmdline.len() < L2_CMDLINE_MAX,
                "L2's command line is {} bytes (limit {L2_CMDLINE_MAX}): shorten the L2 command",
                cmdline.len()
            );
            for a in [
                "-kernel",
                "/l2/bzImage",
                "-initrd",
                "/l2/initramfs.cpio",
                "-append",
                &cmdline,
                "-nodefaults",
                "-serial",
                "stdio",
                "-display",
                "none",
            ] {
                args.push(a.to_string());
            }
        }
        args.extend(self.petrel_args.iter().cloned());
        args
    }

    /// Builds what is missing, waits for any other nested run of this process to end, and
    /// starts L0.
    pub fn spawn(self) -> NestedRun {
        let art = artifacts();
        let guard = nested_lock();
        let dir = TempDir::new("nested");
        let initrd = dir.path().join("initrd.cpio");
        let mut image = std::fs::read(&art.l1_base)
            .unwrap_or_else(|e| panic!("read {}: {e}", art.l1_base.display()));
        // The kernel unpacks concatenated archives; each must start 4-byte aligned.
        assert_eq!(
            image.len() % 4,
            0,
            "l1-base.cpio length is not a multiple of 4"
        );
        image.extend_from_slice(&self.run_archive());
        std::fs::write(&initrd, &image).expect("write the combined initrd");

        let qemu = std::env::var("PETREL_NESTED_QEMU")
            .unwrap_or_else(|_| "qemu-system-x86_64".to_string());
        let mut cmd = Command::new(&qemu);
        cmd.args(L0_ARGS.split_whitespace());
        cmd.arg("-kernel").arg(&art.bzimage);
        cmd.arg("-initrd").arg(&initrd);
        cmd.args(["-append", L1_APPEND]);
        for (i, disk) in self.disks.iter().enumerate() {
            assert!(
                !disk.to_string_lossy().contains(','),
                "disk path {} has a comma",
                disk.display()
            );
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,index={i}",
                disk.display()
            ));
        }
        if let Some(port) = self.qmp_port {
            cmd.args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{port}"),
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let die_with_parent = || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, touches no memory and is
            // async-signal-safe: L0 gets SIGKILL if the test thread that started it dies
            // without cleaning up.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            Ok(())
        };
        // SAFETY: the closure runs in the forked child before exec and only calls prctl.
        unsafe { cmd.pre_exec(die_with_parent) };
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {qemu}: {e} (tests/run.sh installs qemu-system-x86)")
        });
        let console = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let c = console.clone();
        let stdout_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let at = started.elapsed();
                let line = Line {
                    at,
                    wall: started_wall + at,
                    text: sanitize(&buf),
                };
                let (m, cv) = &*c;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*c;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
        let e = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = BufReader::new(err).read_to_end(&mut s);
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&s));
        });
        NestedRun {
            child: Some(child),
            started,
            deadline: started + self.timeout,
            timeout: self.timeout,
            console,
            stderr,
            status: None,
            readers: vec![stdout_reader, stderr_reader],
            qmp_port: self.qmp_port,
            _dir: dir,
            _guard: guard,
        }
    }

    /// The cpio archive appended to L1's: petrel, its libraries, and /nested/*.
    fn run_archive(&self) -> Vec<u8> {
        let mut cpio = Newc::default();
        let petrel = std::fs::read(&self.petrel)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.petrel.display()));
        cpio.file("bin/petrel", 0o755, &petrel);
        for lib in shared_libraries(&self.petrel) {
            let data =
                std::fs::read(&lib).unwrap_or_else(|e| panic!("read {}: {e}", lib.display()));
            let name = lib.to_string_lossy();
            cpio.file(name.trim_start_matches('/'), 0o755, &data);
        }
        let mut args = String::new();
        for a in self.full_petrel_args() {
            args.push_str(&base64(a.as_bytes()));
            args.push('\n');
        }
        cpio.file("nested/args", 0o644, args.as_bytes());
        if !self.petrel_env.is_empty() {
            let mut env = String::new();
            for (k, v) in &self.petrel_env {
                assert!(
                    !k.contains(['=', '\n']) && !v.contains('\n'),
                    "bad environment variable {k}={v}"
                );
                env.push_str(&format!("{k}={v}\n"));
            }
            cpio.file("nested/env", 0o644, env.as_bytes());
        }
        if self.qmp_port.is_some() {
            cpio.file("nested/net", 0o644, b"");
        }
        for (path, data) in &self.l1_files {
            cpio.file(path, 0o644, data);
        }
        if let Some(port) = self.l1_httpd {
            cpio.file("nested/httpd", 0o644, format!("{port}\n").as_bytes());
        }
        cpio.finish()
    }
}

/// Serialises nested runs within the test process; a test that panicked while holding it
/// does not block the others.
fn nested_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared libraries `ldd` lists for a binary, the dynamic loader included (none for a
/// static binary).
fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("run ldd: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": nothing to add.
        return Vec::new();
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ if line.contains("not found") => panic!("ldd {}: {line}", bin.display()),
            _ => {}
        }
    }
    libs
}

/// One line of L0's serial console.
#[derive(Clone, Debug)]
pub struct Line {
    /// Arrival, since L0 started.
    pub at: Duration,
    /// Arrival on the host's wall clock.
    pub wall: SystemTime,
    /// The text, without line end, escape sequences and other control characters.
    pub text: String,
}

impl Line {
    /// Arrival on the host's wall clock in seconds since the epoch.
    pub fn wall_secs(&self) -> f64 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<Line>,
    closed: bool,
}

/// A running (or finished) nested run. Dropping it kills L0 and removes its files.
pub struct NestedRun {
    child: Option<Child>,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    console: Arc<(Mutex<Lines>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    readers: Vec<std::thread::JoinHandle<()>>,
    qmp_port: Option<u16>,
    _dir: TempDir,
    _guard: MutexGuard<'static, ()>,
}

/// Marks a kernel panic of L1 or L2: waiting stops there.
const PANIC_MARK: &str = "Kernel panic - not syncing";

impl NestedRun {
    /// The host address QMP is forwarded to, if [`Nested::qmp_port`] was set.
    pub fn qmp_addr(&self) -> Option<String> {
        self.qmp_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// Connects to the port forwarded with [`Nested::qmp_port`] once a server petrel opened
    /// there in L1 has sent its first line (QMP's greeting), and returns the stream and that
    /// line (the reader may hold more). Until petrel listens, L0's slirp accepts the host's
    /// connection and closes it at once: this retries every 200 ms. The stream has no read
    /// timeout. Panics with the console if `timeout` (or the run's limit) passes, petrel
    /// exits or a kernel panics first.
    pub fn connect_forwarded(&self, timeout: Duration) -> (BufReader<std::net::TcpStream>, String) {
        let addr = self.qmp_addr().expect("Nested::qmp_port was not set");
        let deadline = (Instant::now() + timeout).min(self.deadline);
        loop {
            if let Ok(s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reader = BufReader::new(s);
                let mut line = String::new();
                if matches!(reader.read_line(&mut line), Ok(n) if n > 0 && line.ends_with('\n')) {
                    let _ = reader.get_ref().set_read_timeout(None);
                    return (reader, line);
                }
            }
            {
                let c = self.console.0.lock().unwrap();
                let over = c.closed
                    || c.lines
                        .iter()
                        .any(|l| l.text.contains("L1-PETREL-EXIT") || l.text.contains(PANIC_MARK));
                drop(c);
                if over {
                    self.fail(&format!(
                        "no server answered on {addr} before the run ended"
                    ));
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no server answered on {addr} in time"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until a console line starts with `prefix`; returns it. Panics with the console
    /// if `timeout` (or the run's limit) passes, L0 exits, or a kernel panics first.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Line {
        self.wait_for(&format!("a line starting with '{prefix}'"), timeout, |l| {
            l.text.starts_with(prefix)
        })
    }

    /// Waits until `n` lines start with `prefix` and returns the `n`th.
    pub fn wait_for_nth_line(&self, prefix: &str, n: usize, timeout: Duration) -> Line {
        let mut seen = 0;
        self.wait_for(
            &format!("line {n} starting with '{prefix}'"),
            timeout,
            move |l| {
                if l.text.starts_with(prefix) {
                    seen += 1;
                }
                seen == n
            },
        )
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut pred: impl FnMut(&Line) -> bool) -> Line {
        let deadline = (Instant::now() + timeout).min(self.deadline);
        let (m, cv) = &*self.console;
        let mut c = m.lock().unwrap();
        let mut checked = 0;
        loop {
            while checked < c.lines.len() {
                let line = &c.lines[checked];
                checked += 1;
                if pred(line) {
                    return line.clone();
                }
                if line.text.contains(PANIC_MARK) {
                    drop(c);
                    self.fail(&format!("a kernel panicked while waiting for {what}"));
                }
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                drop(c);
                let why = if now >= deadline {
                    "timed out"
                } else {
                    "L0 exited"
                };
                self.fail(&format!("{why} waiting for {what}"));
            }
            c = cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "nested run: {why} ({:.1} s since L0 started).\n{}",
            self.started.elapsed().as_secs_f64(),
            self.transcript().dump()
        );
    }

    /// Waits for L0 to exit (L1 powers off after petrel exits); kills it and panics with the
    /// console when `timeout` (or the run's limit) passes first. Returns the transcript.
    pub fn wait_exit(&mut self, timeout: Duration) -> Transcript {
        if self.status.is_none() {
            let deadline = (Instant::now() + timeout).min(self.deadline);
            let child = self.child.as_mut().expect("child present");
            loop {
                if let Some(s) = child.try_wait().expect("try_wait") {
                    self.status = Some(s);
                    for r in self.readers.drain(..) {
                        let _ = r.join();
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.status = child.try_wait().ok().flatten();
                    for r in self.readers.drain(..) {
                        let _ = r.join();
                    }
                    let limit = if timeout < self.timeout {
                        timeout
                    } else {
                        self.timeout
                    };
                    self.fail(&format!("L0 did not exit within {limit:?}; killed"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let t = self.transcript();
        if std::env::var_os("PETREL_NESTED_DUMP").is_some() {
            eprintln!("{}", t.dump());
        }
        t
    }

    /// Waits for the run to end ([`NestedRun::wait_exit`] with the run's own limit).
    pub fn finish(mut self) -> Transcript {
        let t = self.timeout;
        self.wait_exit(t)
    }

    /// A snapshot of everything seen so far.
    pub fn transcript(&self) -> Transcript {
        Transcript {
            lines: self.console.0.lock().unwrap().lines.clone(),
            l0_status: self.status,
            l0_stderr: self.stderr.lock().unwrap().clone(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for NestedRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// One boot of L2 as its /init reported it.
#[derive(Clone, Debug, Default)]
pub struct L2Boot {
    /// The `L2-INIT` line.
    pub init: Option<Line>,
    /// Whether `L2-BEGIN` was seen.
    pub began: bool,
    /// The command's output lines (L1 and petrel lines left out).
    pub output: Vec<Line>,
    /// The command's status from `L2-END rc=N`, if it ended.
    pub rc: Option<i32>,
}

impl L2Boot {
    /// The output as text, one line each.
    pub fn text(&self) -> String {
        self.output
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first output line starting with `prefix`, with the prefix removed.
    pub fn value(&self, prefix: &str) -> Option<&str> {
        self.output
            .iter()
            .find_map(|l| l.text.strip_prefix(prefix))
            .map(str::trim)
    }

    /// The first output line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&Line> {
        self.output.iter().find(|l| l.text.starts_with(prefix))
    }

    /// Every output line starting with `prefix`, with the prefix removed, in order.
    pub fn values(&self, prefix: &str) -> Vec<&str> {
        self.output
            .iter()
            .filter_map(|l| l.text.strip_prefix(prefix))
            .collect()
    }
}

/// The console of a nested run and L0's status, parsed.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// Every console line.
    pub lines: Vec<Line>,
    /// L0's exit status (None while running or if it had to be killed).
    pub l0_status: Option<ExitStatus>,
    /// L0's stderr.
    pub l0_stderr: String,
    /// Time since L0 started when this was taken.
    pub elapsed: Duration,
}

/// Whether a console line is the marker `m`. A marker line may carry a fragment of
/// unterminated output before it (SeaBIOS's `Booting from ROM..`, or a line the other side of
/// L1's console had not finished), so the marker is matched at the end of the line.
fn is_marker(text: &str, m: &str) -> bool {
    text.ends_with(m)
}

/// The rest of the line after the last occurrence of marker `m` (see [`is_marker`]).
fn after_marker<'a>(text: &'a str, m: &str) -> Option<&'a str> {
    text.rfind(m).map(|i| &text[i + m.len()..])
}

fn is_l1_line(text: &str) -> bool {
    text.starts_with("L1-") || text.starts_with("PETREL-STDERR: ")
}

impl Transcript {
    /// petrel's exit status, from `L1-PETREL-EXIT <status>`.
    pub fn petrel_exit(&self) -> Option<i32> {
        self.lines
            .iter()
            .find_map(|l| after_marker(&l.text, "L1-PETREL-EXIT "))
            .and_then(|s| s.trim().parse().ok())
    }

    /// Each boot of L2, in order.
    pub fn l2_boots(&self) -> Vec<L2Boot> {
        let mut boots: Vec<L2Boot> = Vec::new();
        let mut in_command = false;
        for l in &self.lines {
            if is_marker(&l.text, "L2-INIT") {
                boots.push(L2Boot {
                    init: Some(l.clone()),
                    ..L2Boot::default()
                });
                in_command = false;
            } else if is_marker(&l.text, "L2-BEGIN") {
                if let Some(b) = boots.last_mut() {
                    b.began = true;
                    in_command = true;
                }
            } else if let Some(rc) = after_marker(&l.text, "L2-END rc=") {
                if let Some(b) = boots.last_mut() {
                    b.rc = rc.trim().parse().ok();
                }
                in_command = false;
            } else if in_command && !is_l1_line(&l.text) {
                if let Some(b) = boots.last_mut() {
                    b.output.push(l.clone());
                }
            }
        }
        boots
    }

    /// How many times L2 booted (reached its /init).
    pub fn l2_boot_count(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| is_marker(&l.text, "L2-INIT"))
            .count()
    }

    /// petrel's stderr lines.
    pub fn petrel_stderr(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| l.text.strip_prefix("PETREL-STDERR: "))
            .map(str::to_string)
            .collect()
    }

    /// L1's kernel messages of level warning or worse (printed after petrel exits).
    pub fn l1_dmesg(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| l.text.strip_prefix("L1-DMESG: "))
            .map(str::to_string)
            .collect()
    }

    /// The first line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.starts_with(prefix))
    }

    /// Every line starting with `prefix`.
    pub fn lines_with(&self, prefix: &str) -> Vec<&Line> {
        self.lines
            .iter()
            .filter(|l| l.text.starts_with(prefix))
            .collect()
    }

    /// The whole console, one line each.
    pub fn console(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The console with arrival times, and L0's status and stderr: for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::from("console (seconds since L0 started):\n");
        for l in &self.lines {
            s.push_str(&format!("{:7.2} {}\n", l.at.as_secs_f64(), l.text));
        }
        s.push_str(&format!(
            "L0 status: {:?}\nL0 stderr:\n{}",
            self.l0_status, self.l0_stderr
        ));
        s
    }

    /// Asserts the run ended as a clean one does: petrel exited with `status`, L1 powered
    /// off (L0 exit 0), and petrel's stderr has no panic.
    pub fn assert_petrel_exit(&self, status: i32) {
        assert_eq!(
            self.petrel_exit(),
            Some(status),
            "petrel's exit status\n{}",
            self.dump()
        );
        assert_eq!(
            self.l0_status.and_then(|s| s.code()),
            Some(0),
            "L0 did not end with L1's poweroff\n{}",
            self.dump()
        );
        let stderr = self.petrel_stderr().join("\n");
        assert!(
            !stderr.contains("panicked"),
            "petrel panicked:\n{stderr}\n{}",
            self.dump()
        );
    }
}

/// Text of a console line: invalid UTF-8 replaced, ANSI escape sequences (SeaBIOS clears the
/// screen) and control characters removed, line end dropped.
fn sanitize(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: parameters and intermediates up to a final byte in @..~; any other
                // escape is two characters (ESC c, ...).
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A cpio archive in the "newc" format the kernel's initramfs unpacker reads.
#[derive(Default)]
struct Newc {
    data: Vec<u8>,
    dirs: Vec<String>,
    ino: u32,
}

impl Newc {
    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            body.len(),
            0, // dev major
            0, // dev minor
            0, // rdev major
            0, // rdev minor
            name.len() + 1,
            0, // check
        );
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad(4);
        self.data.extend_from_slice(body);
        self.pad(4);
    }

    fn pad(&mut self, align: usize) {
        let len = self.data.len();
        self.data.resize(len.next_multiple_of(align), 0);
    }

    /// Adds a regular file, after entries for its parent directories.
    fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        let mut parent = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.dirs.contains(&parent) {
                self.dirs.push(parent.clone());
                let dir = parent.clone();
                self.entry(&dir, 0o040_755, &[]);
            }
        }
        self.entry(name, 0o100_000 | perm, body);
    }

    /// The archive with its trailer, padded to 512 bytes.
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.pad(512);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn sanitize_drops_escapes_and_line_ends() {
        assert_eq!(sanitize(b"\x1bc\x1b[?7l\x1b[2JL1-INIT\r\n"), "L1-INIT");
        assert_eq!(sanitize(b"a\tb\r\n"), "a\tb");
    }

    #[test]
    fn newc_has_directories_before_files_and_a_padded_trailer() {
        let mut c = Newc::default();
        c.file("lib/x/libc.so.6", 0o755, b"abc");
        c.file("lib/y", 0o644, b"");
        let data = c.finish();
        assert_eq!(data.len() % 512, 0);
        let text = String::from_utf8_lossy(&data);
        let names: Vec<&str> = [
            "lib\0",
            "lib/x\0",
            "lib/x/libc.so.6\0",
            "lib/y\0",
            "TRAILER!!!\0",
        ]
        .into_iter()
        .collect();
        let mut pos = 0;
        for n in names {
            let at = text[pos..]
                .find(n)
                .unwrap_or_else(|| panic!("{n:?} missing"))
                + pos;
            pos = at + n.len();
        }
        assert!(text.starts_with("070701"));
    }

    #[test]
    fn transcript_splits_l2_boots() {
        let line = |t: &str| Line {
            at: Duration::ZERO,
            wall: UNIX_EPOCH,
            text: t.to_string(),
        };
        let t = Transcript {
            lines: [
                "L1-INIT",
                "Booting from ROM..L2-INIT",
                "L2-BEGIN",
                "hello",
                "PETREL-STDERR: x",
                "L2-END rc=3",
                "L2-INIT",
                "L2-BEGIN",
                "again",
                "L1-PETREL-EXIT 0",
            ]
            .into_iter()
            .map(line)
            .collect(),
            l0_status: None,
            l0_stderr: String::new(),
            elapsed: Duration::ZERO,
        };
        let boots = t.l2_boots();
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[0].text(), "hello");
        assert_eq!(boots[0].rc, Some(3));
        assert_eq!(boots[1].text(), "again");
        assert_eq!(boots[1].rc, None);
        assert_eq!(t.petrel_exit(), Some(0));
        assert_eq!(t.petrel_stderr(), vec!["x".to_string()]);
    }
}
