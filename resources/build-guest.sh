#!/usr/bin/env bash
# Build the Petrel test guest kernel (a PVH ELF) into resources/out/.
#
#   resources/build-guest.sh [--force]
#
# Prints the absolute path of resources/out/petrel-guest.elf on stdout (all
# diagnostics go to stderr). Skips the build when the ELF is newer than every
# source (guest/**/*.{c,h,S,ld} and this script); --force rebuilds. Works from
# any directory and is safe to run concurrently. Needs only gcc (+ as) and ld.
set -euo pipefail

RES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$RES/guest"
OUT="$RES/out"
ELF="$OUT/petrel-guest.elf"

force=0
for arg in "$@"; do
    case "$arg" in
        --force|-f) force=1 ;;
        -h|--help) echo "usage: $0 [--force]"; exit 0 ;;
        *) echo "build-guest.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [[ $force -eq 0 && -f "$ELF" ]]; then
    newer="$(find "$SRC" "$RES/build-guest.sh" -type f \
        \( -name '*.c' -o -name '*.h' -o -name '*.S' -o -name '*.ld' -o -name '*.sh' \) \
        -newer "$ELF" -print -quit)"
    if [[ -z "$newer" ]]; then
        echo "$ELF"
        exit 0
    fi
fi

for tool in gcc ld; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-guest.sh: '$tool' not found (install gcc and binutils)" >&2
        exit 1
    fi
done

mapfile -t sources < <(find "$SRC/src" -type f \( -name '*.c' -o -name '*.S' \) | LC_ALL=C sort)
if [[ ${#sources[@]} -eq 0 ]]; then
    echo "build-guest.sh: no sources under $SRC/src" >&2
    exit 1
fi

CFLAGS=(
    -m64 -std=gnu11 -O2 -Wall -Wextra -Werror=implicit-function-declaration
    -ffreestanding -fno-builtin -nostdlib -fno-stack-protector -fno-pic -fno-pie
    -mno-red-zone -mno-sse -mno-sse2 -mno-mmx -mno-80387 -mgeneral-regs-only
    -mcmodel=small -fcf-protection=none -fno-asynchronous-unwind-tables
    -fno-unwind-tables -fno-delete-null-pointer-checks -fno-strict-aliasing
    -fno-jump-tables
    -I"$SRC/include"
)

mkdir -p "$OUT"
TMP="$(mktemp -d "$OUT/.guest-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

objs=()
for src in "${sources[@]}"; do
    rel="${src#"$SRC/src/"}"
    obj="$TMP/${rel//\//_}.o"
    gcc "${CFLAGS[@]}" -c "$src" -o "$obj" >&2
    objs+=("$obj")
done

ld -nostdlib -static -n --build-id=none --no-warn-rwx-segments \
    -T "$SRC/link.ld" -o "$TMP/petrel-guest.elf" "${objs[@]}" >&2
mv -f "$TMP/petrel-guest.elf" "$ELF"
echo "$ELF"
