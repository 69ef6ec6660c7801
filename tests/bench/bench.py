#!/usr/bin/env python3
"""Petrel benchmarks, with QEMU measured in the same run on the same guest.

Measures, for each VMM:
  - start to first marker: process start until the guest prints its first serial line
    ("petrel-guest: hello"), tiny kernel, 1 vCPU, 256 MiB;
  - memory overhead: resident memory of the VMM process minus the resident part of the guest
    RAM mapping, sampled while the guest runs its I/O loop after booting, plus peak RSS
    (VmHWM);
  - port-I/O exits per second: the guest's loop of `outb` to port 0x80 (each one a VM exit to
    the VMM), timed between the "ioloop: start" and "ioloop: end" lines;
  - QMP round trips: `query-status` calls per second and latency on a unix socket, one call at
    a time, by the qmp-rtt client (tests/src/bin/qmp-rtt.rs) against a VM started with -S;
  - virtio-blk: the guest's blkbench scenario (sequential 64 KiB reads at queue depth 4, random
    4 KiB reads at queue depth 32) on a 256 MiB raw and qcow2 image (fully allocated, in the host
    page cache), with `-device virtio-blk-pci`; the limit is the host reading the same file with
    the same pattern (one pread per block, one thread);
  - virtio-net: the guest's netblast scenario (UDP frames of 1514 and 60 bytes as fast as the
    guest can post them) with `-device virtio-net-pci`, over a tap in a network namespace the
    bench creates (root; the VMM and the receiver run inside it) and over user networking (slirp)
    to 10.0.2.2:PORT, a host UDP socket on 127.0.0.1:PORT; the host receiver is
    resources/guest/net-host.py udp-count, whose count of datagrams and bytes gives the rates.
Prints a markdown report; --write updates docs/benchmarks.md. petrel and qmp-rtt are taken
from $CARGO_TARGET_DIR/release/ (target/release/ when it is not set).
"""

import argparse
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KERNEL = os.path.join(ROOT, "resources", "out", "petrel-guest.elf")
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
PETREL = os.path.join(TARGET, "release", "petrel")
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
RAM_MIB = 256
QMP_RTT = os.path.join(TARGET, "release", "qmp-rtt")
NET_HOST = os.path.join(ROOT, "resources", "guest", "net-host.py")


def petrel_cmd(append):
    return [PETREL, "-kernel", KERNEL, "-m", f"{RAM_MIB}M", "-smp", "1", "-nodefaults",
            "-serial", "stdio", "-display", "none", "-append", append]


def qemu_cmd(append, pcie=False):
    # microvm boots PVH kernels directly with no firmware; -cpu host needs arch-capabilities
    # masked on this KVM. Same guest, same RAM, same vCPU count.
    return [QEMU, "-accel", "kvm", "-cpu", "host,-arch-capabilities",
            "-M", "microvm,rtc=on,acpi=on" + (",pcie=on" if pcie else ""), "-m", f"{RAM_MIB}M", "-smp", "1", "-nodefaults",
            "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", KERNEL, "-append", append]


class Run:
    """A VMM process whose stdout lines are timestamped as they arrive."""

    def __init__(self, cmd):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""
        self.lines = []

    def wait_line(self, prefix, timeout=60.0):
        deadline = time.monotonic() + timeout
        for t, line in self.lines:
            if line.startswith(prefix):
                return t
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            now = time.monotonic() - self.t0
            if not chunk:
                break
            self.buf += chunk
            # Every whole line of the chunk, so that lines after the one looked for are kept.
            found = None
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                self.lines.append((now, line))
                if found is None and line.startswith(prefix):
                    found = now
            if found is not None:
                return found
        raise RuntimeError(f"no '{prefix}' line from {self.proc.args[0]}: "
                           f"{[l for _, l in self.lines][-5:]}")

    def finish(self, timeout=60.0):
        """Waits for exit; kills the VMM if it overstays."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()
        self.finish()


def peak_rss_kib(pid):
    """VmHWM: the process's own peak RSS. (rusage's ru_maxrss would include the memory of the
    Python process the VMM was forked from.)"""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def rss_split(pid, guest_bytes):
    """(total RSS KiB, guest-RAM RSS KiB): the guest RAM mapping is the anonymous mapping at
    least as large as guest RAM; everything else is the VMM's own memory."""
    total = guest = 0
    size = rss = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                size = int(m.group(2), 16) - int(m.group(1), 16)
                continue
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
                total += rss
                if size >= guest_bytes:
                    guest += rss
    return total, guest


def start_to_marker(cmd_fn, runs):
    times = []
    for _ in range(runs):
        r = Run(cmd_fn("petrel.test=boot"))
        times.append(r.wait_line("petrel-guest: hello") * 1000)
        r.finish()
    return statistics.median(times), min(times), max(times)


def memory(cmd_fn, runs):
    overheads, peaks, totals = [], [], []
    for _ in range(runs):
        r = Run(cmd_fn("petrel.test=ioloop petrel.iters=200000000"))
        r.wait_line("ioloop: start")
        time.sleep(0.3)
        total, guest = rss_split(r.proc.pid, RAM_MIB << 20)
        peak = peak_rss_kib(r.proc.pid)
        r.kill()
        overheads.append((total - guest) / 1024)
        totals.append(total / 1024)
        peaks.append(peak / 1024)
    return statistics.median(overheads), statistics.median(totals), statistics.median(peaks)


def io_exits(cmd_fn, runs, iters):
    rates = []
    for _ in range(runs):
        r = Run(cmd_fn(f"petrel.test=ioloop petrel.iters={iters}"))
        t0 = r.wait_line("ioloop: start")
        t1 = r.wait_line("ioloop: end", timeout=300)
        r.finish()
        rates.append(iters / (t1 - t0))
    return statistics.median(rates)


def qmp_round_trips(cmd_fn, runs, calls):
    import json
    import tempfile
    results = []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="pb")
        sock = os.path.join(d, "q.sock")
        cmd = cmd_fn("petrel.test=boot") + ["-S", "-qmp", f"unix:{sock},server=on,wait=off"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]}: no QMP socket")
                time.sleep(0.01)
            out = subprocess.run([QMP_RTT, sock, str(calls)], capture_output=True, text=True,
                                 check=True).stdout
            results.append(json.loads(out))
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(d, ignore_errors=True)
    pick = lambda key: statistics.median(r[key] for r in results)
    return pick("calls_per_sec"), pick("median_us"), pick("p99_us")


def base_report(args):
    """The start-up, memory, port-I/O and QMP table."""
    results = {}
    for name, fn in (("petrel", petrel_cmd), ("qemu", qemu_cmd)):
        results[name] = {
            "start": start_to_marker(fn, args.runs),
            "mem": memory(fn, max(3, args.runs // 3)),
            "io": io_exits(fn, max(3, args.runs // 3), args.io_iters),
            "qmp": qmp_round_trips(fn, 3, args.qmp_calls),
        }
    p, q = results["petrel"], results["qemu"]
    return f"""
Start-up, memory, exits and QMP (QEMU `-M microvm`): medians of {args.runs} runs
(memory and I/O: {max(3, args.runs // 3)} runs).

| metric | petrel | QEMU microvm | petrel / QEMU | target |
|---|---|---|---|---|
| start to first marker (ms) | {p['start'][0]:.1f} (min {p['start'][1]:.1f}, max {p['start'][2]:.1f}) | {q['start'][0]:.1f} (min {q['start'][1]:.1f}, max {q['start'][2]:.1f}) | {p['start'][0] / q['start'][0]:.2f} | ≤ 0.5 |
| VMM memory overhead: RSS minus guest RAM resident (MiB) | {p['mem'][0]:.1f} | {q['mem'][0]:.1f} | {p['mem'][0] / q['mem'][0]:.2f} | petrel ≤ 5 MiB |
| total RSS while the guest runs its loop (MiB) | {p['mem'][1]:.1f} | {q['mem'][1]:.1f} | {p['mem'][1] / q['mem'][1]:.2f} | |
| peak RSS, VmHWM (MiB) | {p['mem'][2]:.1f} | {q['mem'][2]:.1f} | {p['mem'][2] / q['mem'][2]:.2f} | |
| port-I/O exits per second ({args.io_iters} `outb`) | {p['io']:.0f} | {q['io']:.0f} | {p['io'] / q['io']:.2f} | ≥ 1.0 |
| QMP `query-status` calls per second ({args.qmp_calls} calls, unix socket) | {p['qmp'][0]:.0f} | {q['qmp'][0]:.0f} | {p['qmp'][0] / q['qmp'][0]:.2f} | ≥ 10 |
| QMP latency, median (µs) | {p['qmp'][1]:.1f} | {q['qmp'][1]:.1f} | {p['qmp'][1] / q['qmp'][1]:.2f} | |
| QMP latency, p99 (µs) | {p['qmp'][2]:.1f} | {q['qmp'][2]:.1f} | {p['qmp'][2] / q['qmp'][2]:.2f} | petrel < 100 |
"""


BLK_MODES = {
    # name: (petrel.blk.bench mode, block size, queue depth)
    "seqread": ("seqread", 65536, 4),
    "randread": ("randread", 4096, 32),
}


def blk_images(tmp):
    """A fully allocated 256 MiB raw and qcow2 image, read once so both sit in the page cache."""
    images = {}
    for fmt in ("raw", "qcow2"):
        path = os.path.join(tmp, f"disk.{fmt}")
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, "-o", "preallocation=full", path,
                        "256M"], check=True)
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
        images[fmt] = path
    return images


def host_read_limit(path, mode):
    """Bytes per second and reads per second of the host reading `path` as the guest does."""
    _, bs, _ = BLK_MODES[mode]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = size // bs
        n = blocks if mode == "seqread" else 100000
        lcg = 1
        t0 = time.monotonic()
        for i in range(n):
            if mode == "seqread":
                block = i
            else:
                lcg = (lcg * 6364136223846793005 + 1442695040888963407) & (2 ** 64 - 1)
                block = (lcg >> 33) % blocks
            os.pread(fd, bs, block * bs)
        dt = time.monotonic() - t0
    finally:
        os.close(fd)
    return n * bs / dt, n / dt


def blk_run(cmd, image, fmt, mode):
    """(IOPS, bytes per second) the guest measured for one blkbench run."""
    bench, bs, qd = BLK_MODES[mode]
    append = f"petrel.test=blkbench petrel.blk.bench={bench} petrel.blk.bs={bs} petrel.blk.qd={qd}"
    args = ["-drive", f"file={image},format={fmt},if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,serial=bench"]
    r = Run(cmd(append) + args)
    r.wait_line("blkbench: iops=", timeout=300)
    r.finish()
    line = [l for _, l in r.lines if l.startswith("blkbench: iops=")][0]
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return int(fields["iops"]), int(fields["bytes_per_s"])


def blk(runs):
    """Median guest IOPS and bytes/s per (format, mode, VMM), runs of the two VMMs interleaved
    so both see the same machine; plus the host's own read rate of each file."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="petrel-bench-blk")
    try:
        images = blk_images(tmp)
        out = {}
        for fmt, image in images.items():
            for mode in BLK_MODES:
                samples = {"petrel": [], "qemu": []}
                for _ in range(runs):
                    samples["petrel"].append(blk_run(petrel_cmd, image, fmt, mode))
                    samples["qemu"].append(blk_run(lambda a: qemu_cmd(a, pcie=True), image, fmt,
                                                   mode))
                med = {vmm: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
                       for vmm, v in samples.items()}
                med["host"] = host_read_limit(image, mode)[::-1]
                out[(fmt, mode)] = med
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def blk_report(results, runs):
    rows = []
    for (fmt, mode), m in results.items():
        _, bs, qd = BLK_MODES[mode]
        what = f"{fmt}, {mode} {bs // 1024} KiB, qd {qd}"
        p, q, h = m["petrel"], m["qemu"], m["host"]
        if mode == "seqread":
            rows.append(f"| {what}: MB/s | {p[1] / 1e6:.0f} | {q[1] / 1e6:.0f} | "
                        f"{p[1] / q[1]:.2f} | {h[1] / 1e6:.0f} | ≥ 1.0 (goal 1.5) |")
        else:
            rows.append(f"| {what}: IOPS | {p[0]:.0f} | {q[0]:.0f} | {p[0] / q[0]:.2f} | "
                        f"{h[0]:.0f} | ≥ 1.0 (goal 1.5) |")
    return f"""
virtio-blk (`-device virtio-blk-pci`, QEMU `-M microvm,pcie=on`), the guest's `blkbench` figures,
medians of {runs} runs per VMM taken alternately; "host" is one thread of the host reading the same
file with the same pattern through the page cache:

| workload | petrel | QEMU | petrel / QEMU | host | target |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


NET_SIZES = (1514, 60)
# The tap's network: the namespace's end and the guest's static address.
NET_TAP_HOST = "10.9.0.1"
NET_TAP_GUEST = "10.9.0.2"
NET_TAP_NETDEV = "tap,id=n0,ifname=ptap0,script=no,downscript=no"


class NetNamespace:
    """A network namespace of the bench's own with a persistent tap `ptap0` (10.9.0.1/24, up)
    that each VMM opens in turn; deleted on exit."""

    def __init__(self):
        self.name = f"petrel-bench-{os.getpid()}"

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            for cmd in (["link", "set", "lo", "up"],
                        ["tuntap", "add", "dev", "ptap0", "mode", "tap"],
                        ["addr", "add", f"{NET_TAP_HOST}/24", "dev", "ptap0"],
                        ["link", "set", "ptap0", "up"]):
                subprocess.run(["ip", "-n", self.name] + cmd, check=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def exec(self):
        return ["ip", "netns", "exec", self.name]


def tap_available():
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun") and shutil.which("ip")


def free_udp_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def net_run(cmd, backend, size, frames, ns):
    """One netblast run: the guest's pps and what the host receiver counted."""
    port = free_udp_port()
    prefix = ns.exec() if backend == "tap" else []
    receiver = subprocess.Popen(prefix + [sys.executable, NET_HOST, "udp-count", str(port), "1.0"]
                                + (["--any"] if backend == "tap" else []),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    vmm = None
    try:
        ready, _, _ = select.select([receiver.stdout], [], [], 10)
        if not ready or receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("net-host.py udp-count did not get ready")
        if backend == "tap":
            peer, netdev, extra = NET_TAP_HOST, NET_TAP_NETDEV, f" petrel.net.ip={NET_TAP_GUEST}"
        else:
            peer, netdev, extra = "10.0.2.2", "user,id=n0", ""
        append = (f"petrel.test=netblast petrel.net.peer={peer}:{port} petrel.net.frames={frames} "
                  f"petrel.net.size={size}{extra}")
        vmm = Run(prefix + cmd(append) + ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"])
        vmm.wait_line("netblast: pps=", timeout=120)
        vmm.wait_line("status: ", timeout=30)
        vmm.finish()
        out, _ = receiver.communicate(timeout=130)
    finally:
        if vmm is not None:
            vmm.kill()
        if receiver.returncode is None:
            receiver.kill()
            receiver.wait()
    lines = [l for _, l in vmm.lines]
    pps = [l for l in lines if l.startswith("netblast: pps=")][0]
    guest = dict(kv.split("=") for kv in pps.split()[1:])
    status = [l for l in lines if l.startswith("status: ")][0]
    host = dict(kv.split("=") for kv in out.split())
    n, secs = int(host["datagrams"]), float(host["secs"])
    if (status != "status: 0" or n == 0 or int(host["bad"]) != 0 or int(host["unique"]) != n
            or int(host["bytes"]) != n * (size - 42)):
        raise RuntimeError(f"{cmd('')[0]} {backend} {size}: {status}, host: {out.strip()}")
    return {
        "guest_pps": int(guest["pps"]),
        "host_fps": n / secs if secs > 0 else 0.0,
        "host_bps": int(host["bytes"]) / secs if secs > 0 else 0.0,
        "delivered": n / frames,
    }


def net(runs, frames):
    """Medians per (backend, size, VMM) of `runs` netblast runs, the two VMMs alternating (and
    which goes first alternating too) so both see the same machine."""
    import contextlib
    backends = ["tap", "user"] if tap_available() else ["user"]
    vmms = {"petrel": petrel_cmd, "qemu": lambda a: qemu_cmd(a, pcie=True)}
    out = {}
    with (NetNamespace() if "tap" in backends else contextlib.nullcontext()) as ns:
        for backend in backends:
            for size in NET_SIZES:
                samples = {"petrel": [], "qemu": []}
                for i in range(runs):
                    for name in (("petrel", "qemu") if i % 2 == 0 else ("qemu", "petrel")):
                        samples[name].append(net_run(vmms[name], backend, size, frames, ns))
                out[(backend, size)] = {
                    vmm: {k: statistics.median(s[k] for s in v) for k in v[0]} | {
                        "fps_min": min(s["host_fps"] for s in v),
                        "fps_max": max(s["host_fps"] for s in v),
                        "delivered_min": min(s["delivered"] for s in v)}
                    for vmm, v in samples.items()}
    return out, backends


def net_report(results, runs, frames):
    results, backends = results
    rows = []
    for (backend, size), m in results.items():
        p, q = m["petrel"], m["qemu"]
        what = f"{backend}, {size}-byte frames"
        rows.append(f"| {what}: host frames/s | {p['host_fps']:.0f} ({p['fps_min']:.0f}-"
                    f"{p['fps_max']:.0f}) | {q['host_fps']:.0f} ({q['fps_min']:.0f}-"
                    f"{q['fps_max']:.0f}) | {p['host_fps'] / q['host_fps']:.2f} | ≥ 1.0 |")
        rows.append(f"| {what}: host MB/s (UDP payload) | {p['host_bps'] / 1e6:.1f} | "
                    f"{q['host_bps'] / 1e6:.1f} | {p['host_bps'] / q['host_bps']:.2f} | ≥ 1.0 |")
        rows.append(f"| {what}: guest pps | {p['guest_pps']:.0f} | {q['guest_pps']:.0f} | "
                    f"{p['guest_pps'] / q['guest_pps']:.2f} | ≥ 1.0 |")
        rows.append(f"| {what}: frames delivered, % (lowest) | {100 * p['delivered']:.1f} "
                    f"({100 * p['delivered_min']:.1f}) | {100 * q['delivered']:.1f} "
                    f"({100 * q['delivered_min']:.1f}) | | |")
    skipped = "" if "tap" in backends else \
        "\nThe tap rows need root, /dev/net/tun and `ip`: skipped in this run.\n"
    return f"""
virtio-net (`-device virtio-net-pci`, QEMU `-M microvm,pcie=on`), the guest's `netblast`
({frames} UDP frames per run, sent as fast as the guest posts them), medians of {runs} runs per
VMM taken alternately (host frames/s: the median, then the range). tap: `-netdev
{NET_TAP_NETDEV}` in a network namespace of the bench's own, the receiver on
{NET_TAP_HOST} in it; user: `-netdev user,id=n0`, the guest sends to 10.0.2.2:PORT, the receiver
is a UDP socket on 127.0.0.1:PORT. "host" rates are what the receiver
(`resources/guest/net-host.py udp-count`, one Python thread) counted between its first and last
datagram; "guest pps" is the guest's own figure (frames posted and completed per second);
"delivered" is the share of the frames the receiver got (the others were dropped on the way:
by the VMM's backend, or by the host's socket or backlog limits).
{skipped}
| workload | petrel | QEMU | petrel / QEMU | target |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


DUMP_RAM_MIB = 2048


def qmp_session(sock_path, deadline):
    """A connected, negotiated QMP stream on `sock_path` (a file object), or an error."""
    import json
    import socket
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    f = s.makefile("rw")
    json.loads(f.readline())

    def call(cmd, **args):
        f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(f"{cmd}: {msg['error']}")
    call("qmp_capabilities")
    return call


def dump_run(cmd_fn, tmp):
    """Seconds for a (non-detached) dump-guest-memory of a guest whose RAM is all touched."""
    sock = os.path.join(tmp, "q.sock")
    core = os.path.join(tmp, "vmcore")
    append = "petrel.test=memfill petrel.memfill.touch=1"
    cmd = cmd_fn(append)
    cmd[cmd.index("-m") + 1] = f"{DUMP_RAM_MIB}M"
    r = Run(cmd + ["-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        r.wait_line("memfill: addr=", timeout=300)
        call = qmp_session(sock, time.monotonic() + 30)
        t0 = time.monotonic()
        call("dump-guest-memory", paging=False, protocol=f"file:{core}")
        secs = time.monotonic() - t0
        size = os.path.getsize(core)
    finally:
        r.kill()
        for path in (sock, core):
            if os.path.exists(path):
                os.unlink(path)
    return secs, size


def dump(runs):
    """Median dump seconds and bytes per VMM, runs interleaved."""
    import tempfile
    # On disk next to the build, not in a tmpfs that would hold the cores in RAM.
    os.makedirs(TARGET, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-dump", dir=TARGET)
    try:
        samples = {"petrel": [], "qemu": []}
        for _ in range(runs):
            samples["petrel"].append(dump_run(petrel_cmd, tmp))
            samples["qemu"].append(dump_run(qemu_cmd, tmp))
        return {vmm: (statistics.median(s for s, _ in v), statistics.median(b for _, b in v))
                for vmm, v in samples.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dump_report(results, runs):
    p, q = results["petrel"], results["qemu"]
    gbs = lambda r: r[1] / r[0] / 1e9
    return f"""
dump-guest-memory (ELF, `paging=false`, `protocol=file:` on disk) of a {DUMP_RAM_MIB} MiB guest whose
every RAM page the guest wrote first (`petrel.test=memfill petrel.memfill.touch=1`), timed from the
command to its answer; medians of {runs} runs per VMM taken alternately. QEMU stops the guest for
the whole dump and writes through the page cache; petrel holds the vCPUs only while it forks its
writer, which writes guest memory to the file with `O_DIRECT`.

| metric | petrel | QEMU microvm | petrel / QEMU | target |
|---|---|---|---|---|
| seconds | {p[0]:.2f} | {q[0]:.2f} | {p[0] / q[0]:.2f} | |
| GB/s (vmcore bytes / seconds) | {gbs(p):.2f} | {gbs(q):.2f} | {gbs(p) / gbs(q):.2f} | ≥ 1.5 |
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--io-iters", type=int, default=200000)
    ap.add_argument("--qmp-calls", type=int, default=20000)
    ap.add_argument("--blk-runs", type=int, default=5)
    ap.add_argument("--net-runs", type=int, default=7)
    ap.add_argument("--net-frames", type=int, default=100000)
    ap.add_argument("--dump-runs", type=int, default=5)
    ap.add_argument("--only", choices=["blk", "net", "dump"], help="run only this group")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    groups = [args.only] if args.only else ["base", "blk", "net", "dump"]
    needed = [PETREL, KERNEL, QEMU] + ([QMP_RTT] if "base" in groups else []) + \
        ([NET_HOST] if "net" in groups else [])
    for path in needed:
        if not os.path.exists(path):
            sys.exit(f"bench: missing {path}")

    if args.write and args.only:
        sys.exit("bench: --write records a whole run; drop --only")
    qemu_version = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    report = f"""## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}

Machine: {os.cpu_count()} CPUs, KVM-PVM; {qemu_version}. Guest: the project's test
kernel (`resources/out/petrel-guest.elf`), 1 vCPU, {RAM_MIB} MiB.
"""
    if "base" in groups:
        report += base_report(args)
    if "blk" in groups:
        report += blk_report(blk(args.blk_runs), args.blk_runs)
    if "net" in groups:
        report += net_report(net(args.net_runs, args.net_frames), args.net_runs, args.net_frames)
    if "dump" in groups:
        report += dump_report(dump(args.dump_runs), args.dump_runs)
    print(report)
    if args.write:
        doc = os.path.join(ROOT, "docs", "benchmarks.md")
        header = open(doc).read().split("\n## Run of ")[0] if os.path.exists(doc) else ""
        with open(doc, "w") as f:
            f.write(header.rstrip("\n") + "\n\n" + report)


if __name__ == "__main__":
    main()
