#!/usr/bin/env bash
# Builds petrel and the test guest, then boots the guest with its serial console on this
# terminal. Extra arguments go to petrel (e.g. -smp 4 -m 1G).
set -euo pipefail
cd "$(dirname "$0")/.."
bash resources/build-guest.sh >/dev/null
cargo build --release --locked -q -p petrel-vmm
exec target/release/petrel -kernel resources/out/petrel-guest.elf -m 256M -smp 2 -nographic "$@"
