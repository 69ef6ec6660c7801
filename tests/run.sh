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
# The nested Linux tier (tests/nested_linux.rs, resources/nested/) runs Linux under QEMU/TCG:
# Debian's qemu-system-x86 7.2, and cpio to pack initramfs images (the kernel and
# busybox-static are fetched by resources/nested/build.sh with apt-get download).
command -v cpio >/dev/null || need_apt+=(cpio)
command -v gdb >/dev/null || need_apt+=(gdb)
# The user netdev (net/, libslirp-sys) links Debian's libslirp, found through pkg-config
# (slirp.pc requires glib).
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists slirp glib-2.0 2>/dev/null || need_apt+=(libslirp-dev libglib2.0-dev)
need_qemu=0
command -v qemu-system-x86_64 >/dev/null || need_qemu=1
if [ ${#need_apt[@]} -gt 0 ] || [ $need_qemu -eq 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    apt_install() {
        if ! apt-get install -y -qq "$@" >"$apt_log" 2>&1; then
            cat "$apt_log" >&2
            echo "tests/run.sh: apt-get install $* failed" >&2
            exit 1
        fi
    }
    apt-get update -qq >"$apt_log" 2>&1 || { cat "$apt_log" >&2; exit 1; }
    [ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"
    # The machine image may carry a newer qemu-utils (backports) that blocks Debian's
    # qemu-system-x86; installing the matching qemu-utils (a downgrade) resolves it.
    [ $need_qemu -eq 0 ] || apt_install --allow-downgrades qemu-system-x86 qemu-utils/bookworm
    rm -f "$apt_log"
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
# The nested tier's kernel and initramfs images (cached; downloads the debs once).
bash resources/nested/build.sh >/dev/null
# The QMP acceptance tests are driven by a real client, the qemu.qmp library from PyPI, in a
# virtualenv of the project's own.
venv=target/pyenv
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import qemu.qmp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r tests/qmp/requirements.txt
fi
# Every test must run here: one that finds its prerequisite missing (root, a network
# namespace, QEMU 7.2, a multicast route) fails instead of skipping.
export PETREL_REQUIRE_ALL=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# How much of the spec's QMP command set is dispatched (the test above checked it; this shows
# the count).
cargo test -q --locked -p petrel-vmm --bin petrel dispatched_commands -- --nocapture 2>/dev/null \
    | grep '^dispatched:'
# pytest runs the debug petrel that cargo test just built.
"$venv/bin/pytest" -q -p no:cacheprovider tests/qmp 2>&1 | tee -a "$log"
py_status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of cargo's test binaries and pytest (cargo's own last line
# is the doc-test run of the last crate).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     /^[0-9]+ (passed|failed)/ && / in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] && [ "$py_status" -eq 0 ]
