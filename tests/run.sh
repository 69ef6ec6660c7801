#!/usr/bin/env bash
# Runs petrel's whole test suite: unit tests of every crate and the integration tests that
# boot the test guest under KVM. Installs what a fresh machine lacks, builds the test guest,
# then runs cargo test. Usage: tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ld >/dev/null || need_apt+=(binutils)
command -v make >/dev/null || need_apt+=(make)
# The ACPI table tests check our tables with ACPICA's disassembler.
command -v iasl >/dev/null || need_apt+=(acpica-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo is required (install Rust with rustup)" >&2
    exit 1
fi
if [ ! -w /dev/kvm ]; then
    echo "tests/run.sh: /dev/kvm is missing or not writable; the integration tests need KVM" >&2
    exit 1
fi

bash resources/build-guest.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary (cargo's own last line is the
# doc-test run of the last crate).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
