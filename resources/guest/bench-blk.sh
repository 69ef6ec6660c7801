#!/usr/bin/env bash
# blkbench under QEMU: the reference numbers for petrel's virtio-blk.
#
#   resources/guest/bench-blk.sh [microvm|q35] [petrel.blk.* words...]
#
# Runs the four modes (seqread, randread, seqwrite, randwrite) with their
# defaults on a fresh 256 MiB raw image (preallocation=full, so every read
# hits written blocks; host page cache as it is), each in its own VM. Extra
# words are appended to every command line (e.g. petrel.blk.qd=1). Prints one
# line per mode: the guest's time, the host's time between the serial start
# and done lines, MB/s (10^6 bytes) and IOPS from the guest's time. Needs
# qemu-system-x86_64, qemu-img, python3 and /dev/kvm.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MACHINE="${1:-microvm}"
[[ $MACHINE == microvm || $MACHINE == q35 ]] || { echo "usage: $0 [microvm|q35] [petrel.blk.* words...]" >&2; exit 2; }
shift || true
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
qemu-img create -q -f raw -o preallocation=full "$TMP/disk.raw" 256M

status=0
for mode in seqread randread seqwrite randwrite; do
    python3 "$HERE/qemu-run.py" --machine "$MACHINE" --append "petrel.test=blkbench petrel.blk.bench=$mode $*" \
        --timeout 600 --out "$TMP/out" --span '^blkbench: start' '^blkbench: done' -- \
        -drive "file=$TMP/disk.raw,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0,serial=bench \
        >"$TMP/host" || true
    done_line=$(grep -a '^blkbench: done ' "$TMP/out" || true)
    if [[ -z $done_line ]]; then
        echo "$mode: FAILED"; grep -a -E '^(blkbench|blk|virtio|panic|status)' "$TMP/out" || cat "$TMP/out"
        status=1
        continue
    fi
    start=$(grep -a '^blkbench: start ' "$TMP/out")
    bytes=${done_line#*bytes=}; bytes=${bytes%% *}
    ops=${done_line#*ops=}; ops=${ops%% *}
    us=${done_line##*us=}
    host_us=$(sed -n 's/^host_us=//p' "$TMP/host")
    printf '%-9s %-30s guest_us=%-9s host_us=%-9s MB/s=%-7s IOPS=%s\n' "$mode" "${start#*mode=$mode }" \
        "$us" "$host_us" "$(( bytes / us ))" "$(( ops * 1000000 / us ))"
done
exit $status
