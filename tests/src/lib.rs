//! Integration-test harness for petrel: builds the test guest, starts petrel with the options a
//! test gives, captures the serial console line by line with timestamps, and cleans up every
//! process and temporary file it made.

pub mod nested;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default time a test waits for a guest.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs one of the repository's build scripts (a path relative to the workspace) and returns
/// what it printed on stdout, trimmed; panics with its whole output if it fails.
pub fn run_build_script(relative: &str) -> String {
    let script = workspace_root().join(relative);
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {relative}: {e}"));
    assert!(
        out.status.success(),
        "{relative} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds the test guest kernel once per test process and returns its path.
pub fn guest_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            run_build_script("resources/build-guest.sh");
            let path = workspace_root().join("resources/out/petrel-guest.elf");
            assert!(
                path.exists(),
                "build-guest.sh did not produce {}",
                path.display()
            );
            path
        })
        .clone()
}

/// A scratch directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("petrel-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[derive(Default)]
struct Console {
    lines: Vec<(Duration, String)>,
    closed: bool,
}

/// A running petrel process.
pub struct Petrel {
    child: Option<Child>,
    started: Instant,
    console: Arc<(Mutex<Console>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Builder for a petrel run.
pub struct PetrelBuilder {
    bin: PathBuf,
    args: Vec<String>,
    with_default_guest: bool,
    append: Option<String>,
    env: Vec<(String, String)>,
}

impl PetrelBuilder {
    /// A run of the `petrel` binary at `bin`, booting the test guest with its serial console on
    /// stdout unless `raw` is used.
    pub fn new(bin: &str) -> PetrelBuilder {
        PetrelBuilder {
            bin: PathBuf::from(bin),
            args: Vec::new(),
            with_default_guest: true,
            append: None,
            env: Vec::new(),
        }
    }

    /// Extra command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The guest kernel command line (`-append`).
    pub fn append(mut self, cmdline: &str) -> Self {
        self.append = Some(cmdline.to_string());
        self
    }

    /// Only the given arguments: no default kernel or serial options.
    pub fn raw(mut self) -> Self {
        self.with_default_guest = false;
        self
    }

    /// An environment variable for petrel.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts petrel.
    pub fn spawn(self) -> Petrel {
        let mut cmd = Command::new(&self.bin);
        if self.with_default_guest {
            cmd.arg("-kernel").arg(guest_kernel());
            cmd.args(["-nodefaults", "-serial", "stdio", "-display", "none"]);
        }
        if let Some(a) = &self.append {
            cmd.args(["-append", a]);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let c = console.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*c;
                let line = line.trim_end_matches('\r').to_string();
                m.lock().unwrap().lines.push((started.elapsed(), line));
                cv.notify_all();
            }
            let (m, cv) = &*c;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
        let e = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            e.lock().unwrap().push_str(&s);
        });
        Petrel {
            child: Some(child),
            started,
            console,
            stderr,
            status: None,
            readers: vec![stdout_reader, stderr_reader],
        }
    }
}

impl Petrel {
    /// Waits until a console line starts with `prefix`; returns the line and when it arrived
    /// (since spawn). Panics with the console so far on timeout or if petrel exits first.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> (String, Duration) {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut c = m.lock().unwrap();
        loop {
            if let Some((t, l)) = c.lines.iter().find(|(_, l)| l.starts_with(prefix)) {
                return (l.clone(), *t);
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                let why = if c.closed {
                    "petrel closed its console"
                } else {
                    "timed out"
                };
                let lines: Vec<String> = c.lines.iter().map(|(_, l)| l.clone()).collect();
                drop(c);
                panic!(
                    "{why} waiting for '{prefix}'.\nconsole:\n{}\nstderr:\n{}",
                    lines.join("\n"),
                    self.stderr()
                );
            }
            c = cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }

    /// Every console line with the given prefix, so far.
    pub fn lines_with(&self, prefix: &str) -> Vec<String> {
        let c = self.console.0.lock().unwrap();
        c.lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The whole console so far.
    pub fn console(&self) -> String {
        let c = self.console.0.lock().unwrap();
        c.lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// stderr so far (complete once the process exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits for petrel to exit; panics with the console on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("child present");
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.status = Some(s);
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "petrel did not exit within {timeout:?} ({:?} since start).\nconsole:\n{}\nstderr:\n{}",
                    self.started.elapsed(),
                    self.console(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether petrel is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for exit and asserts the exit code, showing the console otherwise.
    pub fn expect_exit_code(&mut self, code: i32) {
        let s = self.wait_exit(DEFAULT_TIMEOUT);
        assert_eq!(
            s.code(),
            Some(code),
            "unexpected exit status {s:?}\nconsole:\n{}\nstderr:\n{}",
            self.console(),
            self.stderr()
        );
        assert!(
            !self.stderr().contains("panicked"),
            "petrel panicked:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Petrel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.status.is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Parses `key=value` fields out of a console line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Parses a decimal or 0x-prefixed hexadecimal number.
pub fn number(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad hex '{s}'")),
        None => s.parse().unwrap_or_else(|_| panic!("bad number '{s}'")),
    }
}
