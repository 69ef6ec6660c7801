"""The block-device QMP commands against petrel with real disks the test guest drives:
queries, resize, throttling, werror=stop on a full filesystem, blockdev-add and errors."""

import os
import subprocess
import time

from conftest import close_after_exit, connect, error_of, next_event, run

MiB = 1 << 20


def qemu_img(*args, cwd=None):
    subprocess.run(["qemu-img", *args], check=True, cwd=cwd, capture_output=True)


def raw(path, size=16 * MiB):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def start(petrel, tmpdir, disk_args, append, extra=()):
    sock = os.path.join(tmpdir, "qmp.sock")
    p = petrel(["-qmp", f"unix:{sock},server=on,wait=off", *disk_args, *extra], append=append)
    p.wait_socket("qmp.sock")
    return p, sock


def test_queries_follow_the_disks(petrel, tmpdir_short):
    base = raw(os.path.join(tmpdir_short, "base.raw"))
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", "ov.qcow2",
             cwd=tmpdir_short)
    ov = os.path.join(tmpdir_short, "ov.qcow2")
    second = raw(os.path.join(tmpdir_short, "second.raw"), 8 * MiB)
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={ov},if=none,id=drive0,node-name=top",
                     "-device", "virtio-blk-pci,drive=drive0,id=disk0,addr=0x1",
                     "-drive", f"file={second},format=raw,if=virtio,readonly=on"],
                    "petrel.test=blk petrel.blk.lba=8 petrel.blk.count=16", ["-no-shutdown"])
    assert p.wait_line("status: ") == "status: 0", p.console()

    async def body():
        qmp = await connect(sock)
        blocks = await qmp.execute("query-block")
        assert [b["device"] for b in blocks] == ["drive0", "virtio0"]
        d0, v0 = blocks
        assert d0["qdev"] == "/machine/peripheral/disk0/virtio-backend"
        assert v0["qdev"] == "/machine/peripheral-anon/device[0]/virtio-backend"
        assert (d0["removable"], d0["locked"], d0["type"], d0["io-status"]) == \
            (False, False, "unknown", "ok")
        ins = d0["inserted"]
        assert (ins["node-name"], ins["drv"], ins["ro"], ins["backing_file_depth"]) == \
            ("top", "qcow2", False, 1)
        assert ins["image"]["backing-image"]["filename"] == base
        assert ins["image"]["virtual-size"] == 16 * MiB
        assert v0["inserted"]["ro"] is True and v0["inserted"]["drv"] == "raw"

        stats = await qmp.execute("query-blockstats")
        s0 = next(s for s in stats if s["device"] == "drive0")
        st = s0["stats"]
        # GET_ID, 16 sectors written in one request, a flush, 16 read back.
        assert st["wr_bytes"] == 16 * 512 and st["wr_operations"] >= 1
        assert st["rd_bytes"] == 16 * 512 and st["flush_operations"] >= 1
        assert st["wr_highest_offset"] == 24 * 512
        assert st["wr_total_time_ns"] > 0 and "idle_time_ns" in st
        assert s0["node-name"] == "top" and "node-name" in s0["parent"]
        assert "backing" in s0
        s1 = next(s for s in stats if s["device"] == "virtio0")
        assert s1["stats"]["wr_bytes"] == 0

        names = [n["node-name"] for n in await qmp.execute("query-named-block-nodes")]
        assert "top" in names and len(names) == 6, names

        pci = (await qmp.execute("query-pci"))[0]["devices"]
        disk = next(d for d in pci if d["qdev_id"] == "disk0")
        assert disk["slot"] == 1 and disk["id"]["vendor"] == 0x1af4
        assert disk["id"]["device"] == 0x1042 and disk["class_info"]["class"] == 0x0100
        bar = disk["regions"][0]
        assert bar["type"] == "memory" and bar["mem_type_64"] and bar["address"] > 0
        assert any(d["class_info"].get("desc") == "Host bridge" for d in pci)
        await qmp.disconnect()

    run(body())


def start_blkresize(petrel, tmpdir, img):
    """Petrel with the raw `img` as drive d0 and the guest waiting in `blkresize`.
    -no-shutdown: the guest powers off once it has read the new last sector, which must
    not close the monitor before the test's queries have answered."""
    p, sock = start(petrel, tmpdir,
                    ["-drive", f"file={img},format=raw,if=none,id=d0",
                     "-device", "virtio-blk-pci,drive=d0", "-no-shutdown"],
                    "petrel.test=blkresize")
    p.wait_line("blkresize: waiting")
    return p, sock


async def resize_seen_by_guest(qmp, p, img, size):
    """block_resize of drive d0, a raw `img` the guest's `blkresize` scenario waits on: the
    guest gets the new capacity and reads its last sector; file and query-block agree."""
    await qmp.execute("block_resize", {"device": "d0", "size": size})
    line = p.wait_line("blkresize: capacity=")
    assert line.startswith(f"blkresize: capacity={size // 512} "), line
    p.wait_line("blkresize: read last ok")
    assert os.path.getsize(img) == size
    blocks = await qmp.execute("query-block")
    assert blocks[0]["inserted"]["image"]["virtual-size"] == size


def test_resize_is_seen_by_the_guest(petrel, tmpdir_short):
    img = raw(os.path.join(tmpdir_short, "grow.raw"), 8 * MiB)
    p, sock = start_blkresize(petrel, tmpdir_short, img)

    async def body():
        qmp = await connect(sock)
        assert await error_of(qmp, "block_resize", device="d0", size=1000) == \
            ("GenericError", "The new size must be a multiple of 512")
        assert await error_of(qmp, "block_resize", device="nope", size=4096) == \
            ("GenericError", "Cannot find device='nope' nor node-name=''")
        await resize_seen_by_guest(qmp, p, img, 24 * MiB)
        await qmp.disconnect()

    run(body())
    assert p.wait_line("status: ") == "status: 0"


def test_resize_shrinks_raw_and_qcow2(petrel, tmpdir_short):
    img = raw(os.path.join(tmpdir_short, "shrink.raw"), 16 * MiB)
    qemu_img("create", "-q", "-f", "qcow2", "q.qcow2", "16M", cwd=tmpdir_short)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 8M", "q.qcow2"], check=True,
                   cwd=tmpdir_short, capture_output=True)
    q = os.path.join(tmpdir_short, "q.qcow2")
    p, sock = start_blkresize(petrel, tmpdir_short, img)

    async def body():
        qmp = await connect(sock)
        # As QEMU 7.2: a raw disk shrinks, and the guest reads its new last sector.
        await resize_seen_by_guest(qmp, p, img, 4 * MiB)

        # A qcow2 node shrinks too, allocated clusters and all; its sizes stay 512-aligned.
        await qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": "q",
                                           "file": {"driver": "file", "filename": q}})
        assert await error_of(qmp, "block_resize", **{"node-name": "q", "size": 1000}) == \
            ("GenericError", "The new size must be a multiple of 512")
        await qmp.execute("block_resize", {"node-name": "q", "size": 3 * MiB + 512})
        nodes = await qmp.execute("query-named-block-nodes")
        node = next(n for n in nodes if n["node-name"] == "q")
        assert node["image"]["virtual-size"] == 3 * MiB + 512
        await qmp.execute("x-blockdev-del", {"node-name": "q"})
        assert p.wait_line("status: ") == "status: 0"
        await qmp.execute("quit")
        await close_after_exit(qmp)

    run(body())
    assert p.wait_exit() == 0
    qemu_img("check", "-q", "q.qcow2", cwd=tmpdir_short)
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", q], check=True,
                          capture_output=True, text=True).stdout
    assert '"virtual-size": %d' % (3 * MiB + 512) in info, info
    subprocess.run(["qemu-io", "-c", f"read -P 0x5a 0 {3 * MiB + 512}", "q.qcow2"],
                   check=True, cwd=tmpdir_short, capture_output=True)


def test_snapshot_on_shows_the_overlay(petrel, tmpdir_short, monkeypatch):
    tmp = os.path.join(tmpdir_short, "tmp")
    os.mkdir(tmp)
    monkeypatch.setenv("TMPDIR", tmp)
    base = raw(os.path.join(tmpdir_short, "base.raw"))
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={base},format=raw,if=none,id=drive0,node-name=orig,"
                               "snapshot=on,cache=none",
                     "-device", "virtio-blk-pci,drive=drive0,id=disk0", "-no-shutdown"],
                    "petrel.test=blk petrel.blk.lba=8 petrel.blk.count=16")
    assert p.wait_line("status: ") == "status: 0", p.console()

    async def body():
        qmp = await connect(sock)
        ins = (await qmp.execute("query-block"))[0]["inserted"]
        nodes = await qmp.execute("query-named-block-nodes")
        # The overlay, its file node, the image and the image's file node.
        assert len(nodes) == 4, nodes
        overlay_file = next(n for n in nodes if n["drv"] == "file" and n["file"] != base)
        tmpfile = overlay_file["file"]
        assert os.path.dirname(tmpfile) == tmp and os.path.basename(tmpfile).startswith("vl.")
        assert not os.path.exists(tmpfile)
        assert os.listdir(tmp) == []
        # As QEMU 7.2 shows it.
        name = ('json:{"backing": {"driver": "raw", "file": {"driver": "file", "filename": '
                f'"{base}"}}}}, "driver": "qcow2", "file": {{"driver": "file", '
                f'"filename": "{tmpfile}"}}}}')
        assert (ins["drv"], ins["ro"], ins["file"]) == ("qcow2", False, name)
        assert ins["node-name"].startswith("#block")
        assert (ins["backing_file"], ins["backing_file_depth"]) == (base, 1)
        assert ins["cache"] == {"writeback": True, "direct": False, "no-flush": True}
        image = ins["image"]
        assert (image["filename"], image["format"], image["virtual-size"]) == \
            (name, "qcow2", 16 * MiB)
        assert "backing-filename" not in image
        assert image["backing-image"]["filename"] == base
        assert image["backing-image"]["format"] == "raw"
        orig = next(n for n in nodes if n["node-name"] == "orig")
        assert (orig["drv"], orig["ro"], orig["file"], orig["cache"]["direct"]) == \
            ("raw", True, base, True)
        assert overlay_file["cache"]["no-flush"] is True
        assert overlay_file["image"]["virtual-size"] > 0
        stats = (await qmp.execute("query-blockstats"))[0]
        assert stats["stats"]["wr_bytes"] == 16 * 512
        await qmp.execute("quit")
        await close_after_exit(qmp)

    run(body())
    assert p.wait_exit() == 0
    with open(base, "rb") as f:
        assert f.read() == bytes(16 * MiB), "the image was written"
    assert os.listdir(tmp) == []


def test_throttle_caps_throughput(petrel, tmpdir_short):
    img = raw(os.path.join(tmpdir_short, "t.raw"), 32 * MiB)
    limit = 4 * MiB
    total = 8 * MiB
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={img},format=raw,if=none,id=d0",
                     "-device", "virtio-blk-pci,drive=d0,id=disk0", "-S"],
                    f"petrel.test=blkbench petrel.blk.bench=seqwrite petrel.blk.bs=65536 "
                    f"petrel.blk.bytes={total}")

    async def body():
        qmp = await connect(sock)
        args = dict(bps=0, bps_rd=0, bps_wr=0, iops=0, iops_rd=0, iops_wr=0)
        assert await error_of(qmp, "block_set_io_throttle", device="d0", **{**args, "bps": -1}) \
            == ("GenericError", "bps/iops/max values must be within [0, 1000000000000000]")
        assert (await error_of(qmp, "block_set_io_throttle", device="nope", **args))[0] == \
            "DeviceNotFound"
        await qmp.execute("block_set_io_throttle", {**args, "device": "d0", "bps_wr": limit})
        ins = (await qmp.execute("query-block"))[0]["inserted"]
        assert ins["bps_wr"] == limit and ins["bps"] == 0
        await qmp.execute("cont")
        await qmp.disconnect()

    run(body())
    p.wait_line("blkbench: start")
    t0 = time.monotonic()
    done = p.wait_line("blkbench: done")
    host = time.monotonic() - t0
    us = int(done.split("us=")[1].split()[0])
    rate = total / (us / 1e6)
    # QEMU's buckets let a burst of a tenth of a second through first.
    assert abs(rate - limit) <= 0.10 * limit, (rate, limit, host)
    assert abs(total / host - limit) <= 0.15 * limit, (total / host, limit)


def test_werror_stop_on_a_full_disk_then_cont(petrel, tmpdir_short, tiny_fs):
    img = raw(os.path.join(tiny_fs, "full.raw"), 64 * MiB)
    filler = os.path.join(tiny_fs, "filler")
    with open(filler, "wb") as f:
        f.write(b"\xff" * (3 * MiB + 512 * 1024))
    # 2 MiB of writes in 64 KiB requests: about half fits.
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={img},format=raw,if=none,id=d0,werror=stop",
                     "-device", "virtio-blk-pci,drive=d0,id=disk0"],
                    "petrel.test=blk petrel.blk.count=4096 petrel.blk.chunk=128 "
                    "petrel.blk.timeout=120")

    async def body():
        qmp = await connect(sock)
        err = await next_event(qmp, "BLOCK_IO_ERROR")
        data = err["data"]
        assert (data["device"], data["operation"], data["action"], data["nospace"]) == \
            ("d0", "write", "stop", True), data
        assert data["reason"] == "No space left on device"
        await next_event(qmp, "STOP")
        status = await qmp.execute("query-status")
        assert (status["status"], status["running"]) == ("io-error", False)
        assert (await qmp.execute("query-block"))[0]["io-status"] == "nospace"
        os.unlink(filler)
        await qmp.execute("cont")
        await next_event(qmp, "RESUME")
        assert (await qmp.execute("query-block"))[0]["io-status"] == "ok"
        await qmp.disconnect()

    run(body())
    assert p.wait_line("blk: write ok")
    assert p.wait_line("status: ") == "status: 0", p.console()
    with open(img, "rb") as f:
        f.seek(4095 * 512)
        sector = f.read(512)
    assert sector[:8] == (4095).to_bytes(8, "little") and sector[8:] == b"\xa5" * 504


def test_blockdev_add_errors_keep_petrel_running(petrel, tmpdir_short):
    good = raw(os.path.join(tmpdir_short, "good.raw"))
    garbage = os.path.join(tmpdir_short, "garbage.qcow2")
    with open(garbage, "wb") as f:
        f.write(b"\x42" * 4096)
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={good},format=raw,if=none,id=d0",
                     "-device", "virtio-blk-pci,drive=d0,id=disk0"], "petrel.test=idle")

    async def body():
        qmp = await connect(sock)

        def node(name, driver, filename):
            return {"driver": driver, "node-name": name,
                    "file": {"driver": "file", "filename": filename}}

        missing = os.path.join(tmpdir_short, "missing.qcow2")
        assert await error_of(qmp, "blockdev-add", **node("n1", "qcow2", missing)) == \
            ("GenericError", f"Could not open '{missing}': No such file or directory")
        cls, desc = await error_of(qmp, "blockdev-add", **node("n2", "qcow2", garbage))
        assert cls == "GenericError" and garbage in desc, desc
        await qmp.execute("blockdev-add", node("n3", "raw", good))
        assert await error_of(qmp, "blockdev-add", **node("n3", "raw", good)) == \
            ("GenericError", "Duplicate nodes with node-name='n3'")
        names = [n["node-name"] for n in await qmp.execute("query-named-block-nodes")]
        assert "n3" in names
        # The node of a disk in use cannot go; an unused one can, once.
        in_use = (await qmp.execute("query-block"))[0]["inserted"]["node-name"]
        assert (await error_of(qmp, "x-blockdev-del", **{"node-name": in_use}))[0] == \
            "GenericError"
        await qmp.execute("x-blockdev-del", {"node-name": "n3"})
        assert await error_of(qmp, "x-blockdev-del", **{"node-name": "n3"}) == \
            ("GenericError", "Failed to find node with node-name='n3'")
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.disconnect()

    run(body())


def test_virtio_disks_are_not_removable(petrel, tmpdir_short):
    img = raw(os.path.join(tmpdir_short, "r.raw"))
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={img},format=raw,if=none,id=drive0",
                     "-device", "virtio-blk-pci,drive=drive0,id=disk0"], "petrel.test=idle")
    not_removable = ("GenericError", "Device 'drive0' is not removable")
    no_backend = ("GenericError", "Device does not have a block device backend")

    async def body():
        qmp = await connect(sock)
        assert await error_of(qmp, "eject", device="drive0") == not_removable
        assert await error_of(qmp, "eject", device="nope") == \
            ("DeviceNotFound", "Device 'nope' not found")
        assert await error_of(qmp, "eject", id="disk0", force=True) == no_backend
        for cmd in ["blockdev-open-tray", "blockdev-close-tray", "x-blockdev-remove-medium"]:
            assert await error_of(qmp, cmd, device="drive0") == not_removable
            assert await error_of(qmp, cmd, id="disk0") == no_backend
        assert await error_of(qmp, "x-blockdev-insert-medium", id="disk0",
                              **{"node-name": "x"}) == no_backend
        assert await error_of(qmp, "blockdev-change-medium", device="drive0",
                              filename=img) == not_removable
        assert await error_of(qmp, "change", device="drive0", target=img) == not_removable
        assert await error_of(qmp, "block_passwd", device="drive0", password="x") == \
            ("GenericError", "Device 'drive0' is not encrypted")
        qdev = "/machine/peripheral/disk0/virtio-backend"
        assert await error_of(qmp, "eject", id=qdev) == not_removable
        await qmp.disconnect()

    run(body())


def test_write_threshold_and_change_backing_file(petrel, tmpdir_short):
    raw(os.path.join(tmpdir_short, "base.raw"))
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", "ov.qcow2",
             cwd=tmpdir_short)
    ov = os.path.join(tmpdir_short, "ov.qcow2")
    p, sock = start(petrel, tmpdir_short,
                    ["-drive", f"file={ov},if=none,id=drive0,node-name=top",
                     "-device", "virtio-blk-pci,drive=drive0,id=disk0", "-S", "-no-shutdown"],
                    "petrel.test=blk petrel.blk.lba=8 petrel.blk.count=16 petrel.blk.chunk=16")

    async def body():
        qmp = await connect(sock)
        assert await error_of(qmp, "block-set-write-threshold",
                              **{"node-name": "nope", "write-threshold": 1}) == \
            ("GenericError", "Device 'nope' not found")
        await qmp.execute("block-set-write-threshold",
                          {"node-name": "top", "write-threshold": 4096})
        nodes = await qmp.execute("query-named-block-nodes")
        assert next(n for n in nodes if n["node-name"] == "top")["write_threshold"] == 4096
        await qmp.execute("cont")
        ev = await next_event(qmp, "BLOCK_WRITE_THRESHOLD")
        assert ev["data"] == {"node-name": "top", "amount-exceeded": 24 * 512 - 4096,
                              "write-threshold": 4096}
        nodes = await qmp.execute("query-named-block-nodes")
        assert next(n for n in nodes if n["node-name"] == "top")["write_threshold"] == 0

        assert await error_of(qmp, "change-backing-file", device="nope",
                              **{"image-node-name": "top", "backing-file": "x"}) == \
            ("DeviceNotFound", "Device 'nope' not found")
        await qmp.execute("change-backing-file",
                          {"device": "drive0", "image-node-name": "top",
                           "backing-file": "./base.raw"})
        ins = (await qmp.execute("query-block"))[0]["inserted"]
        assert ins["image"]["backing-filename"] == "./base.raw"
        await qmp.disconnect()

    run(body())
    assert p.wait_line("status: ") == "status: 0", p.console()
    p.stop()
    info = subprocess.run(["qemu-img", "info", "-U", ov], capture_output=True, text=True)
    assert "backing file: ./base.raw" in info.stdout, info.stdout
    subprocess.run(["qemu-img", "check", ov], check=True, capture_output=True)
