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
    the same pattern (one pread per block, one thread).
Prints a markdown report; --write updates docs/benchmarks.md.
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
PETREL = os.path.join(ROOT, "target", "release", "petrel")
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
RAM_MIB = 256
QMP_RTT = os.path.join(ROOT, "target", "release", "qmp-rtt")


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
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                self.lines.append((now, line))
                if line.startswith(prefix):
                    return now
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--io-iters", type=int, default=200000)
    ap.add_argument("--qmp-calls", type=int, default=20000)
    ap.add_argument("--blk-runs", type=int, default=5)
    ap.add_argument("--only", choices=["blk"], help="run only this group")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    for path in (PETREL, KERNEL, QEMU, QMP_RTT):
        if not os.path.exists(path):
            sys.exit(f"bench: missing {path}")

    if args.write and args.only:
        sys.exit("bench: --write records a whole run; drop --only")
    qemu_version = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    report = f"""## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}

Machine: {os.cpu_count()} CPUs, KVM-PVM; {qemu_version}. Guest: the project's test
kernel (`resources/out/petrel-guest.elf`), 1 vCPU, {RAM_MIB} MiB.
"""
    if not args.only:
        report += base_report(args)
    report += blk_report(blk(args.blk_runs), args.blk_runs)
    print(report)
    if args.write:
        doc = os.path.join(ROOT, "docs", "benchmarks.md")
        header = open(doc).read().split("\n## Run of ")[0] if os.path.exists(doc) else ""
        with open(doc, "w") as f:
            f.write(header.rstrip("\n") + "\n\n" + report)


if __name__ == "__main__":
    main()
