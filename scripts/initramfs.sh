#!/usr/bin/env bash
# initramfs.sh builds the client's boot image, build/shoal-initramfs.cpio.gz:
# u-root's core commands (a rescue shell), shoal-client as the uinit (run as
# "shoal-client -uinit") and the kernel modules gathered by kernel.sh, with
# the u-root tooling pinned in go.mod (go tool u-root).
#
# Two ways, the same result for the boot:
#   full (default)  one u-root busybox of the core commands and the client:
#                   the smallest image (about 12 MB); about 45 s on 2 cores (u-root always
#                   rebuilds everything).
#   FAST=1          the core commands are built once into build/initramfs/core.cpio
#                   (again only when go.mod or go.sum change); each run then
#                   builds the client alone and repacks: about 3 s (14 MB).
#
# Usage: scripts/initramfs.sh [BUILD_DIR]   (run scripts/kernel.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=$build/shoal-initramfs.cpio.gz
work=$build/initramfs
modroot=$build/modroot
mkdir -p "$work"

if [ ! -d "$modroot/lib/modules" ]; then
  echo "initramfs.sh: $modroot/lib/modules missing: run scripts/kernel.sh (make kernel) first" >&2
  exit 1
fi

start=$(date +%s%N)
go=${GO:-go}
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
if [ "${FAST:-0}" = 1 ]; then
  core=$work/core.cpio
  if [ ! -s "$core" ] || [ go.mod -nt "$core" ] || [ go.sum -nt "$core" ]; then
    echo "initramfs.sh: building the u-root core commands into $core (once)" >&2
    $go tool u-root -o "$core.tmp" -uinitcmd= 'github.com/u-root/u-root/cmds/core/*'
    mv "$core.tmp" "$core"
  fi
  CGO_ENABLED=0 $go build -trimpath -ldflags='-s -w' -o "$work/shoal-client" ./cmds/shoal-client
  $go tool u-root -o "$work/shoal.cpio" -nocmd -base "$core" -initcmd= -defaultsh= \
    -uinitcmd="/bin/shoal-client -uinit" \
    -files "$work/shoal-client:bin/shoal-client" \
    -files "$modroot/lib/modules:lib/modules"
else
  $go tool u-root -o "$work/shoal.cpio" -uinitcmd="shoal-client -uinit" \
    -files "$modroot/lib/modules:lib/modules" \
    'github.com/u-root/u-root/cmds/core/*' ./cmds/shoal-client
fi
gzip -6n <"$work/shoal.cpio" >"$out.tmp"
mv "$out.tmp" "$out"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
secs=$((ms / 1000)).$(printf %03d $((ms % 1000)))
echo "initramfs.sh: $out: $(du -h "$out" | cut -f1) ($(du -h "$work/shoal.cpio" | cut -f1) uncompressed), built in ${secs}s$([ "${FAST:-0}" = 1 ] && echo ' (FAST=1)')"
