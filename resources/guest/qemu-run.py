#!/usr/bin/env python3
"""Run QEMU with the test guest, timestamp its serial lines, drive QMP.

    qemu-run.py --out FILE [--machine microvm|q35 --append CMDLINE] [--qmp SOCK]
                [--qmp-log FILE] [--step STEP]... [--span START END] [--timeout S]
                -- QEMU ARGS...

With --machine the command starts with the guest's usual QEMU line (KVM,
256 MiB, serial on stdio, no reboot, the guest ELF from build-guest.sh,
-append CMDLINE, and -qmp SOCK when --qmp is given), and QEMU ARGS are added
to it (e.g. -drive and -device); without it QEMU ARGS are the whole command.
The serial output (QEMU's stdout and stderr) goes to FILE as it arrives.
Steps run in order while QEMU runs:

    wait:REGEX      until a serial line matches REGEX (re.search)
    sleep:SECONDS   pause
    qmp:JSON        send one QMP command (QEMU needs -qmp unix:SOCK,server=on,wait=off
                    with SOCK given by --qmp); waits for its reply
    status:STATE    query-status until it reports STATE (e.g. paused, running)
    exec:COMMAND    run a shell command (e.g. a host TCP client); fails unless it exits 0

--qmp-log FILE appends every QMP reply and event the steps read to FILE, one
JSON object per line (events are read while a later command waits for its
reply: QEMU with -S and a first step qmp:{"execute":"cont"} sees them all).

--span START END prints `host_us=<n>` on stdout: host microseconds between
the first line matching START and the first later line matching END (the
guest's blkbench start and done lines). Exits with QEMU's status, 124 after
--timeout seconds (QEMU killed), 125 when a step failed.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time


QMP_LOG = None


def qmp_log(msg):
    if QMP_LOG:
        with open(QMP_LOG, "a") as f:
            f.write(json.dumps(msg) + "\n")


def qmp_connect(path, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting
    qmp_send(f, {"execute": "qmp_capabilities"})
    return s, f


def qmp_send(f, cmd):
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    while True:
        line = f.readline()
        if not line:
            raise OSError("QMP closed")
        msg = json.loads(line)
        qmp_log(msg)
        if "return" in msg or "error" in msg:
            if "error" in msg:
                raise OSError("QMP error: %s" % msg["error"])
            return msg


MACHINES = {
    "microvm": ["-M", "microvm,pcie=on,rtc=on,acpi=on"],
    "q35": ["-M", "q35"],
}


def guest_command(machine, cmdline, qmp):
    build = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build-guest.sh")
    elf = subprocess.run([build], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    cmd = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host,-arch-capabilities"] + MACHINES[machine] + [
        "-m", "256M", "-nodefaults", "-serial", "stdio", "-display", "none", "-no-reboot",
        "-kernel", elf, "-append", cmdline]
    if qmp:
        cmd += ["-qmp", "unix:%s,server=on,wait=off" % qmp]
    return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--qmp")
    ap.add_argument("--machine", choices=sorted(MACHINES))
    ap.add_argument("--append", default="")
    ap.add_argument("--step", action="append", default=[])
    ap.add_argument("--span", nargs=2)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--qmp-log")
    ap.add_argument("qemu", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    global QMP_LOG
    QMP_LOG = a.qmp_log
    cmd = a.qemu[1:] if a.qemu and a.qemu[0] == "--" else a.qemu
    if a.machine:
        if a.qmp and os.path.exists(a.qmp):
            os.unlink(a.qmp)
        cmd = guest_command(a.machine, a.append, a.qmp) + cmd

    lines = []                      # (host time, line)
    cond = threading.Condition()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + a.timeout

    def reader():
        with open(a.out, "wb") as out:
            for raw in proc.stdout:
                t = time.monotonic()
                out.write(raw)
                out.flush()
                with cond:
                    lines.append((t, raw.decode("utf-8", "replace").rstrip("\n")))
                    cond.notify_all()
        with cond:
            lines.append((None, None))  # EOF
            cond.notify_all()

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()

    step_failed = []

    def stepper():
        qmp = None
        seen = 0
        try:
            for step in a.step:
                kind, _, arg = step.partition(":")
                if kind == "wait":
                    pat = re.compile(arg)
                    with cond:
                        while True:
                            while seen < len(lines):
                                t, text = lines[seen]
                                seen += 1
                                if text is None:
                                    raise OSError("QEMU exited before /%s/" % arg)
                                if pat.search(text):
                                    break
                            else:
                                if not cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                                    raise OSError("timeout waiting for /%s/" % arg)
                                continue
                            break
                elif kind == "sleep":
                    time.sleep(float(arg))
                elif kind in ("qmp", "status"):
                    if qmp is None:
                        qmp = qmp_connect(a.qmp, deadline)
                    if kind == "qmp":
                        qmp_send(qmp[1], json.loads(arg))
                        continue
                    while qmp_send(qmp[1], {"execute": "query-status"})["return"]["status"] != arg:
                        if time.monotonic() > deadline:
                            raise OSError("VM never %s" % arg)
                        time.sleep(0.05)
                elif kind == "exec":
                    rc = subprocess.run(arg, shell=True, stdin=subprocess.DEVNULL).returncode
                    if rc:
                        raise OSError("exit status %d from %s" % (rc, arg))
                else:
                    raise OSError("unknown step " + step)
        except (OSError, ValueError) as e:
            step_failed.append(str(e))
            print("qemu-run.py: step failed: %s" % e, file=sys.stderr)
            proc.kill()

    st = threading.Thread(target=stepper, daemon=True)
    st.start()
    try:
        rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = 124
    rt.join(5)
    st.join(1)

    if a.span:
        start_re, end_re = re.compile(a.span[0]), re.compile(a.span[1])
        t0 = None
        for t, text in lines:
            if text is None:
                break
            if t0 is None and start_re.search(text):
                t0 = t
            elif t0 is not None and end_re.search(text):
                print("host_us=%d" % round((t - t0) * 1e6))
                break
    if step_failed and rc != 124:
        return 125
    return rc


if __name__ == "__main__":
    sys.exit(main())
