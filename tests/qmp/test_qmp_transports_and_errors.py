"""Monitor transports (unix, TCP, stdio, petrel as the client of a listening socket, an
inherited fd) and protocol errors over a raw socket, each answered with QEMU's class while the
connection keeps working."""

import asyncio
import json
import os
import socket
import subprocess
import time

from qemu.qmp import QMPClient

from conftest import KERNEL, PETREL, TIMEOUT, close_after_exit, run


class Raw:
    """A line-oriented raw QMP connection."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.f = sock.makefile("rwb", buffering=0)

    def send(self, data):
        self.f.write(data if isinstance(data, bytes) else data.encode())

    def recv(self):
        line = self.f.readline()
        assert line.endswith(b"\r\n"), line
        line.decode("ascii")  # ASCII only
        return json.loads(line)

    def reply(self):
        while True:
            msg = self.recv()
            if "event" not in msg:
                return msg

    def negotiate(self):
        greeting = self.recv()
        assert "QMP" in greeting
        self.send('{"execute": "qmp_capabilities"}')
        assert self.reply() == {"return": {}}
        return greeting


def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return Raw(s)


def test_protocol_errors_keep_the_connection(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-qmp", f"unix:{path},server=on,wait=off"])
    p.wait_socket("q.sock")
    c = unix(path)
    assert "QMP" in c.recv()
    # Before negotiation only qmp_capabilities exists.
    c.send('{"execute": "query-status", "id": "early"}')
    r = c.reply()
    assert r["error"]["class"] == "CommandNotFound" and r["id"] == "early"
    c.send('{"execute": "qmp_capabilities"}')
    assert c.reply() == {"return": {}}
    c.send('{"execute": "qmp_capabilities", "id": 2}')
    r = c.reply()
    assert r["error"]["class"] == "CommandNotFound" and r["id"] == 2
    cases = [
        (b'{"execute": }', None),
        (b'[1, 2, 3]', None),
        (b'"just a string"', None),
        (b'{"execute": "no-such-command", "id": [1]}', "CommandNotFound"),
        (b'{"execute": "cpu", "id": {"k": 1}}', "GenericError"),  # missing argument
        (b'{"execute": "cpu", "arguments": {"index": 0, "extra": 1}, "id": 3}', "GenericError"),
        (b'{"execute": "cpu", "arguments": {"index": "zero"}, "id": 4.5}', "GenericError"),
        (b'{"execute": "query-status", "arguments": [], "id": null}', "GenericError"),
        (b'{"execute": 7}', "GenericError"),
        (b'{"arguments": {}}', "GenericError"),
    ]
    for raw, cls in cases:
        c.send(raw)
        r = c.reply()
        assert "error" in r, (raw, r)
        assert r["error"]["class"] == (cls or "GenericError"), (raw, r)
        assert r["error"]["desc"]
        sent = json.loads(raw) if cls else None
        if isinstance(sent, dict) and "id" in sent:
            assert r["id"] == sent["id"], (raw, r)
        # The connection still works.
        c.send('{"execute": "query-status", "id": "after"}')
        r = c.reply()
        assert r["id"] == "after" and r["return"]["status"] == "running"
    # Several objects in one write, and one object split across writes.
    c.send('{"execute": "query-kvm", "id": 1}{"execute": "query-name", "id": 2}\r\n'
           '{"execute": "query-status", "id": 3}')
    assert [c.reply()["id"] for _ in range(3)] == [1, 2, 3]
    msg = b'{"execute": "query-status", "id": "split"}'
    for i in range(len(msg)):
        c.send(msg[i:i + 1])
        time.sleep(0.001)
    assert c.reply()["id"] == "split"
    # Non-ASCII in and out: the reply is escaped.
    c.send('{"execute": "human-monitor-command", '
           '"arguments": {"command-line": "h\u00e9llo\u2603"}, "id": "u"}')
    r = c.reply()
    assert r["id"] == "u" and "h\u00e9llo\u2603" in r["return"]
    c.send('{"execute": "quit"}')
    assert c.reply() == {"return": {}}
    assert p.wait_exit() == 0


def test_tcp_monitor(petrel, tmpdir_short):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    p = petrel(["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"])
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    c = Raw(s)
    c.negotiate()
    c.send('{"execute": "query-status"}')
    assert "status" in c.reply()["return"]
    c.send('{"execute": "quit"}')
    c.reply()
    assert p.wait_exit() == 0


def test_stdio_monitor():
    proc = subprocess.Popen([PETREL, "-kernel", KERNEL, "-nodefaults", "-display", "none",
                             "-S", "-qmp", "stdio"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        greeting = json.loads(proc.stdout.readline())
        assert greeting["QMP"]["capabilities"] == []  # no OOB on stdio, as QEMU
        proc.stdin.write(b'{"execute": "qmp_capabilities"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"return": {}}
        proc.stdin.write(b'{"execute": "query-status"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["return"]["status"] == "prelaunch"
        proc.stdin.write(b'{"execute": "quit"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"return": {}}
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()


def test_petrel_connects_to_a_listening_client(petrel, tmpdir_short):
    """QEMUMachine's way: the test listens, the VMM connects (-chardev socket without server)."""
    path = os.path.join(tmpdir_short, "listen.sock")

    async def go():
        qmp = QMPClient("listener")
        await qmp.start_server(path)
        p = petrel(["-chardev", f"socket,id=mon,path={path}",
                    "-mon", "chardev=mon,mode=control"])
        await qmp.accept()
        st = await qmp.execute("query-status")
        assert st["status"] == "running"
        await qmp.execute("quit")
        await close_after_exit(qmp)
        return p
    p = run(go())
    assert p.wait_exit() == 0


def test_inherited_socket_fd(petrel, tmpdir_short):
    """QEMUMachine also hands over one end of a socketpair as fd=N."""
    ours, theirs = socket.socketpair()
    fd = theirs.fileno()
    p = petrel(["-chardev", f"socket,id=mon,fd={fd}", "-mon", "chardev=mon,mode=control"],
               pass_fds=(fd,))
    theirs.close()
    c = Raw(ours)
    c.negotiate()
    c.send('{"execute": "query-status", "id": 1}')
    assert c.reply()["return"]["status"] == "running"
    c.send('{"execute": "quit"}')
    c.reply()
    assert p.wait_exit() == 0


def test_oob_runs_while_in_band_waits(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-qmp", f"unix:{path},server=on,wait=off"])
    p.wait_socket("q.sock")
    c = unix(path)
    greeting = c.recv()
    assert "oob" in greeting["QMP"]["capabilities"]
    c.send('{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    assert c.reply() == {"return": {}}
    # exec-oob of a command that does not allow it is refused; the monitor goes on.
    c.send('{"exec-oob": "query-status", "id": "oob1"}')
    r = c.reply()
    assert r["id"] == "oob1" and r["error"]["class"] == "GenericError"
    c.send('{"execute": "query-status", "id": "ib"}')
    assert c.reply()["id"] == "ib"
    c.send('{"execute": "quit"}')
    c.reply()
    assert p.wait_exit() == 0
