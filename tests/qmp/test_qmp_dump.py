"""Guest memory dumps against petrel running the test guest's `memfill` scenario (a buffer
with a known pattern, then a tick line every 100 ms): dump-guest-memory (ELF vmcore, with and
without paging, filtered, detached), query-dump, DUMP_COMPLETED, memsave and pmemsave, and
their errors. The vmcores are checked with binutils' readelf and by parsing them here."""

import asyncio
import os
import re
import struct
import subprocess
import time

import pytest

from conftest import KERNEL, close_after_exit, run
from conftest import connect as client, error_of, next_event

MiB = 1 << 20
PATTERN_RE = re.compile(r"memfill: addr=0x([0-9a-f]+) len=(\d+) pattern=0x([0-9a-f]+) "
                        r"cr3=0x([0-9a-f]+) alias=0x([0-9a-f]+)")
# Where the guest maps its low 1 GiB a second time (pml4 slot 256).
ALIAS_BASE = 0xffff800000000000


def expected_pattern(addr, length, pattern):
    """What the guest put in its buffer: pattern ^ address, one 8-byte word at a time."""
    return b"".join(struct.pack("<Q", pattern ^ (addr + 8 * i)) for i in range(length // 8))


def kernel_range():
    """The guest image's [start, end) in memory, from its PT_LOAD."""
    with open(KERNEL, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        p_type, _, _, vaddr, _, _, memsz, _ = struct.unpack_from("<IIQQQQQQ", data,
                                                                 phoff + 56 * i)
        if p_type == 1:
            return vaddr, vaddr + memsz
    raise AssertionError("the guest has no PT_LOAD")


class Core:
    """An ELF64 vmcore: its program headers and notes."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        d = self.data
        assert d[:4] == b"\x7fELF" and d[4] == 2 and d[5] == 1, "not ELF64 little endian"
        self.type, self.machine = struct.unpack_from("<HH", d, 16)
        phoff, = struct.unpack_from("<Q", d, 32)
        phnum, = struct.unpack_from("<H", d, 56)
        self.phdrs = []
        for i in range(phnum):
            p_type, _, off, vaddr, paddr, filesz, memsz, _ = struct.unpack_from(
                "<IIQQQQQQ", d, phoff + 56 * i)
            self.phdrs.append(dict(type=p_type, offset=off, vaddr=vaddr, paddr=paddr,
                                   filesz=filesz, memsz=memsz))
        note = self.phdrs[0]
        assert note["type"] == 4, "the first program header is not PT_NOTE"
        self.notes = []
        at, end = note["offset"], note["offset"] + note["filesz"]
        while at < end:
            namesz, descsz, ntype = struct.unpack_from("<III", d, at)
            name = d[at + 12:at + 12 + namesz - 1].decode()
            desc_at = at + 12 + (namesz + 3) // 4 * 4
            self.notes.append((name, ntype, d[desc_at:desc_at + descsz]))
            at = desc_at + (descsz + 3) // 4 * 4

    def loads(self):
        return [p for p in self.phdrs if p["type"] == 1]

    def prstatus(self):
        """(pid, rip, rsp) of each CORE note."""
        out = []
        for name, ntype, desc in self.notes:
            if name == "CORE":
                assert ntype == 1 and len(desc) == 336
                pid, = struct.unpack_from("<I", desc, 32)
                regs = struct.unpack_from("<27Q", desc, 112)
                out.append((pid, regs[16], regs[19]))
        return out

    def cpu_states(self):
        """(rip, cr3) of each QEMU note, checking version and size."""
        out = []
        for name, ntype, desc in self.notes:
            if name == "QEMU":
                version, size = struct.unpack_from("<II", desc, 0)
                assert (ntype, version, size, len(desc)) == (0, 1, 440, 440)
                rip, = struct.unpack_from("<Q", desc, 8 + 16 * 8)
                cr3, = struct.unpack_from("<Q", desc, 392 + 3 * 8)
                out.append((rip, cr3))
        return out

    def bytes_at(self, phys, length):
        """Guest physical bytes, found through the PT_LOADs."""
        for p in self.loads():
            if p["paddr"] <= phys and phys + length <= p["paddr"] + p["filesz"]:
                at = p["offset"] + phys - p["paddr"]
                return self.data[at:at + length]
        raise AssertionError(f"no PT_LOAD holds 0x{phys:x}+{length}")

    def bytes_at_virtual(self, virt, length):
        """Guest virtual bytes, found through the PT_LOADs' virtual addresses."""
        for p in self.loads():
            if p["vaddr"] <= virt and virt + length <= p["vaddr"] + p["filesz"]:
                at = p["offset"] + virt - p["vaddr"]
                return self.data[at:at + length]
        raise AssertionError(f"no PT_LOAD maps 0x{virt:x}+{length}")


def readelf(path):
    r = subprocess.run(["readelf", "-h", "-l", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr and "Error" not in r.stderr, r.stderr
    return r.stdout


@pytest.fixture
def memfill(petrel, tmpdir_short):
    """petrel with 2 vCPUs and 128 MiB, the guest ticking after it filled its buffer; yields
    (process, socket path, (addr, len, pattern, cr3)); the buffer is also mapped at
    ALIAS_BASE + addr."""
    def start(extra_append=""):
        sock = os.path.join(tmpdir_short, "qmp.sock")
        p = petrel(["-qmp", f"unix:{sock},server=on,wait=off", "-smp", "2"],
                   append=f"petrel.test=memfill {extra_append}")
        p.wait_socket("qmp.sock")
        m = PATTERN_RE.match(p.wait_line("memfill: addr="))
        p.wait_line("memfill: tick 1")
        assert int(m[5], 16) == ALIAS_BASE + int(m[1], 16), m[0]
        return p, sock, (int(m[1], 16), int(m[2]), int(m[3], 16), int(m[4], 16))
    return start


def ticks(p):
    return p.count("memfill: tick")


async def ticking(p, since, more=1, timeout=10):
    """Whether `more` tick lines came after the count `since`: the guest runs."""
    deadline = time.monotonic() + timeout
    while ticks(p) < since + more and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return ticks(p) >= since + more


async def running_then_quit(qmp, p, since):
    """Checks that the guest still runs (status, and a tick after `since`), then quits."""
    assert (await qmp.execute("query-status"))["status"] == "running"
    assert await ticking(p, since), "the guest stopped ticking"
    await qmp.execute("quit")
    await close_after_exit(qmp)


def test_elf_dump_holds_registers_and_memory(memfill, tmpdir_short):
    p, sock, (addr, length, pattern, cr3) = memfill()
    core = os.path.join(tmpdir_short, "vmcore")

    async def go():
        qmp = await client(sock)
        assert await qmp.execute("query-dump") == {"status": "none", "completed": 0, "total": 0}
        # Paused, so that memory and registers stay as dumped for the comparisons.
        await qmp.execute("stop")
        cpus = await qmp.execute("query-cpus")
        assert await qmp.execute("dump-guest-memory",
                                 {"paging": False, "protocol": f"file:{core}"}) == {}
        # QEMU reports DUMP_COMPLETED for a dump that is not detached too.
        ev = await next_event(qmp, "DUMP_COMPLETED")
        assert ev["data"] == {"result": {"status": "completed", "completed": 128 * MiB,
                                         "total": 128 * MiB}}
        assert await qmp.execute("query-dump") == ev["data"]["result"]
        # pmemsave of each PT_LOAD's range gives its bytes.
        elf = Core(core)
        for i, load in enumerate(elf.loads()):
            out = os.path.join(tmpdir_short, f"pmem{i}")
            await qmp.execute("pmemsave", {"val": load["paddr"], "size": load["filesz"],
                                           "filename": out})
            with open(out, "rb") as f:
                want = f.read()
            got = elf.data[load["offset"]:load["offset"] + load["filesz"]]
            assert got == want, f"PT_LOAD {i} differs from pmemsave"
        # The dump did not resume the paused guest; cont does.
        assert (await qmp.execute("query-status"))["status"] == "paused"
        n = ticks(p)
        await qmp.execute("cont")
        assert await ticking(p, n), "the guest did not run after cont"
        await qmp.execute("quit")
        await close_after_exit(qmp)
        return cpus

    cpus = run(go())
    out = readelf(core)
    assert "CORE (Core file)" in out and "X86-64" in out
    assert out.count("NT_PRSTATUS") == 2
    elf = Core(core)
    assert (elf.type, elf.machine) == (4, 62)
    # One PT_LOAD for the RAM, virtual = physical without paging, as QEMU 7.2 writes it.
    assert [(l["paddr"], l["vaddr"], l["filesz"], l["memsz"]) for l in elf.loads()] == \
        [(0, 0, 128 * MiB, 128 * MiB)]
    assert elf.bytes_at(addr, length) == expected_pattern(addr, length, pattern)
    # Registers: pids 1 and 2, every rip inside the guest image, the BSP's CR3 as printed.
    lo, hi = kernel_range()
    notes = elf.prstatus()
    assert [pid for pid, _, _ in notes] == [1, 2]
    for _, rip, _ in notes:
        assert lo <= rip < hi, f"rip 0x{rip:x} outside the guest image"
    states = elf.cpu_states()
    assert len(states) == 2
    assert states[0][1] == cr3
    assert [rip for rip, _ in states] == [rip for _, rip, _ in notes]
    # Paused: the notes' rips are what query-cpus showed as pc (CS base 0).
    assert [c["pc"] for c in sorted(cpus, key=lambda c: c["CPU"])] == \
        [rip for _, rip, _ in notes]


def test_paging_dump_maps_virtual_addresses(memfill, tmpdir_short):
    p, sock, (addr, length, pattern, _) = memfill()
    core = os.path.join(tmpdir_short, "vmcore")

    async def go():
        qmp = await client(sock)
        await qmp.execute("dump-guest-memory", {"paging": True, "protocol": f"file:{core}"})
        await qmp.execute("quit")
        await close_after_exit(qmp)

    run(go())
    readelf(core)
    elf = Core(core)
    loads = elf.loads()
    # The guest maps its low 4 GiB one to one, and its low 1 GiB again at ALIAS_BASE: RAM is
    # one run in each, and both PT_LOADs hold the same bytes.
    assert [(l["paddr"], l["vaddr"], l["filesz"]) for l in loads] == \
        [(0, 0, 128 * MiB), (0, ALIAS_BASE, 128 * MiB)]
    assert loads[0]["offset"] == loads[1]["offset"]
    want = expected_pattern(addr, length, pattern)
    assert elf.bytes_at(addr, length) == want
    assert elf.bytes_at_virtual(ALIAS_BASE + addr, length) == want


def test_filtered_dump_and_its_errors(memfill, tmpdir_short):
    p, sock, (addr, length, pattern, _) = memfill()
    core = os.path.join(tmpdir_short, "vmcore")

    async def go():
        qmp = await client(sock)
        proto = f"file:{core}"
        # Straddling the end of RAM: only RAM is dumped.
        await qmp.execute("dump-guest-memory", {"paging": False, "protocol": proto,
                                                "begin": 128 * MiB - MiB, "length": 2 * MiB})
        assert (await next_event(qmp, "DUMP_COMPLETED"))["data"]["result"]["total"] == MiB
        elf = Core(core)
        assert [(l["paddr"], l["filesz"]) for l in elf.loads()] == [(127 * MiB, MiB)]
        await qmp.execute("dump-guest-memory", {"paging": False, "protocol": proto,
                                                "begin": addr, "length": length})
        elf = Core(core)
        assert [(l["paddr"], l["filesz"]) for l in elf.loads()] == [(addr, length)]
        assert elf.bytes_at(addr, length) == expected_pattern(addr, length, pattern)
        errors = [
            ({"begin": 0}, "Parameter 'length' is missing"),
            ({"length": 4096}, "Parameter 'begin' is missing"),
            ({"begin": 0, "length": 0}, "Invalid parameter 'length'"),
            ({"begin": 512 * MiB, "length": 4096}, "dump: no guest memory to dump"),
            ({"begin": -1, "length": 4096}, "Invalid parameter 'begin'"),
        ]
        for args, desc in errors:
            assert await error_of(qmp, "dump-guest-memory", paging=False, protocol=proto,
                                  **args) == ("GenericError", desc), args
        # A dump that failed to start leaves status "failed".
        assert (await qmp.execute("query-dump"))["status"] == "failed"
        await running_then_quit(qmp, p, n)

    n = ticks(p)
    run(go())


def test_detached_dump_runs_while_the_guest_does(memfill, tmpdir_short):
    """The dump goes into a pipe the test does not read at first, so it stays active; the
    guest keeps ticking, a second dump is refused, and draining the pipe completes it."""
    p, sock, (addr, length, pattern, _) = memfill()
    rfd, wfd = os.pipe()

    async def go():
        qmp = await client(sock)
        qmp.send_fd_scm(wfd)
        await qmp.execute("getfd", {"fdname": "dumpfd"})
        os.close(wfd)
        before = ticks(p)
        await qmp.execute("dump-guest-memory", {"paging": False, "protocol": "fd:dumpfd",
                                                "detach": True})
        # QEMU takes the descriptor away from the monitor.
        assert await error_of(qmp, "closefd", fdname="dumpfd") == \
            ("GenericError", "File descriptor named 'dumpfd' not found")
        q = await qmp.execute("query-dump")
        assert q["status"] == "active" and q["total"] == 128 * MiB and q["completed"] < q["total"]
        assert await error_of(qmp, "dump-guest-memory", paging=False,
                              protocol=f"file:{tmpdir_short}/second") == \
            ("GenericError", "There is a dump in process, please wait.")
        assert not os.path.exists(f"{tmpdir_short}/second")
        assert await ticking(p, before, 5), "the guest did not run during the dump"
        assert (await qmp.execute("query-status"))["status"] == "running"
        assert (await qmp.execute("query-dump"))["status"] == "active"
        # Drain the pipe on a thread while waiting for the event.
        chunks = []

        def drain():
            while True:
                b = os.read(rfd, 1 << 20)
                if not b:
                    return
                chunks.append(b)
        loop = asyncio.get_running_loop()
        reader = loop.run_in_executor(None, drain)
        ev = await next_event(qmp, "DUMP_COMPLETED")
        await reader
        assert ev["data"] == {"result": {"status": "completed", "completed": 128 * MiB,
                                         "total": 128 * MiB}}
        await qmp.execute("quit")
        await close_after_exit(qmp)
        return b"".join(chunks)

    data = run(go())
    os.close(rfd)
    path = os.path.join(tmpdir_short, "piped")
    with open(path, "wb") as f:
        f.write(data)
    readelf(path)
    elf = Core(path)
    assert elf.bytes_at(addr, length) == expected_pattern(addr, length, pattern)


def test_write_failures_are_reported(memfill, tmpdir_short, tiny_fs):
    """/dev/full fails at the ELF header; a 4 MiB tmpfs runs out in the middle of memory
    (the guest touched every page, so nothing is left as a hole)."""
    p, sock, _ = memfill("petrel.memfill.touch=1")
    n = ticks(p)

    async def go():
        qmp = await client(sock)
        assert await error_of(qmp, "dump-guest-memory", paging=False,
                              protocol="file:/dev/full") == \
            ("GenericError", "dump: failed to write elf header: No space left on device")
        ev = await next_event(qmp, "DUMP_COMPLETED")
        assert ev["data"]["result"]["status"] == "failed"
        assert ev["data"]["error"] == "dump: failed to write elf header: No space left on device"
        await qmp.execute("dump-guest-memory", {"paging": False, "detach": True,
                                                "protocol": f"file:{tiny_fs}/vmcore"})
        ev = await next_event(qmp, "DUMP_COMPLETED")
        assert ev["data"]["error"] == "dump: failed to save memory: No space left on device"
        result = ev["data"]["result"]
        assert result["status"] == "failed" and 0 < result["completed"] < result["total"]
        assert await qmp.execute("query-dump") == result
        await running_then_quit(qmp, p, n)

    run(go())


def test_bad_destinations(memfill, tmpdir_short):
    p, sock, _ = memfill()

    async def go():
        qmp = await client(sock)
        cases = [
            ("bogus:/tmp/x", "Invalid parameter 'protocol'"),
            ("/tmp/x", "Invalid parameter 'protocol'"),
            ("file:/nonexistent/dir/vmcore",
             "Could not open '/nonexistent/dir/vmcore': No such file or directory"),
            ("fd:nosuch", "File descriptor named 'nosuch' has not been found"),
        ]
        for proto, desc in cases:
            assert await error_of(qmp, "dump-guest-memory", paging=False, protocol=proto) == \
                ("GenericError", desc), proto
        # None of them started a dump.
        assert (await qmp.execute("query-dump"))["status"] == "none"
        await qmp.execute("quit")
        await close_after_exit(qmp)

    run(go())


def test_memsave_and_pmemsave(memfill, tmpdir_short):
    p, sock, (addr, length, pattern, _) = memfill()
    want = expected_pattern(addr, length, pattern)

    def read(name):
        with open(os.path.join(tmpdir_short, name), "rb") as f:
            return f.read()

    async def go():
        qmp = await client(sock)
        d = tmpdir_short
        await qmp.execute("memsave", {"val": addr, "size": length, "filename": f"{d}/v0"})
        await qmp.execute("memsave", {"val": addr + 8, "size": 64, "filename": f"{d}/v1",
                                      "cpu-index": 1})
        await qmp.execute("pmemsave", {"val": addr, "size": length, "filename": f"{d}/p0"})
        assert read("v0") == want and read("p0") == want
        # Through the page tables: the alias is far beyond RAM as a physical address. QAPI's
        # int is signed, so a higher-half address goes as its two's complement, as with QEMU.
        await qmp.execute("memsave", {"val": ALIAS_BASE + addr - (1 << 64), "size": length,
                                      "filename": f"{d}/va", "cpu-index": 1})
        assert read("va") == want
        assert read("v1") == want[8:72]
        # Beyond RAM, physical memory reads as zeros (QEMU's unassigned memory).
        await qmp.execute("pmemsave", {"val": 128 * MiB - 4096, "size": 8192,
                                       "filename": f"{d}/p1"})
        assert read("p1")[4096:] == bytes(4096)
        # Virtual memory must be mapped RAM: the part before the hole is written in
        # 1024-byte chunks, then the error.
        assert await error_of(qmp, "memsave", val=128 * MiB - 4096, size=8192,
                              filename=f"{d}/v2") == \
            ("GenericError", "Invalid addr 0x0000000007fff000/size 8192 specified")
        assert len(read("v2")) == 4096
        assert await error_of(qmp, "memsave", val=0x7fff00000000, size=16,
                              filename=f"{d}/v3") == \
            ("GenericError", "Invalid addr 0x00007fff00000000/size 16 specified")
        for cpu in (2, -1):
            assert await error_of(qmp, "memsave", val=addr, size=16, filename=f"{d}/v4",
                                  **{"cpu-index": cpu}) == \
                ("GenericError", "Parameter 'cpu-index' expects a CPU number")
        assert not os.path.exists(f"{d}/v4")
        for cmd in ("memsave", "pmemsave"):
            assert await error_of(qmp, cmd, val=addr, size=16, filename="/nonexistent/m") == \
                ("GenericError", "Could not open '/nonexistent/m': No such file or directory")
            assert await error_of(qmp, cmd, val=addr, size=-1, filename=f"{d}/neg") == \
                ("GenericError", "Parameter 'size' expects a non-negative number")
        await running_then_quit(qmp, p, n)

    n = ticks(p)
    run(go())
