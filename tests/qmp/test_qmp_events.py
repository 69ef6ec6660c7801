"""Events against the guest: several monitors at once, the power button, -no-shutdown, NMIs,
RTC changes and S3."""

import os

from qemu.qmp import QMPClient

from conftest import close_after_exit, run


async def connect(path, name):
    qmp = QMPClient(name)
    await qmp.connect(path)
    return qmp


async def next_event(qmp, name):
    ev = await qmp.events.get()
    assert ev["event"] == name, f"expected {name}, got {ev}"
    return ev


def test_three_monitors_see_every_event(petrel, tmpdir_short):
    paths = [os.path.join(tmpdir_short, f"m{i}.sock") for i in range(3)]
    args = []
    for i, path in enumerate(paths):
        if i == 2:
            args += ["-chardev", f"socket,id=mon2,path={path},server=on,wait=off",
                     "-mon", "chardev=mon2,mode=control"]
        else:
            args += ["-qmp", f"unix:{path},server=on,wait=off"]
    p = petrel(args)
    for i in range(3):
        p.wait_socket(f"m{i}.sock")
    p.wait_line("idle: ready")

    async def go():
        mons = [await connect(path, f"m{i}") for i, path in enumerate(paths)]
        await mons[0].execute("stop")
        for m in mons:
            await next_event(m, "STOP")
        await mons[1].execute("cont")
        for m in mons:
            await next_event(m, "RESUME")
        await mons[2].execute("system_reset")
        for m in mons:
            ev = await next_event(m, "RESET")
            assert ev["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        p.wait_count("idle: ready", 2)
        await mons[0].execute("system_powerdown")
        for m in mons:
            await next_event(m, "POWERDOWN")
        p.wait_line("acpi: power button")
        for m in mons:
            ev = await next_event(m, "SHUTDOWN")
            assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}
        for m in mons:
            await close_after_exit(m)
    run(go())
    assert p.wait_exit() == 0


def test_no_shutdown_stops_after_guest_poweroff(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-no-shutdown", "-qmp", f"unix:{path},server=on,wait=off"])
    p.wait_socket("q.sock")
    p.wait_line("idle: ready")

    async def go():
        qmp = await connect(path, "q")
        await qmp.execute("system_powerdown")
        await next_event(qmp, "POWERDOWN")
        await next_event(qmp, "SHUTDOWN")
        await next_event(qmp, "STOP")
        st = await qmp.execute("query-status")
        assert st["status"] == "shutdown" and st["running"] is False
        # A stopped-by-shutdown machine needs a reset before it runs again.
        try:
            await qmp.execute("cont")
            raise AssertionError("cont after shutdown succeeded")
        except Exception as e:  # ExecuteError
            assert "reset" in str(e).lower()
        await qmp.execute("system_reset")
        await next_event(qmp, "RESET")
        assert (await qmp.execute("query-status"))["status"] == "prelaunch"
        await qmp.execute("cont")
        await next_event(qmp, "RESUME")
        p.wait_count("idle: ready", 2)
        assert p.count("petrel-guest: hello") == 2
        await qmp.execute("quit")
        await close_after_exit(qmp)
    run(go())
    assert p.wait_exit() == 0


def test_nmis_are_counted_by_the_guest(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-qmp", f"unix:{path},server=on,wait=off"])
    p.wait_socket("q.sock")
    p.wait_line("idle: ready")

    async def go():
        qmp = await connect(path, "q")
        for n in range(1, 4):
            await qmp.execute("inject-nmi")
            p.wait_line(f"nmi: count={n}")
        await qmp.execute("quit")
        await close_after_exit(qmp)
    run(go())


def test_rtc_change_when_the_guest_sets_the_clock(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-S", "-qmp", f"unix:{path},server=on,wait=off"], append="petrel.test=rtcset")
    p.wait_socket("q.sock")

    async def go():
        qmp = await connect(path, "q")
        await qmp.execute("cont")
        await next_event(qmp, "RESUME")
        p.wait_line("rtc: set 2030-01-02T03:04:05")
        ev = await next_event(qmp, "RTC_CHANGE")
        # 2030-01-02T03:04:05Z minus now, in seconds.
        import time
        expected = 1893553445 - int(time.time())
        assert abs(ev["data"]["offset"] - expected) <= 5, ev
        await qmp.execute("quit")
        await close_after_exit(qmp)
    run(go())


def test_suspend_to_ram_and_wakeup(petrel, tmpdir_short):
    path = os.path.join(tmpdir_short, "q.sock")
    p = petrel(["-S", "-qmp", f"unix:{path},server=on,wait=off"], append="petrel.test=suspend")
    p.wait_socket("q.sock")

    async def go():
        qmp = await connect(path, "q")
        await qmp.execute("cont")
        await next_event(qmp, "RESUME")
        p.wait_line("suspend: entering S3")
        await next_event(qmp, "SUSPEND")
        assert (await qmp.execute("query-status"))["status"] == "suspended"
        await qmp.execute("system_wakeup")
        await next_event(qmp, "WAKEUP")
        p.wait_line("suspend: resumed")
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.execute("system_powerdown")
        await next_event(qmp, "POWERDOWN")
        await next_event(qmp, "SHUTDOWN")
        await close_after_exit(qmp)
    run(go())
    assert p.wait_exit() == 0
