#!/usr/bin/env bash
# Benchmarks petrel against QEMU 7.2 in the same run (start-up time, memory overhead, port-I/O
# exit rate, QMP round trips, virtio-blk, virtio-net, dump-guest-memory) and prints a report;
# pass --write to record it in docs/benchmarks.md, --only blk|net|dump for one group.
# Installs QEMU 7.2 (Debian bookworm's qemu-system-x86) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq
    # The image's qemu-utils from backports blocks the 7.2 package; take bookworm's.
    apt-get install -y -qq --allow-downgrades qemu-system-x86 qemu-utils/bookworm
fi
bash resources/build-guest.sh >/dev/null
cargo build --release --locked -q -p petrel-vmm -p petrel-tests --bins
exec python3 tests/bench/bench.py "$@"
