"""Networking against petrel with the test guest's network scenarios (resources/guest/README.md,
"The network scenarios"), driven as resources/guest/test-net.sh drives them under QEMU:
two guests over socket netdevs, a tap in a network namespace, user networking (DHCP, a TCP
fetch from the host, hostfwd), set_link, NIC_RX_FILTER_CHANGED and query-rx-filter, bad
netdev commands and options, and HMP `info network`.

QEMU's answers were recorded from Debian's QEMU 7.2.22 (qemu-system-x86_64 -M microvm,pcie=on
-accel kvm, the same guest and command lines). Where QEMU is installed (it is in CI) the tests
that compare with it also run against it, so the recorded answers are checked too."""

import asyncio
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest
import conftest
from conftest import (ROOT, TIMEOUT, close_after_exit, connect, error_of, next_event, run,
                      skip_or_fail)

NET_HOST = os.path.join(ROOT, "resources", "guest", "net-host.py")
QEMU = shutil.which("qemu-system-x86_64")
# QEMU's machine for the guest, as test-net.sh runs it.
QEMU_ARGS = ["-M", "microvm,pcie=on,rtc=on,acpi=on", "-accel", "kvm",
             "-cpu", "host,-arch-capabilities"]


def qemu_72():
    """Why QEMU cannot check the recorded answers here, or None when it can."""
    if QEMU is None:
        return "qemu-system-x86_64 is not installed"
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    if "version 7.2." not in out:
        return f"the recorded answers are QEMU 7.2's, this is {out.splitlines()[0]!r}"
    return None


def wrapper(tmpdir, name, argv):
    """An executable script that runs `argv` followed by its own arguments: it stands in for
    the petrel binary where a test runs another VMM, or petrel inside a namespace."""
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(map(shlex.quote, argv)) + ' "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(params=["petrel", "qemu"])
def vmm(request, monkeypatch, tmpdir_short):
    """Which VMM the `petrel` fixture starts: petrel, or QEMU 7.2 (to check the recorded
    answers; skipped where it is not installed)."""
    if request.param == "qemu":
        why = qemu_72()
        if why:
            skip_or_fail(why)
        monkeypatch.setattr(conftest, "PETREL", wrapper(tmpdir_short, "qemu", [QEMU, *QEMU_ARGS]))
    return request.param


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listen(port, timeout=TIMEOUT):
    """Until a TCP socket listens on 127.0.0.1:`port` (without connecting to it: a socket
    netdev takes a single connection)."""
    want = ":%04X" % port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want) and fields[3] == "0A":
                    return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")


def host(*args, netns=None, timeout=TIMEOUT):
    """Runs net-host.py (in `netns` if given); its stdout."""
    cmd = [sys.executable, NET_HOST, *map(str, args)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout


def lines(p, pattern):
    """The console lines of `p` matching the regular expression `pattern` in full."""
    return [l for l in p.console().splitlines() if re.fullmatch(pattern, l)]


def one_line(p, pattern):
    found = lines(p, pattern)
    assert len(found) == 1, f"expected one line /{pattern}/:\n{p.console()}"
    return re.fullmatch(pattern, found[0])


async def hmp(qmp, line):
    return await qmp.execute("human-monitor-command", {"command-line": line})


async def event(qmp, name, timeout=TIMEOUT):
    """The next event called `name`, skipping others, within `timeout`."""
    return await asyncio.wait_for(next_event(qmp, name), timeout)


async def no_event(qmp, name, quiet=1.0):
    """Asserts that no `name` event comes within `quiet` seconds."""
    await asyncio.sleep(quiet)
    while not qmp.events.empty():
        ev = qmp.events.get_nowait()
        assert ev["event"] != name, f"unexpected {ev}"


def start(petrel, tmpdir, args, append, name="qmp.sock"):
    """A VMM with a QMP monitor `name` in `tmpdir` (the fixture's); the process and the
    monitor's path."""
    sock = os.path.join(tmpdir, name)
    p = petrel(["-qmp", f"unix:{sock},server=on,wait=off", *args], append=append)
    p.wait_socket(name)
    return p, sock


def nic(netdev, mac=None, ident=None):
    opts = f"virtio-net-pci,netdev={netdev}"
    if mac:
        opts += f",mac={mac}"
    if ident:
        opts += f",id={ident}"
    return ["-device", opts]


# ---- 1. two guests over a socket netdev ----

def socket_pair(kind):
    """The two netdevs of a guest pair: (server's, pinger's)."""
    if kind == "stream":
        port = free_port()
        return (f"socket,id=n0,listen=127.0.0.1:{port}",
                f"socket,id=n0,connect=127.0.0.1:{port}", port)
    if kind == "udp":
        a, b = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        return (f"socket,id=n0,udp=127.0.0.1:{b},localaddr=127.0.0.1:{a}",
                f"socket,id=n0,udp=127.0.0.1:{a},localaddr=127.0.0.1:{b}", None)
    port = free_port(socket.SOCK_DGRAM)
    mcast = f"socket,id=n0,mcast=230.0.0.1:{port},localaddr=127.0.0.1"
    return mcast, mcast, None


@pytest.mark.parametrize("kind", ["stream", "udp", "mcast"])
def test_two_guests_ping_over_a_socket_netdev(petrel, kind):
    """Guest A (10.0.0.1, static) answers; guest B pings it four times. Both sides count."""
    server, client, listen_port = socket_pair(kind)
    a = petrel(["-netdev", server, *nic("n0", "52:54:00:00:00:01")],
               append="petrel.test=netping petrel.net.ip=10.0.0.1 petrel.net.secs=5")
    if listen_port:
        wait_listen(listen_port)
    a.wait_line("netping: serving secs=5")
    b = petrel(["-netdev", client, *nic("n0", "52:54:00:00:00:02")],
               append="petrel.test=netping petrel.net.ip=10.0.0.2 petrel.net.peer=10.0.0.1 "
                      "petrel.net.count=4")
    assert b.wait_line("status: ") == "status: 0", b.console()
    one_line(b, r"net: mac=52:54:00:00:00:02 link=up")
    one_line(b, r"net: arp 10\.0\.0\.1 is 52:54:00:00:00:01")
    for seq in range(1, 5):
        one_line(b, rf"netping: reply from 10\.0\.0\.1 seq={seq}")
    one_line(b, r"netping: sent=4 received=4 rtt_min_us=\d+ rtt_avg_us=\d+ rtt_max_us=\d+")
    assert b.wait_exit() == 0

    answered = a.wait_line("netping: answered ")
    m = re.fullmatch(r"netping: answered arp=(\d+) echo=(\d+)", answered)
    assert m and int(m[1]) >= 1 and int(m[2]) == 4, a.console()
    assert a.wait_line("status: ") == "status: 0", a.console()
    assert a.wait_exit() == 0


# ---- 2. a tap in a network namespace ----

@pytest.fixture
def netns():
    """A network namespace with tap ptap0 at 10.9.0.1/24, deleted afterwards."""
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif not os.path.exists("/dev/net/tun"):
        why = "no /dev/net/tun"
    elif shutil.which("ip") is None:
        why = "no ip (iproute2)"
    if why:
        skip_or_fail(f"tap in a network namespace needs root, /dev/net/tun and ip: {why}")
    name = f"petrel-test-{os.getpid()}"
    ip = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True, timeout=30)
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "tuntap", "add", "dev", "ptap0", "mode", "tap")
        ip("-n", name, "addr", "add", "10.9.0.1/24", "dev", "ptap0")
        ip("-n", name, "link", "set", "ptap0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_tap_in_a_namespace_pings_both_ways(netns, petrel, monkeypatch, tmpdir_short):
    """Petrel runs inside the namespace on its tap: the guest pings the namespace, the
    namespace pings the guest (56 and 1400 bytes, the latter spanning 256-byte merged rx
    buffers)."""
    in_ns = ["ip", "netns", "exec", netns]
    monkeypatch.setattr(conftest, "PETREL",
                        wrapper(tmpdir_short, "in-ns", [*in_ns, conftest.PETREL]))
    tap_mac = subprocess.run([*in_ns, "cat", "/sys/class/net/ptap0/address"], check=True,
                             capture_output=True, text=True, timeout=30).stdout.strip()
    p = petrel(["-netdev", "tap,id=n0,ifname=ptap0,script=no,downscript=no", *nic("n0")],
               append="petrel.test=netping petrel.net.ip=10.9.0.2 petrel.net.peer=10.9.0.1 "
                      "petrel.net.count=3 petrel.net.secs=6 petrel.net.rxbuf=256")
    p.wait_line("netping: serving secs=6")
    one_line(p, rf"net: arp 10\.9\.0\.1 is {tap_mac}")
    one_line(p, r"netping: sent=3 received=3 rtt_min_us=\d+ rtt_avg_us=\d+ rtt_max_us=\d+")

    small = host("ping", "10.9.0.2", 4, 56, netns=netns).splitlines()
    large = host("ping", "10.9.0.2", 3, 1400, netns=netns).splitlines()
    assert small == [f"reply from 10.9.0.2 seq={i} bytes=64" for i in range(1, 5)] + \
        ["sent=4 received=4"], small
    assert large == [f"reply from 10.9.0.2 seq={i} bytes=1408" for i in range(1, 4)] + \
        ["sent=3 received=3"], large

    assert p.wait_line("status: ") == "status: 0", p.console()
    one_line(p, r"netping: answered arp=\d+ echo=7")
    # Each 1400-byte request spans several rx buffers; none was dropped.
    stats = one_line(p, r"net: stats rx=\d+ merged=(\d+) bad=(\d+) tx=\d+")
    assert int(stats[1]) >= 3 and stats[2] == "0", p.console()
    assert p.wait_exit() == 0


# ---- 3. user networking ----

def test_user_network_dhcp_fetch_and_hostfwd(petrel):
    """A DHCP lease from the user network, a TCP fetch from a server on the host (bytes and
    sum as the host computes them), and hostfwd from the host into the guest's server."""
    port, fwd = free_port(), free_port()
    srv = subprocess.Popen([sys.executable, NET_HOST, "tcp-serve", str(port), "20000"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_listen(port)
        p = petrel(["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{fwd}-:7777", *nic("n0")],
                   append=f"petrel.test=netdhcp petrel.net.fetch=10.0.2.2:{port} "
                          "petrel.net.serve=7777")
        p.wait_line("netdhcp: serving port=7777")
        assert host("tcp-get", fwd).strip() == repr(b"petrel-guest: hello over tcp\n")
        assert p.wait_line("status: ") == "status: 0", p.console()
        assert srv.wait(TIMEOUT) == 0
        assert srv.stdout.read().strip() == "request=b'GET\\n' sent=20000"
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
    one_line(p, r"netdhcp: lease ip=10\.0\.2\.15 gw=10\.0\.2\.2 dns=10\.0\.2\.3")
    one_line(p, r"netdhcp: mask=255\.255\.255\.0 server=10\.0\.2\.2 lease_secs=86400")
    one_line(p, r"net: arp 10\.0\.2\.2 is 52:55:0a:00:02:02")
    one_line(p, rf"netdhcp: connected to 10\.0\.2\.2:{port}")
    one_line(p, re.escape(host("expect", 20000).strip()))
    one_line(p, r"netdhcp: accepted from 10\.0\.2\.2:\d+")
    one_line(p, r"netdhcp: served")
    assert p.wait_exit() == 0


USERNET_HEADER = "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ"


def host_forwards(table):
    """The HOST_FORWARD lines of an `info usernet` table, split into their fields."""
    return [l.split() for l in table.split("\r\n") if "[HOST_FORWARD]" in l]


def test_hostfwd_added_and_removed_at_run_time(vmm, petrel, tmpdir_short):
    """HMP hostfwd_add forwards a host port to the guest's TCP server, info usernet lists
    the rule, hostfwd_remove takes it away (the port then refuses connections); errors
    are QEMU 7.2's texts, printed as the command's answer."""
    fwd = free_port()
    rule = f"tcp:127.0.0.1:{fwd}-:7777"
    key = f"tcp:127.0.0.1:{fwd}"
    # The guest powers off once it has served one connection; -no-shutdown keeps the VMM,
    # and its user network, for what follows.
    p, sock = start(petrel, tmpdir_short,
                    ["-no-shutdown", "-netdev", "user,id=n0", *nic("n0")],
                    "petrel.test=netdhcp petrel.net.serve=7777")
    p.wait_line("netdhcp: serving port=7777")

    async def body():
        qmp = await connect(sock)
        assert await hmp(qmp, f"hostfwd_add {rule}") == ""
        assert await hmp(qmp, f"hostfwd_add n0 {rule}") == \
            f"Could not set up host forwarding rule '{rule}'\r\n"
        table = await hmp(qmp, "info usernet")
        assert table.startswith(f"Hub -1 (n0):\r\n{USERNET_HEADER}\r\n"), table
        fields = host_forwards(table)
        assert [f[:1] + f[2:] for f in fields] == \
            [["TCP[HOST_FORWARD]", "127.0.0.1", str(fwd), "10.0.2.15", "7777", "0", "0"]], table
        got = await asyncio.to_thread(host, "tcp-get", fwd)
        assert got.strip() == repr(b"petrel-guest: hello over tcp\n")
        assert p.wait_line("status: ") == "status: 0", p.console()
        await event(qmp, "SHUTDOWN")
        assert await hmp(qmp, f"hostfwd_remove n0 {key}") == \
            f"host forwarding rule for {key} removed\r\n"
        assert await hmp(qmp, f"hostfwd_remove {key}") == \
            f"host forwarding rule for {key} not found\r\n"
        assert host_forwards(await hmp(qmp, "info usernet")) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", fwd), timeout=TIMEOUT).close()
        for line, answer in [
                ("hostfwd_add nope tcp::1-:2", "unrecognized netdev id 'nope'\r\n"),
                ("hostfwd_add foo", "Invalid host forwarding rule 'foo' (No : separators)\r\n"),
                ("hostfwd_remove tcp::0x10", "invalid format\r\n"),
                ("hostfwd_add", 'hostfwd_add: string expected\r\n'
                                'Try "help hostfwd_add" for more information\r\n')]:
            assert (line, await hmp(qmp, line)) == (line, answer)
        await qmp.disconnect()

    run(body())
    one_line(p, r"netdhcp: accepted from 10\.0\.2\.2:\d+")
    one_line(p, r"netdhcp: served")


# ---- 4. set_link and the receive filter ----

def test_set_link_by_nic_and_by_netdev_reaches_the_guest(vmm, petrel, tmpdir_short):
    """set_link takes the NIC's id or its netdev's; the guest sees each change."""
    p, sock = start(petrel, tmpdir_short, ["-netdev", "user,id=n0", *nic("n0", ident="nic0")],
                    "petrel.test=netlink petrel.net.changes=4")
    p.wait_line("netlink: ready")

    async def body():
        qmp = await connect(sock)
        for n, name in enumerate(["nic0", "n0"], 1):
            await qmp.execute("set_link", {"name": name, "up": False})
            p.wait_count("netlink: link=down", n)
            assert p.count("netlink: link=up") == n - 1
            await qmp.execute("set_link", {"name": name, "up": True})
            p.wait_count("netlink: link=up", n)
        assert await error_of(qmp, "set_link", name="nope", up=False) == \
            ("DeviceNotFound", "Device 'nope' not found")
        p.wait_line("status: ")
        await close_after_exit(qmp)

    run(body())
    one_line(p, r"netlink: changes=4")
    assert p.wait_line("status: ") == "status: 0", p.console()
    assert p.wait_exit() == 0


MCAST = ["01:00:5e:00:00:fb", "33:33:00:00:00:01"]


@pytest.mark.parametrize("settings,ident", [("tables", "nic0"), ("promisc", "nic0"),
                                            ("tables", None)])
def test_rx_filter_event_once_per_query(vmm, petrel, tmpdir_short, settings, ident):
    """NIC_RX_FILTER_CHANGED comes once for the guest's three filter commands, not again
    until query-rx-filter re-arms it (nor for the query itself, nor for a reset); after a
    reset the guest's three commands give one event again. query-rx-filter shows what the
    guest set. QEMU 7.2's event names the NIC by its id (none without one) and its path is
    the virtio device inside the PCI function."""
    if settings == "tables":
        words = f"petrel.net.mcast={','.join(MCAST)} petrel.net.ucast=52:54:00:aa:bb:cc"
        want = {"promiscuous": False, "multicast": "normal", "unicast": "normal",
                "main-mac": "52:54:00:12:34:56", "unicast-table": ["52:54:00:aa:bb:cc"],
                "multicast-table": sorted(MCAST)}
    else:
        words = "petrel.net.promisc=1 petrel.net.allmulti=1"
        want = {"promiscuous": True, "multicast": "all", "unicast": "normal",
                "main-mac": "52:54:00:12:34:56", "unicast-table": [], "multicast-table": []}
    reset_state = {**want, "promiscuous": True, "multicast": "normal", "unicast-table": [],
                   "multicast-table": []}
    if ident:
        name, path = ident, f"/machine/peripheral/{ident}"
        data = {"name": ident, "path": f"{path}/virtio-backend"}
    else:
        name, path = "virtio-net-pci.0", "/machine/peripheral-anon/device[0]"
        data = {"path": f"{path}/virtio-backend"}
    # -S: the monitor is connected before the guest sets its filter.
    p, sock = start(petrel, tmpdir_short,
                    ["-S", "-netdev", "user,id=n0", *nic("n0", ident=ident)],
                    f"petrel.test=netrx {words}")

    async def rx_filter(qmp, want):
        filters = await qmp.execute("query-rx-filter", {"name": name})
        assert len(filters) == 1 and filters[0]["name"] == name
        got = {k: sorted(v) if k.endswith("-table") else v
               for k, v in filters[0].items() if k in want}
        assert got == want
        assert filters[0]["unicast-overflow"] is False
        assert filters[0]["multicast-overflow"] is False
        # Without an argument: the same NIC, the only one.
        assert [f["name"] for f in await qmp.execute("query-rx-filter")] == [name]

    async def body():
        qmp = await connect(sock)
        # Before the guest runs: the device's reset state.
        await rx_filter(qmp, reset_state)
        await qmp.execute("cont")
        for boot in (1, 2):
            ev = await event(qmp, "NIC_RX_FILTER_CHANGED")
            assert ev["data"] == data
            p.wait_count("netrx: ready", boot)
            assert len(lines(p, r"netrx: filter set .*")) == 3 * boot, p.console()
            assert not lines(p, r"netrx: filter FAILED.*"), p.console()
            # Two more filter commands came after the event: no second event.
            await no_event(qmp, "NIC_RX_FILTER_CHANGED")
            await rx_filter(qmp, want)
            # The query re-armed the event, but nothing changed since.
            await no_event(qmp, "NIC_RX_FILTER_CHANGED", 0.3)
            if boot == 1:
                # A reset while stopped: the filter goes back to its reset state without
                # an event; once running, the guest boots again and sends its three
                # commands again.
                await qmp.execute("stop")
                await qmp.execute("system_reset")
                await event(qmp, "RESET")
                await no_event(qmp, "NIC_RX_FILTER_CHANGED", 0.5)
                assert p.count("netrx: ready") == 1
                await rx_filter(qmp, reset_state)
                await qmp.execute("cont")
        await qmp.disconnect()

    run(body())
    assert len(lines(p, r".*petrel-guest: hello")) == 2


# ---- 5. bad input changes nothing ----

VM_ARGS = ["-netdev", "user,id=n0", *nic("n0", ident="nic0")]
INFO_NETWORK = ("s0: index=0,type=socket,\r\n"
                "nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
                " \\ n0: index=0,type=user,net=10.0.2.0,restrict=off\r\n")
# fd 999 is open in neither VMM (checked in the test).
BAD_COMMANDS = [
    ("netdev_add", {"type": "foo", "id": "x"},
     "GenericError", "Parameter 'type' does not accept value 'foo'"),
    ("netdev_add", {"type": "user", "id": "n0"}, "GenericError", "Duplicate ID 'n0'"),
    ("netdev_add", {"type": "socket", "id": "s0", "listen": "127.0.0.1:0"},
     "GenericError", "Duplicate ID 's0'"),
    ("netdev_add", {"type": "socket", "id": "f1", "fd": "nosuch"},
     "GenericError", "File descriptor named 'nosuch' has not been found"),
    ("netdev_add", {"type": "tap", "id": "f2", "fd": "nosuch"},
     "GenericError", "File descriptor named 'nosuch' has not been found"),
    ("netdev_add", {"type": "socket", "id": "f3", "fd": "999"},
     "GenericError", "f3: Can't use file descriptor 999: Bad file descriptor"),
    ("netdev_add", {"type": "tap", "id": "f4", "fd": "999"},
     "GenericError", "f4: Can't use file descriptor 999: Bad file descriptor"),
    ("netdev_add", {"type": "user", "id": "1x"},
     "GenericError", "Parameter 'id' expects an identifier"),
    ("netdev_del", {"id": "nope"}, "DeviceNotFound", "Device 'nope' not found"),
    ("set_link", {"name": "nope", "up": False}, "DeviceNotFound", "Device 'nope' not found"),
    ("query-rx-filter", {"name": "n0"}, "GenericError", "net client(n0) isn't a NIC"),
    ("query-rx-filter", {"name": "nope"}, "GenericError", "invalid net client name: nope"),
]


def start_netlink(petrel, tmpdir, name="qmp.sock"):
    """A guest in `netlink` on nic0 (user netdev n0) beside a free socket netdev s0."""
    port = free_port()
    p, sock = start(petrel, tmpdir,
                    [*VM_ARGS, "-netdev", f"socket,id=s0,listen=127.0.0.1:{port}"],
                    "petrel.test=netlink", name)
    p.wait_line("netlink: ready")
    return p, sock


async def state(qmp):
    """What bad input must not change."""
    status = await qmp.execute("query-status")
    return (await hmp(qmp, "info network"), await qmp.execute("query-rx-filter"),
            status["status"], status["running"])


def test_bad_netdev_commands_change_nothing(vmm, petrel, tmpdir_short):
    p, sock = start_netlink(petrel, tmpdir_short)
    assert not os.path.exists(f"/proc/{p.proc.pid}/fd/999")

    async def body():
        qmp = await connect(sock)
        before = await state(qmp)
        assert before[0] == INFO_NETWORK
        assert before[2:] == ("running", True)
        for cmd, args, cls, desc in BAD_COMMANDS:
            assert (cmd, args, await error_of(qmp, cmd, **args)) == (cmd, args, (cls, desc))
        assert await state(qmp) == before
        # The NIC and the guest still work.
        await qmp.execute("set_link", {"name": "nic0", "up": False})
        p.wait_line("netlink: link=down")
        await qmp.disconnect()

    run(body())
    assert p.count("netlink: link=") == 1


def test_netdev_add_and_del_at_run_time(vmm, petrel, tmpdir_short):
    p, sock = start_netlink(petrel, tmpdir_short)

    async def body():
        qmp = await connect(sock)
        before = await state(qmp)
        assert await qmp.execute("netdev_add", {"type": "user", "id": "u9"}) == {}
        assert await hmp(qmp, "info network") == \
            INFO_NETWORK + "u9: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
        assert await qmp.execute("netdev_del", {"id": "u9"}) == {}
        assert await error_of(qmp, "netdev_del", id="u9") == \
            ("DeviceNotFound", "Device 'u9' not found")
        assert await state(qmp) == before
        await qmp.disconnect()

    run(body())
    assert p.count("netlink: link=") == 0


def test_netdev_del_of_a_netdev_in_use(vmm, petrel, tmpdir_short):
    """QEMU answers {}, the NIC's link goes down (the guest sees it), `info network` still
    shows the deleted peer under the NIC, and its id is free again."""
    p, sock = start_netlink(petrel, tmpdir_short)

    async def body():
        qmp = await connect(sock)
        filters = await qmp.execute("query-rx-filter")
        assert await qmp.execute("netdev_del", {"id": "n0"}) == {}
        p.wait_line("netlink: link=down")
        assert await hmp(qmp, "info network") == INFO_NETWORK
        assert await qmp.execute("query-rx-filter") == filters
        assert await error_of(qmp, "netdev_del", id="n0") == \
            ("DeviceNotFound", "Device 'n0' not found")
        assert await error_of(qmp, "set_link", name="n0", up=True) == \
            ("DeviceNotFound", "Device 'n0' not found")
        assert await qmp.execute("netdev_add", {"type": "user", "id": "n0"}) == {}
        assert await hmp(qmp, "info network") == \
            INFO_NETWORK + "n0: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
        # The NIC's own link can still be raised.
        await qmp.execute("set_link", {"name": "nic0", "up": True})
        p.wait_line("netlink: link=up")
        st = await qmp.execute("query-status")
        assert (st["status"], st["running"]) == ("running", True)
        await qmp.disconnect()

    run(body())
    assert lines(p, r"netlink: link=.*") == ["netlink: link=down", "netlink: link=up"]


# QEMU 7.2's stderr for each, after its program name and ": ".
CLI_ERRORS = [
    (["-netdev", "foo,id=x"], "-netdev foo,id=x: Parameter 'type' does not accept value 'foo'"),
    (["-netdev", "user,id=a", "-netdev", "user,id=a"],
     "-netdev user,id=a: Duplicate ID 'a' for netdev"),
    (["-netdev", "user"], "-netdev user: Parameter 'id' is missing"),
    (["-netdev", "user,id=1x"], "-netdev user,id=1x: Parameter 'id' expects an identifier\n"
     "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."),
    (["-netdev", "user,id=a,bogus=1"], "-netdev user,id=a,bogus=1: Invalid parameter 'bogus'"),
    (["-netdev", '{"type":"user"}'], '-netdev {"type":"user"}: Parameter \'id\' is missing'),
]


@pytest.mark.parametrize("args,message", CLI_ERRORS,
                         ids=["unknown-type", "duplicate-id", "missing-id", "bad-id",
                              "unknown-parameter", "json-missing-id"])
def test_netdev_option_errors(vmm, args, message):
    argv0 = "petrel"
    cmd = [conftest.PETREL, "-kernel", conftest.KERNEL, "-nodefaults", "-display", "none", *args]
    if vmm == "qemu":
        argv0 = "qemu-system-x86_64"
        cmd = [QEMU, *QEMU_ARGS, *cmd[1:]]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    # QEMU warns about the host's CPU features first.
    err = [l for l in r.stderr.splitlines() if ": warning: " not in l]
    assert (r.returncode, err) == (1, f"{argv0}: {message}".splitlines())


# ---- 6. info network ----

async def info_network_until(qmp, want, timeout=10):
    """`info network` once it reads `want`, or what it read last when `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        text = await hmp(qmp, "info network")
        if text == want or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.05)


def test_info_network_follows_a_listening_socket(vmm, petrel, tmpdir_short):
    """A listen= socket netdev has no text until a peer connects, then says where the peer
    connects from, and has none again once the peer leaves: the text of the moment, as QEMU
    7.2 shows it, although the backend has moved to the NIC."""
    port = free_port()
    p, sock = start(petrel, tmpdir_short,
                    ["-netdev", f"socket,id=s0,listen=127.0.0.1:{port}",
                     *nic("s0", ident="nic0")],
                    "petrel.test=netlink")
    p.wait_line("netlink: ready")
    nic_line = "nic0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n"
    waiting = nic_line + " \\ s0: index=0,type=socket,\r\n"

    async def body():
        qmp = await connect(sock)
        assert await hmp(qmp, "info network") == waiting
        peer = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            here = peer.getsockname()[1]
            connected = (nic_line + " \\ s0: index=0,type=socket,"
                         f"socket: connection from 127.0.0.1:{here}\r\n")
            assert await info_network_until(qmp, connected) == connected
        finally:
            peer.close()
        assert await info_network_until(qmp, waiting) == waiting
        await qmp.disconnect()

    run(body())


USER_LINE = "index=0,type=user,net=10.0.2.0,restrict=off"
NIC_LINE = "index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34"
INFO_CASES = {
    # A NIC with a user peer and a free socket netdev.
    "peer-and-free": (lambda: [*VM_ARGS, "-netdev",
                               f"socket,id=s0,listen=127.0.0.1:{free_port()}"],
                      INFO_NETWORK),
    # Unnamed NICs are numbered by the NICs before them, named ones included.
    "unnamed-nics": (lambda: ["-netdev", "user,id=a", *nic("a", ident="nic0"),
                              "-netdev", "user,id=b", *nic("b"),
                              "-netdev", "user,id=c", *nic("c")],
                     f"nic0: {NIC_LINE}:56\r\n \\ a: {USER_LINE}\r\n"
                     f"virtio-net-pci.1: {NIC_LINE}:57\r\n \\ b: {USER_LINE}\r\n"
                     f"virtio-net-pci.2: {NIC_LINE}:58\r\n \\ c: {USER_LINE}\r\n"),
}


@pytest.mark.parametrize("case", INFO_CASES)
def test_info_network_as_qemu_shows_it(vmm, petrel, tmpdir_short, case):
    """The text QEMU 7.2 shows for the command line, from petrel, and from QEMU where it is
    installed (a missing QEMU skips or, where every test must run, fails that half)."""
    make_args, recorded = INFO_CASES[case]
    p, sock = start(petrel, tmpdir_short, make_args(), "petrel.test=idle")
    p.wait_line("idle: ready")

    async def ask():
        qmp = await connect(sock)
        text = await hmp(qmp, "info network")
        await qmp.disconnect()
        return text

    assert run(ask()) == recorded
