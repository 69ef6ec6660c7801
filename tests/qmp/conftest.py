"""Fixtures for QMP tests: a petrel process booting the test guest, its serial console
captured line by line, QMP sockets in a private directory, and cleanup of all of it."""

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PETREL = os.environ.get("PETREL_BIN", os.path.join(ROOT, "target", "debug", "petrel"))
KERNEL = os.path.join(ROOT, "resources", "out", "petrel-guest.elf")
TIMEOUT = 60


class Petrel:
    """A petrel process: serial console on stdout, QMP monitors as asked."""

    def __init__(self, tmpdir, args, append="petrel.test=idle", pass_fds=()):
        self.tmpdir = tmpdir
        cmd = [PETREL, "-kernel", KERNEL, "-nodefaults", "-serial", "stdio",
               "-display", "none", "-m", "128M", "-append", append] + list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=pass_fds)
        self.lines = []
        self.cond = threading.Condition()
        self.stderr = b""
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.readers:
            t.start()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def _read_stderr(self):
        # Line by line, so that a timeout message can show what petrel said so far.
        for raw in self.proc.stderr:
            with self.cond:
                self.stderr += raw

    def console(self):
        with self.cond:
            return "\n".join(l for l in self.lines if l is not None)

    def wait_line(self, prefix, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for l in self.lines:
                    if l is not None and l.startswith(prefix):
                        return l
                if None in self.lines:
                    raise AssertionError(f"petrel ended before '{prefix}':\n{self.console()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for '{prefix}':\n{self.console()}"
                                         f"\nstderr so far: {self.stderr!r}")
                self.cond.wait(left)

    def wait_count(self, prefix, n, timeout=TIMEOUT):
        """Waits until `n` lines start with `prefix`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if l is not None and l.startswith(prefix)) < n:
                if None in self.lines:
                    raise AssertionError(f"petrel ended before {n}x '{prefix}':\n{self.console()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {n}x '{prefix}':\n{self.console()}")
                self.cond.wait(left)

    def count(self, prefix):
        with self.cond:
            return sum(1 for l in self.lines if l is not None and l.startswith(prefix))

    def _join_readers(self):
        # Once the process is gone its pipes reach EOF; wait for the readers so that
        # `stderr` and the console hold everything it wrote.
        for t in self.readers:
            t.join(TIMEOUT)

    def wait_exit(self, timeout=TIMEOUT):
        try:
            rc = self.proc.wait(timeout)
            self._join_readers()
            return rc
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"petrel did not exit:\n{self.console()}")

    def sock(self, name):
        return os.path.join(self.tmpdir, name)

    def wait_socket(self, name, timeout=TIMEOUT):
        path = self.sock(name)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.proc.poll() is not None:
                self._join_readers()
                raise AssertionError(f"petrel exited {self.proc.returncode}: {self.stderr!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never appeared")
            time.sleep(0.01)
        return path

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join_readers()


@pytest.fixture
def tiny_fs():
    """A 4 MiB tmpfs, so that writes run out of space."""
    d = tempfile.mkdtemp(prefix="pfull")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d], check=True)
    yield d
    subprocess.run(["umount", "-l", d], check=False)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmpdir_short():
    # Unix socket paths are limited to 108 bytes: keep them short.
    d = tempfile.mkdtemp(prefix="pq")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def petrel(tmpdir_short):
    started = []

    def start(args=(), append="petrel.test=idle", pass_fds=()):
        p = Petrel(tmpdir_short, args, append, pass_fds)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


async def close_after_exit(qmp):
    """Disconnects a client whose VM is shutting down: petrel closes its monitors when it
    exits after SHUTDOWN, as QEMU does, so the peer may already be gone."""
    try:
        await qmp.disconnect()
    except (EOFError, ConnectionResetError, BrokenPipeError):
        pass


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def connect(path, name="petrel-test"):
    """A negotiated QMP client on the socket at `path`."""
    from qemu.qmp import QMPClient

    qmp = QMPClient(name)
    await qmp.connect(path)
    return qmp


def skip_or_fail(why):
    """Skips a test that cannot run here, or fails it where PETREL_REQUIRE_ALL is set
    (tests/run.sh, so CI, sets it): there every test must run."""
    if os.environ.get("PETREL_REQUIRE_ALL"):
        pytest.fail(f"cannot run: {why} (PETREL_REQUIRE_ALL is set)")
    pytest.skip(why)


async def next_event(qmp, name):
    """The next event called `name`, skipping others."""
    while True:
        ev = await qmp.events.get()
        if ev["event"] == name:
            return ev


async def error_of(qmp, cmd, **args):
    """(class, desc) of the error `cmd` fails with; fails the test if it succeeds."""
    from qemu.qmp import ExecuteError

    with pytest.raises(ExecuteError) as e:
        await qmp.execute(cmd, args)
    return e.value.error_class, e.value.error.error.desc
