"""The balloon against petrel with the test guest's balloon driver: inflating gives the host
its memory back (petrel's resident set shrinks), query-balloon and BALLOON_CHANGE report it,
deflating returns it; and the bad inputs: no device, targets out of range, a guest sending
frame numbers that are not RAM. The memory queries answer what petrel's RAM is."""

import asyncio
import os

from conftest import connect, error_of, run

MiB = 1 << 20
RAM = 256 * MiB
POOL = 128 * MiB
PAGE = 4096


def rss(p):
    """petrel's resident set in bytes (VmRSS)."""
    with open(f"/proc/{p.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def start(petrel, tmpdir, append, device=True):
    sock = os.path.join(tmpdir, "qmp.sock")
    args = ["-m", "256M", "-qmp", f"unix:{sock},server=on,wait=off"]
    if device:
        args += ["-device", "virtio-balloon-pci,id=balloon0"]
    p = petrel(args, append=append)
    p.wait_socket("qmp.sock")
    return p, sock


async def balloon_changes(qmp, until, timeout=5.0):
    """(the `actual` reported, when it arrived) of the BALLOON_CHANGE events up to the first
    one reporting `until` bytes. Arrival, not the event's timestamp: as QEMU does, a delayed
    event keeps the time it was raised, and the rate limit is on delivery."""
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not seen or seen[-1][0] != until:
        left = deadline - loop.time()
        assert left > 0, f"no BALLOON_CHANGE with actual={until}: {seen}"
        ev = await asyncio.wait_for(qmp.events.get(), left)
        if ev["event"] == "BALLOON_CHANGE":
            seen.append((ev["data"]["actual"], loop.time()))
    return seen


def actual_lines(p):
    """What the guest's `balloon: actual=` lines said, in order."""
    prefix = "balloon: actual="
    return [l[len(prefix):] for l in p.console().splitlines() if l.startswith(prefix)]


def test_inflate_gives_memory_back_and_deflate_returns_it(petrel, tmpdir_short):
    p, sock = start(petrel, tmpdir_short,
                    f"petrel.test=balloon petrel.balloon.pool={POOL}")
    p.wait_line("balloon: ready target=0")
    pool_line = p.wait_line("balloon: pool=")
    assert pool_line.endswith(f"pages={POOL // PAGE}"), pool_line
    assert p.wait_line("virtio: ").endswith("msix=on"), p.console()

    async def body():
        qmp = await connect(sock)
        assert await qmp.execute("query-balloon") == {"actual": RAM}
        before = rss(p)

        # Inflate by 64 MiB: 16384 pages, in 16 requests of 1024.
        ballooned = 64 * MiB
        await qmp.execute("balloon", {"value": RAM - ballooned})
        events = await balloon_changes(qmp, RAM - ballooned)
        assert p.wait_line("balloon: actual=") == f"balloon: actual={ballooned // PAGE} pages"
        assert p.count("balloon: target=16384 pages") == 1
        # Rate-limited: the first change at once, then at most one a second, the last one
        # delivered at the end of its period.
        assert len(events) >= 2, events
        for (_, a), (_, b) in zip(events, events[1:]):
            assert b - a > 0.9, events
        assert all(RAM - ballooned <= actual < RAM for actual, _ in events), events
        assert await qmp.execute("query-balloon") == {"actual": RAM - ballooned}
        after = rss(p)
        assert before - after >= 0.8 * ballooned, (before, after)

        # Deflate: the guest finds the pages zeroed (discarded) and uses them again.
        await qmp.execute("balloon", {"value": RAM})
        await balloon_changes(qmp, RAM)
        p.wait_count("balloon: actual=", 2)
        assert p.wait_line("balloon: deflated=") == "balloon: deflated=16384 zeroed=16384"
        assert actual_lines(p) == [f"{ballooned // PAGE} pages", "0 pages"]
        assert await qmp.execute("query-balloon") == {"actual": RAM}
        assert rss(p) - after >= 0.8 * ballooned, (after, rss(p))
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.execute("quit")
        await qmp.disconnect()

    run(body())
    assert p.wait_exit() == 0


def test_targets_out_of_range(petrel, tmpdir_short):
    p, sock = start(petrel, tmpdir_short, "petrel.test=balloon petrel.balloon.pool=8388608")
    p.wait_line("balloon: ready")

    async def body():
        qmp = await connect(sock)
        for value in (0, -1, -(1 << 63)):
            assert await error_of(qmp, "balloon", value=value) == \
                ("GenericError", "Parameter 'target' expects a size")
        # One byte: the guest is asked for all its RAM but a page; it gives its pool.
        await qmp.execute("balloon", {"value": 1})
        assert p.wait_line("balloon: target=") == "balloon: target=65535 pages"
        p.wait_line("balloon: pool exhausted target=65535")
        assert p.wait_line("balloon: actual=") == "balloon: actual=2048 pages"
        await balloon_changes(qmp, RAM - 8 * MiB)
        # Above the RAM size: capped, as QEMU does, to the whole RAM: an empty balloon.
        await qmp.execute("balloon", {"value": 1 << 62})
        p.wait_count("balloon: actual=", 2)
        assert p.count("balloon: target=0 pages") == 1
        assert await qmp.execute("query-balloon") == {"actual": RAM}
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.disconnect()

    run(body())


def test_bogus_frames_are_ignored(petrel, tmpdir_short):
    p, sock = start(petrel, tmpdir_short,
                    "petrel.test=balloon petrel.balloon.bogus=2 petrel.balloon.pool=16777216")
    assert p.wait_line("balloon: bogus") == "balloon: bogus pfns=8 buffers=1 ok"
    p.wait_line("balloon: ready target=0")

    async def body():
        qmp = await connect(sock)
        # Nothing bogus reached the balloon.
        assert await qmp.execute("query-balloon") == {"actual": RAM}
        await qmp.execute("balloon", {"value": RAM - 4 * MiB})
        assert p.wait_line("balloon: actual=") == "balloon: actual=1024 pages"
        assert await qmp.execute("query-balloon") == {"actual": RAM - 4 * MiB}
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.disconnect()

    run(body())
    p.stop()
    err = p.stderr.decode()
    assert "ignored 4 page(s) outside guest RAM" in err, err
    assert "outside guest memory" in err, err


def test_without_a_device(petrel, tmpdir_short):
    p, sock = start(petrel, tmpdir_short, "petrel.test=idle", device=False)
    p.wait_line("idle: ready")

    async def body():
        qmp = await connect(sock)
        not_active = ("DeviceNotActive", "No balloon device has been activated")
        assert await error_of(qmp, "query-balloon") == not_active
        # The device is looked for before the value, as in QEMU.
        for value in (1 << 20, 0, -5):
            assert await error_of(qmp, "balloon", value=value) == not_active
        await qmp.disconnect()

    run(body())


def test_memory_queries(petrel, tmpdir_short):
    p, sock = start(petrel, tmpdir_short, "petrel.test=idle")
    p.wait_line("idle: ready")

    async def body():
        qmp = await connect(sock)
        # Guest RAM as QEMU's pc.ram backend, flags as petrel maps it: private,
        # MAP_NORESERVE, not madvised for KSM, dumped.
        assert await qmp.execute("query-memdev") == [{
            "id": "pc.ram", "size": RAM, "merge": False, "dump": True, "prealloc": False,
            "share": False, "reserve": False, "host-nodes": [], "policy": "default",
        }]
        assert await qmp.execute("query-memory-devices") == []
        pci = await qmp.execute("query-pci")
        fn = [d for d in pci[0]["devices"] if d["qdev_id"] == "balloon0"]
        assert len(fn) == 1 and fn[0]["class_info"] == {"class": 0x00ff}, pci
        assert fn[0]["id"]["device"] == 0x1045
        await qmp.disconnect()

    run(body())
