"""Every QMP command of the run-control and monitor set, driven by the qemu.qmp library against
petrel booting the test guest, with reply shapes checked against the spec's types."""

import asyncio
import json
import os
import re
import socket

import pytest
from qemu.qmp import ExecuteError, QMPClient

from conftest import close_after_exit, run

RUN_STATES = {"debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate",
              "prelaunch", "finish-migrate", "restore-vm", "running", "save-vm", "shutdown",
              "suspended", "watchdog", "guest-panicked", "colo"}

# The commands issue 4 asks for; each must be dispatched for real.
REQUIRED = ["qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
            "query-events", "query-command-line-options", "query-status", "query-name",
            "query-uuid", "query-kvm", "query-cpus", "query-hotpluggable-cpus", "stop", "cont",
            "quit", "system_reset", "system_powerdown", "system_wakeup", "inject-nmi", "cpu",
            "human-monitor-command", "getfd", "closefd", "add_client", "query-chardev"]

UUID = "6b8a6e5c-6a3c-4d7e-9b3f-0c2d1e4f5a6b"


async def client(path):
    qmp = QMPClient("test")
    await qmp.connect(path)
    return qmp


@pytest.fixture
def vm(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "qmp.sock")
    p = petrel(["-qmp", f"unix:{path},server=on,wait=off", "-name", "guest0",
                "-uuid", UUID, "-smp", "2"])
    p.wait_socket("qmp.sock")
    p.wait_line("idle: ready")
    return p, path


def test_greeting_and_version(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        greeting = qmp.greeting
        assert greeting is not None
        g = greeting.QMP
        assert g.version["qemu"]["major"] == 7 and g.version["qemu"]["minor"] == 2
        assert g.version["package"].startswith("petrel")
        assert "oob" in g.capabilities
        v = await qmp.execute("query-version")
        assert v["qemu"] == {"major": 7, "minor": 2, "micro": v["qemu"]["micro"]}
        assert isinstance(v["qemu"]["micro"], int)
        assert v["package"] == g.version["package"]
        await qmp.disconnect()
    run(go())


def test_introspection(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        names = {c["name"] for c in await qmp.execute("query-commands")}
        missing = [c for c in REQUIRED if c not in names]
        assert not missing, f"not dispatched: {missing}"
        schema = await qmp.execute("query-qmp-schema")
        by_name = {e["name"]: e for e in schema}
        for entry in schema:
            assert entry["meta-type"] in {"builtin", "enum", "array", "object", "alternate",
                                          "command", "event"}
        commands = {e["name"] for e in schema if e["meta-type"] == "command"}
        assert commands == names, "query-qmp-schema and query-commands disagree"
        status = by_name["query-status"]
        ret = by_name[status["ret-type"]]
        members = {m["name"]: m["type"] for m in ret["members"]}
        assert set(members) >= {"running", "status"}
        assert set(by_name[members["status"]]["values"]) >= {"running", "paused", "prelaunch"}
        # Every type a command or event names is defined.
        for e in schema:
            for key in ("arg-type", "ret-type", "element-type"):
                if key in e:
                    assert e[key] in by_name, f"{e['name']}: {key} {e[key]} undefined"
        events = {e["name"] for e in await qmp.execute("query-events")}
        assert {"SHUTDOWN", "RESET", "STOP", "RESUME", "POWERDOWN", "SUSPEND", "WAKEUP",
                "RTC_CHANGE"} <= events
        opts = await qmp.execute("query-command-line-options")
        by_opt = {o["option"]: o for o in opts}
        assert "chardev" in by_opt and "machine" in by_opt
        params = {p["name"]: p["type"] for p in by_opt["chardev"]["parameters"]}
        assert params.get("path") == "string" and params.get("server") == "boolean"
        one = await qmp.execute("query-command-line-options", {"option": "smp-opts"})
        assert [o["option"] for o in one] == ["smp-opts"]
        with pytest.raises(ExecuteError) as err:
            await qmp.execute("query-command-line-options", {"option": "no-such-option"})
        assert err.value.error_class == "GenericError"
        await qmp.disconnect()
    run(go())


def test_identity_queries(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        assert await qmp.execute("query-name") == {"name": "guest0"}
        assert await qmp.execute("query-uuid") == {"UUID": UUID}
        assert await qmp.execute("query-kvm") == {"enabled": True, "present": True}
        chardevs = await qmp.execute("query-chardev")
        labels = {c["label"]: c for c in chardevs}
        assert labels["serial0"]["filename"] == "stdio"
        assert labels["compat_monitor0"]["filename"].startswith("unix:")
        for c in chardevs:
            assert set(c) >= {"label", "filename", "frontend-open"}
            assert isinstance(c["frontend-open"], bool)
        await qmp.disconnect()
    run(go())


def test_cpus(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        cpus = await qmp.execute("query-cpus")
        assert [c["CPU"] for c in cpus] == [0, 1]
        tids = set()
        for c in cpus:
            assert isinstance(c["pc"], int) and c["pc"] > 0
            assert isinstance(c["halted"], bool)
            assert isinstance(c["current"], bool)
            # A real thread of petrel's.
            assert os.path.exists(f"/proc/{p.proc.pid}/task/{c['thread_id']}")
            tids.add(c["thread_id"])
        assert len(tids) == 2
        assert [c["current"] for c in cpus] == [True, False]
        # The guest idles in HLT and the AP was parked in `cli; hlt`: both report halted
        # (the BSP may still be finishing its last serial line when the first query lands).
        for _ in range(100):
            if all(c["halted"] for c in cpus):
                break
            await asyncio.sleep(0.02)
            cpus = await qmp.execute("query-cpus")
        assert all(c["halted"] for c in cpus), cpus
        await qmp.execute("cpu", {"index": 1})
        assert [c["current"] for c in await qmp.execute("query-cpus")] == [False, True]
        with pytest.raises(ExecuteError):
            await qmp.execute("cpu", {"index": 7})
        slots = await qmp.execute("query-hotpluggable-cpus")
        assert len(slots) == 2
        for s in slots:
            assert s["vcpus-count"] == 1 and s["type"]
            assert set(s["props"]) >= {"socket-id", "core-id", "thread-id"}
            assert s["qom-path"].startswith("/machine/")
        await qmp.disconnect()
    run(go())


def test_run_control_and_events(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.execute("stop")
        ev = await qmp.events.get()
        assert ev["event"] == "STOP"
        ts = ev["timestamp"]
        assert ts["seconds"] > 1_700_000_000 and 0 <= ts["microseconds"] < 1_000_000
        st = await qmp.execute("query-status")
        assert st == {"running": False, "singlestep": False, "status": "paused"}
        # Paused vCPUs take no NMI yet; it is delivered once they run.
        await qmp.execute("cont")
        assert (await qmp.events.get())["event"] == "RESUME"
        assert (await qmp.execute("query-status"))["running"] is True
        await qmp.execute("inject-nmi")
        p.wait_line("nmi: count=")
        await qmp.execute("system_reset")
        ev = await qmp.events.get()
        assert ev["event"] == "RESET"
        assert ev["data"]["guest"] is False
        p.wait_count("idle: ready", 2)
        assert p.count("petrel-guest: hello") == 2
        await qmp.execute("system_wakeup")  # not suspended: nothing to do
        await qmp.execute("system_powerdown")
        assert (await qmp.events.get())["event"] == "POWERDOWN"
        p.wait_line("acpi: power button")
        ev = await qmp.events.get()
        assert ev["event"] == "SHUTDOWN" and ev["data"]["guest"] is True
        await close_after_exit(qmp)
        assert p.wait_exit() == 0
    run(go())


def test_hmp(vm):
    p, path = vm

    async def go():
        qmp = await client(path)

        async def hmp(line):
            return await qmp.execute("human-monitor-command", {"command-line": line})
        assert await hmp("info status") == "VM status: running\r\n"
        assert await hmp("info kvm") == "kvm support: enabled\r\n"
        assert await hmp("info name") == "guest0\r\n"
        assert await hmp("info uuid") == UUID + "\r\n"
        assert (await hmp("info version")).startswith("7.2.")
        cpus = await hmp("info cpus")
        assert re.fullmatch(r"\* CPU #0: thread_id=\d+\r\n  CPU #1: thread_id=\d+\r\n", cpus)
        assert "serial0: filename=stdio" in await hmp("info chardev")
        one = await qmp.execute("human-monitor-command",
                                {"command-line": "info cpus", "cpu-index": 1})
        assert one.startswith("  CPU #0") and "* CPU #1" in one
        with pytest.raises(ExecuteError):
            await qmp.execute("human-monitor-command",
                              {"command-line": "info cpus", "cpu-index": -1})
        assert "system_powerdown" in await hmp("help")
        assert await hmp("stop") == ""
        assert (await qmp.events.get())["event"] == "STOP"
        assert await hmp("info status") == "VM status: paused\r\n"
        assert await hmp("cont") == ""
        assert (await qmp.events.get())["event"] == "RESUME"
        assert "unknown command" in await hmp("frobnicate")
        assert await hmp("system_reset") == ""
        assert (await qmp.events.get())["event"] == "RESET"
        await hmp("quit")
        await close_after_exit(qmp)
        assert p.wait_exit() == 0
    run(go())


def test_getfd_closefd_add_client(vm):
    p, path = vm

    async def go():
        qmp = await client(path)
        a, b = socket.socketpair()
        qmp.send_fd_scm(a.fileno())
        await qmp.execute("getfd", {"fdname": "mon2"})
        a.close()
        with pytest.raises(ExecuteError) as err:
            await qmp.execute("closefd", {"fdname": "nope"})
        assert err.value.error_class == "GenericError"
        # The descriptor becomes a new monitor: speak QMP over the other end.
        await qmp.execute("add_client", {"protocol": "qmp", "fdname": "mon2"})
        f = b.makefile("rwb", buffering=0)
        greeting = json.loads(f.readline())
        assert "QMP" in greeting
        f.write(b'{"execute": "qmp_capabilities"}\r\n')
        assert json.loads(f.readline()) == {"return": {}}
        f.write(b'{"execute": "query-status", "id": 5}\r\n')
        reply = json.loads(f.readline())
        assert reply["id"] == 5 and reply["return"]["status"] == "running"
        b.close()
        c, d = socket.socketpair()
        qmp.send_fd_scm(c.fileno())
        await qmp.execute("getfd", {"fdname": "spare"})
        c.close()
        d.close()
        await qmp.execute("closefd", {"fdname": "spare"})
        with pytest.raises(ExecuteError):
            await qmp.execute("closefd", {"fdname": "spare"})
        with pytest.raises(ExecuteError):
            await qmp.execute("getfd", {"fdname": "nofd"})
        await qmp.execute("quit")
        await close_after_exit(qmp)
        assert p.wait_exit() == 0
    run(go())


def test_start_paused_then_cont(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "qmp.sock")
    p = petrel(["-S", "-qmp", f"unix:{path},server=on,wait=off"])
    p.wait_socket("qmp.sock")

    async def go():
        qmp = await client(path)
        assert (await qmp.execute("query-status"))["status"] == "prelaunch"
        assert p.console() == ""
        await qmp.execute("cont")
        assert (await qmp.events.get())["event"] == "RESUME"
        p.wait_line("idle: ready")
        await qmp.execute("quit")
        await close_after_exit(qmp)
    run(go())
    assert p.wait_exit() == 0
