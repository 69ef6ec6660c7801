#!/usr/bin/env bash
# QEMU check of the virtio-blk scenarios (virtio-blk over modern virtio-pci).
#
#   resources/guest/test-blk.sh [microvm|q35]     (default microvm)
#
# Builds the guest, then
# - blk, for a raw and a qcow2 image: writes a pattern with the guest, checks
#   the bytes on the host (raw: the file; qcow2: through qemu-img convert),
#   re-reads it with petrel.blk.mode=read, and checks that a wrong pattern
#   gives "blk: MISMATCH" and status 1;
# - blk with petrel.blk.chunk, and with a write error under werror=stop: the
#   VM pauses for longer than petrel.blk.timeout, `cont` retries, all ok;
# - blkbench in each mode (short runs): a sane done line, its us against the
#   host's clock between the start and done lines, the written bytes (the
#   random offsets recomputed from the LCG);
# - blkresize: QMP block_resize (MSI-X config vector, then polled without
#   MSI-X), and the timeout.
# Needs qemu-system-x86_64, qemu-img, python3 and /dev/kvm. Exits 0 when
# every check passed. qemu-run.py (next to this script) runs QEMU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MACHINE="${1:-microvm}"
[[ $MACHINE == microvm || $MACHINE == q35 ]] || { echo "usage: $0 [microvm|q35]" >&2; exit 2; }
"$HERE/../build-guest.sh" >/dev/null
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

guest() {  # guest <drive options> <extra device options> <cmdline> [qemu-run.py options]
    local drive=$1 dev=$2 cmdline=$3
    shift 3
    python3 "$HERE/qemu-run.py" --machine "$MACHINE" --append "$cmdline" --out "$TMP/out" \
        --qmp "$TMP/qmp.sock" "$@" -- \
        -drive "$drive,if=none,id=d0" -device "virtio-blk-pci,drive=d0,serial=abc$dev" >"$TMP/host" || true
}
run() {   # run <image> <format> <cmdline...>; output in $TMP/out
    guest "file=$1,format=$2" "" "petrel.test=blk $3"
}
expect() {  # expect <what> <grep -E pattern>
    if grep -aqE "$2" "$TMP/out"; then echo "ok   $1"; else echo "FAIL $1 (no /$2/)"; fail=1; cat "$TMP/out"; fi
}
check_bytes() {  # check_bytes <raw file> <lba> <count> <pattern>
    if python3 - "$@" <<'PY'
import struct, sys
f, lba, count, pat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
data = open(f, 'rb').read()
for i in range(count):
    s = data[(lba + i) * 512:(lba + i + 1) * 512]
    if s != struct.pack('<Q', lba + i) + bytes([pat]) * 504:
        sys.exit('sector %d differs' % (lba + i))
for n in (lba - 1, lba + count):   # neighbours untouched (fresh image: zeros)
    if n >= 0 and data[n * 512:(n + 1) * 512] != bytes(512):
        sys.exit('sector %d was written' % n)
PY
    then echo "ok   host sees the pattern"; else echo "FAIL host check"; fail=1; fi
}

for fmt in raw qcow2; do
    img="$TMP/disk.$fmt"
    qemu-img create -q -f "$fmt" "$img" 16M
    run "$img" "$fmt" "petrel.blk.lba=100 petrel.blk.count=20 petrel.blk.pattern=0x3c"
    expect "$fmt write" '^blk: capacity=32768 size=512 ro=0 serial=abc$'
    expect "$fmt write ok" '^blk: write ok$'
    expect "$fmt flush ok" '^blk: flush ok$'
    expect "$fmt read ok" '^blk: read ok$'
    expect "$fmt irqs" '^blk: irqs=[1-9]'
    expect "$fmt status" '^status: 0$'
    if [[ $fmt == raw ]]; then
        check_bytes "$img" 100 20 0x3c
    else
        qemu-img convert -f qcow2 -O raw "$img" "$TMP/conv.raw"
        check_bytes "$TMP/conv.raw" 100 20 0x3c
    fi
    run "$img" "$fmt" "petrel.blk.mode=read petrel.blk.lba=100 petrel.blk.count=20 petrel.blk.pattern=0x3c"
    expect "$fmt mode=read" '^blk: read ok$'
    if grep -aq '^blk: write ok' "$TMP/out"; then echo "FAIL $fmt mode=read wrote"; fail=1; fi
    run "$img" "$fmt" "petrel.blk.mode=read petrel.blk.lba=100 petrel.blk.count=20 petrel.blk.pattern=0x3d"
    expect "$fmt mismatch" '^blk: MISMATCH at lba 100$'
    expect "$fmt mismatch status" '^status: 1$'
done

# blk: many sectors per request; GET_ID + 8 writes + flush + 8 reads
img="$TMP/chunk.raw"
qemu-img create -q -f raw "$img" 16M
run "$img" raw "petrel.blk.lba=100 petrel.blk.count=2048 petrel.blk.chunk=256 petrel.blk.pattern=0x3c"
expect "chunk read ok" '^blk: read ok$'
expect "chunk irqs" '^blk: irqs=18$'
expect "chunk status" '^status: 0$'
check_bytes "$img" 100 2048 0x3c

# blk: the first write fails, werror=stop pauses the VM for twice the guest's
# timeout, cont retries it: the guest must just see the request complete
img="$TMP/werror.raw"
qemu-img create -q -f raw "$img" 16M
guest "format=raw,werror=stop,file.driver=blkdebug,file.image.filename=$img,file.inject-error.0.event=write_aio,file.inject-error.0.once=on" \
    "" "petrel.test=blk petrel.blk.timeout=1 petrel.blk.lba=100 petrel.blk.count=20 petrel.blk.pattern=0x3c" \
    --step status:io-error --step sleep:2 --step status:io-error --step 'qmp:{"execute":"cont"}'
expect "werror=stop resumed: read ok" '^blk: read ok$'
expect "werror=stop status" '^status: 0$'
check_bytes "$img" 100 20 0x3c

# blkbench: short runs of each mode on a 64 MiB disk
img="$TMP/bench.raw"
qemu-img create -q -f raw "$img" 64M
for mode in seqread randread seqwrite randwrite; do
    case $mode in   # defaults: seq bs=64K qd=4, rand bs=4K qd=32
        seq*) opts="petrel.blk.bytes=16777216" bs=65536 qd=4 ops=256 bytes=16777216 ;;
        rand*) opts="petrel.blk.ops=2000" bs=4096 qd=32 ops=2000 bytes=8192000 ;;
    esac
    guest "file=$img,format=raw" "" "petrel.test=blkbench petrel.blk.bench=$mode $opts petrel.blk.pattern=0x5a" \
        --span '^blkbench: start' '^blkbench: done'
    expect "blkbench $mode start" "^blkbench: start mode=$mode bs=$bs qd=$qd ops=$ops bytes=$bytes\$"
    expect "blkbench $mode done" "^blkbench: done mode=$mode bytes=$bytes ops=$ops us=[1-9][0-9]*\$"
    expect "blkbench $mode rate" '^blkbench: iops=[1-9][0-9]* bytes_per_s=[1-9][0-9]* irqs=[0-9]+$'
    expect "blkbench $mode status" '^status: 0$'
    # The guest's TSC time against the host's clock between the two lines
    # (plus printing the done line and pipe latency): within 5% + 20 ms.
    guest_us=$(grep -aoE '^blkbench: done .* us=[0-9]+' "$TMP/out" | sed 's/.*us=//' || true)
    host_us=$(sed -n 's/^host_us=//p' "$TMP/host")
    if [[ -n $guest_us && -n $host_us ]] &&
        (( host_us - guest_us <= host_us / 20 + 20000 && guest_us - host_us <= host_us / 20 + 20000 )); then
        echo "ok   blkbench $mode clock: guest ${guest_us} us, host ${host_us} us"
    else
        echo "FAIL blkbench $mode clock: guest '${guest_us}' us, host '${host_us}' us"; fail=1
    fi
done
# seqwrite wrote bytes 0-16 MiB; randwrite the LCG's 4 KiB blocks; nothing else
if python3 - "$img" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
bs, seq_end = 4096, 16 << 20
want = set(range(seq_end // bs))
x = 1
for _ in range(2000):
    x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    want.add((x >> 33) % (len(data) // bs))
pat, zero = b'\x5a' * bs, bytes(bs)
for blk in range(len(data) // bs):
    if data[blk * bs:(blk + 1) * bs] != (pat if blk in want else zero):
        sys.exit('block %d' % blk)
PY
then echo "ok   blkbench writes on the host"; else echo "FAIL blkbench writes on the host"; fail=1; fi

# blkresize: QMP block_resize 16 MiB -> 32 MiB while the guest waits
for dev in "" ",vectors=0"; do
    img="$TMP/resize.raw"
    qemu-img create -q -f raw "$img" 16M
    guest "file=$img,format=raw" "$dev" "petrel.test=blkresize" --step 'wait:^blkresize: waiting$' \
        --step 'qmp:{"execute":"block_resize","arguments":{"device":"d0","size":33554432}}'
    expect "blkresize$dev capacity" '^blk: capacity=32768 size=512 ro=0 serial=abc$'
    expect "blkresize$dev new capacity" '^blkresize: capacity=65536 generation=1$'
    expect "blkresize$dev read last" '^blkresize: read last ok$'
    expect "blkresize$dev status" '^status: 0$'
done
guest "file=$img,format=raw" "" "petrel.test=blkresize petrel.blk.timeout=1"
expect "blkresize timeout" '^blkresize: FAILED timeout$'
expect "blkresize timeout status" '^status: 1$'
exit $fail
