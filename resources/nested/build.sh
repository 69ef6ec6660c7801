#!/usr/bin/env bash
# Builds what the nested Linux tests need into resources/out/nested/:
#
#   bzImage            Debian's cloud kernel (L1 under QEMU/TCG, and L2 under petrel)
#   l2-initramfs.cpio  L2's initramfs: busybox, the virtio modules, cmos, l2-init as /init
#   l1-base.cpio       L1's initramfs without petrel: busybox, the kvm and virtio modules,
#                      l1-init as /init, and /l2/bzImage + /l2/initramfs.cpio for petrel
#   kernel-release     the kernel's release string (e.g. 6.1.0-56-cloud-amd64)
#   debs/              the downloaded .deb files (kept as a cache)
#
#   resources/nested/build.sh [--force]
#
# Prints the output directory on stdout; everything else goes to stderr. Cached: nothing is
# rebuilt while the outputs are newer than every file in resources/nested/. The debs are
# downloaded once (apt-get download; apt-get update first if that fails) and kept. Safe to run
# concurrently (flock). Needs apt-get, dpkg, cpio and gcc. petrel itself is not in these
# archives: the test harness appends it (and its libraries) as a second cpio at run time.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$(cd "$HERE/.." && pwd)/out/nested"
DEBS="$OUT/debs"

force=0
for arg in "$@"; do
    case "$arg" in
        --force|-f) force=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "nested/build.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

L2_MODULES=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
            virtio_blk failover net_failover virtio_net virtio_balloon)
L1_MODULES=(irqbypass kvm kvm-amd virtio virtio_ring virtio_pci_legacy_dev
            virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net)

mkdir -p "$OUT" "$DEBS"
exec 9>"$OUT/.lock"
flock 9

outputs=("$OUT/bzImage" "$OUT/l2-initramfs.cpio" "$OUT/l1-base.cpio" "$OUT/kernel-release")
up_to_date() {
    local f
    for f in "${outputs[@]}"; do
        [[ -f "$f" ]] || return 1
        [[ -z "$(find "$HERE" -type f -newer "$f" -print -quit)" ]] || return 1
    done
}
if [[ $force -eq 0 ]] && up_to_date; then
    echo "$OUT"
    exit 0
fi

for tool in apt-get apt-cache dpkg cpio gcc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "nested/build.sh: '$tool' not found (tests/run.sh installs what is needed)" >&2
        exit 1
    fi
done

# apt-get download into $DEBS, with one apt-get update and retry if it fails.
download() {
    local log
    log="$(mktemp)"
    if ! (cd "$DEBS" && apt-get download -qq "$@") >"$log" 2>&1; then
        echo "nested/build.sh: apt-get download $* failed; running apt-get update" >&2
        apt-get update -qq >&2
        if ! (cd "$DEBS" && apt-get download -qq "$@") >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            echo "nested/build.sh: cannot download $*" >&2
            exit 1
        fi
    fi
    rm -f "$log"
}

# The cloud kernel: linux-image-cloud-amd64 is a metapackage depending on
# linux-image-<release>-cloud-amd64 (signed); take the -unsigned twin (same kernel, no
# signature). A deb already in the cache is used as it is.
kernel_deb="$(find "$DEBS" -maxdepth 1 -name 'linux-image-*-cloud-amd64-unsigned_*.deb' | LC_ALL=C sort | tail -n1)"
if [[ -z "$kernel_deb" ]]; then
    resolve() {
        apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64/ { print $2; exit }'
    }
    pkg="$(resolve)"
    if [[ -z "$pkg" ]]; then
        apt-get update -qq >&2
        pkg="$(resolve)"
    fi
    if [[ -z "$pkg" ]]; then
        echo "nested/build.sh: apt-cache cannot resolve linux-image-cloud-amd64" >&2
        exit 1
    fi
    pkg="${pkg%-unsigned}-unsigned"
    echo "nested/build.sh: downloading $pkg" >&2
    download "$pkg"
    kernel_deb="$(find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" | LC_ALL=C sort | tail -n1)"
fi
busybox_deb="$(find "$DEBS" -maxdepth 1 -name 'busybox-static_*.deb' | LC_ALL=C sort | tail -n1)"
if [[ -z "$busybox_deb" ]]; then
    echo "nested/build.sh: downloading busybox-static" >&2
    download busybox-static
    busybox_deb="$(find "$DEBS" -maxdepth 1 -name 'busybox-static_*.deb' | LC_ALL=C sort | tail -n1)"
fi
[[ -n "$kernel_deb" && -n "$busybox_deb" ]] || { echo "nested/build.sh: debs missing" >&2; exit 1; }

TMP="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

dpkg -x "$kernel_deb" "$TMP/kernel"
dpkg -x "$busybox_deb" "$TMP/busybox"
vmlinuz="$(find "$TMP/kernel/boot" -name 'vmlinuz-*' | head -n1)"
[[ -n "$vmlinuz" ]] || { echo "nested/build.sh: no vmlinuz in $kernel_deb" >&2; exit 1; }
release="${vmlinuz##*/vmlinuz-}"
moddir="$TMP/kernel/lib/modules/$release"
[[ -d "$moddir" ]] || { echo "nested/build.sh: no modules for $release" >&2; exit 1; }

# Path of module $1 in the kernel tree (empty if absent).
module_file() {
    find "$moddir/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \) | head -n1
}

# Appends module $1 to the array `order` after the modules it depends on (the depends= field
# of its .modinfo), each once. Modules built into the kernel are skipped.
declare -A placed
add_module() {
    local m="$1" f dep deps
    [[ -n "${placed[$m]:-}" ]] && return 0
    placed[$m]=1
    f="$(module_file "$m")"
    if [[ -z "$f" ]]; then
        if grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null; then
            return 0
        fi
        echo "nested/build.sh: module $m not found in $release" >&2
        exit 1
    fi
    case "$f" in
        *.xz) xz -dc "$f" > "$TMP/mod/$m.ko" ;;
        *.zst) zstd -qdc "$f" > "$TMP/mod/$m.ko" ;;
        *) cp "$f" "$TMP/mod/$m.ko" ;;
    esac
    deps="$(tr '\0' '\n' < "$TMP/mod/$m.ko" | sed -n 's/^depends=//p' | head -n1)"
    for dep in ${deps//,/ }; do
        add_module "$dep"
    done
    order+=("$m")
}

# A root with busybox (and its applets as symlinks), the given modules and what they depend
# on, and /lib/modules/load-order listing them in an order insmod accepts.
make_root() {
    local root="$1"
    shift
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,lib/modules} "$TMP/mod"
    cp "$TMP/busybox/bin/busybox" "$root/bin/busybox"
    local applet m
    for applet in $("$root/bin/busybox" --list); do
        [[ -e "$root/bin/$applet" ]] || ln -s busybox "$root/bin/$applet"
    done
    placed=()
    order=()
    for m in "$@"; do
        add_module "$m"
    done
    for m in "${order[@]}"; do
        cp "$TMP/mod/$m.ko" "$root/lib/modules/$m.ko"
    done
    printf '%s\n' "${order[@]}" > "$root/lib/modules/load-order"
}

# newc archive of a directory, uncompressed (L1 and L2 run under TCG: decompressing costs
# more than reading), owned by root, in a stable order.
pack() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0) > "$2"
}

make_root "$TMP/l2" "${L2_MODULES[@]}"
install -m 0755 "$HERE/l2-init" "$TMP/l2/init"
gcc -static -nostdlib -ffreestanding -fno-builtin -O2 -fno-stack-protector \
    -fcf-protection=none -fno-asynchronous-unwind-tables -Wall -Wextra -Werror \
    -o "$TMP/l2/bin/cmos" "$HERE/cmos.c" >&2
pack "$TMP/l2" "$TMP/l2-initramfs.cpio"

make_root "$TMP/l1" "${L1_MODULES[@]}"
install -m 0755 "$HERE/l1-init" "$TMP/l1/init"
mkdir -p "$TMP/l1/l2" "$TMP/l1/nested"
cp "$vmlinuz" "$TMP/l1/l2/bzImage"
cp "$TMP/l2-initramfs.cpio" "$TMP/l1/l2/initramfs.cpio"
pack "$TMP/l1" "$TMP/l1-base.cpio"

cp "$vmlinuz" "$TMP/bzImage"
echo "$release" > "$TMP/kernel-release"
for f in bzImage l2-initramfs.cpio l1-base.cpio kernel-release; do
    mv -f "$TMP/$f" "$OUT/$f"
done
echo "nested/build.sh: built for kernel $release" >&2
echo "$OUT"
