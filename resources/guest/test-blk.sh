#!/usr/bin/env bash
# QEMU check of the `blk` scenario (virtio-blk over modern virtio-pci).
#
#   resources/guest/test-blk.sh [microvm|q35]     (default microvm)
#
# Builds the guest, then for a raw and a qcow2 image: writes a pattern with
# the guest, checks the bytes on the host (raw: the file; qcow2: through
# qemu-img convert), re-reads it with petrel.blk.mode=read, and checks that a
# wrong pattern gives "blk: MISMATCH" and status 1. Needs qemu-system-x86_64,
# qemu-img, python3 and /dev/kvm. Exits 0 when every check passed.
set -euo pipefail

RES="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ELF="$("$RES/build-guest.sh")"
MACHINE="${1:-microvm}"
case "$MACHINE" in
    microvm) M=(-M microvm,pcie=on,rtc=on,acpi=on) ;;
    q35) M=(-M q35) ;;
    *) echo "usage: $0 [microvm|q35]" >&2; exit 2 ;;
esac
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

run() {   # run <image> <format> <cmdline...>; output in $TMP/out
    timeout 60 qemu-system-x86_64 -accel kvm -cpu host,-arch-capabilities "${M[@]}" -m 256M \
        -nodefaults -serial stdio -display none -no-reboot -kernel "$ELF" -append "petrel.test=blk $3" \
        -drive "file=$1,format=$2,if=none,id=d0" -device virtio-blk-pci,drive=d0,serial=abc \
        >"$TMP/out" 2>&1 || true
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
exit $fail
