#!/usr/bin/env bash
# kernel.sh copies the stock Debian kernel (package linux-image-amd64, see
# deps.sh) to build/vmlinuz and gathers the kernel modules the boot image
# carries into build/modroot/lib/modules/<kver>/:
#
#   - the modules named in scripts/kernel-modules.txt and all their
#     dependencies (modules.dep lists them transitively), decompressed to
#     plain .ko whether Debian ships .ko, .ko.xz, .ko.zst or .ko.gz;
#   - modules.dep and modules.alias trimmed to what is shipped;
#   - modules.builtin, modules.builtin.modinfo and modules.softdep as they are.
#
# Usage: scripts/kernel.sh [BUILD_DIR]   (KVER=… picks a kernel version;
# default: the newest /boot/vmlinuz-* whose modules are installed)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
list=scripts/kernel-modules.txt

if [ -z "${KVER:-}" ]; then
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V); do
    [ -f "/lib/modules/$k/modules.dep" ] && KVER=$k
  done
fi
if [ -z "${KVER:-}" ]; then
  echo "kernel.sh: no /boot/vmlinuz-* with modules in /lib/modules: run scripts/deps.sh (package linux-image-amd64)" >&2
  exit 1
fi
src=/lib/modules/$KVER
root=$build/modroot
dst=$root/lib/modules/$KVER

rm -rf "$root"
mkdir -p "$dst"
cp "/boot/vmlinuz-$KVER" "$build/vmlinuz"
echo "$KVER" >"$build/kernel.version"

# Expand the globs of the list into module paths relative to $src.
shopt -s nullglob
wanted=$(mktemp)
trap 'rm -f "$wanted"' EXIT
while read -r pat _; do
  case "$pat" in '' | '#'*) continue ;; esac
  for f in "$src"/kernel/$pat "$src"/kernel/$pat.ko*; do
    case "$f" in *.ko | *.ko.xz | *.ko.zst | *.ko.gz) echo "${f#"$src"/}" ;; esac
  done
done <"$list" | sort -u >"$wanted"
if [ ! -s "$wanted" ]; then
  echo "kernel.sh: no module of $list found under $src" >&2
  exit 1
fi

# Close over dependencies with modules.dep (each line lists a module's whole
# dependency chain), then copy, decompressing where needed.
closure=$(awk -F': *' 'NR == FNR { want[$1] = 1; next }
  ($1 in want) { print $1; n = split($2, d, " "); for (i = 1; i <= n; i++) print d[i] }' \
  "$wanted" "$src/modules.dep" | sort -u)
count=0
for m in $closure; do
  out=$dst/${m%.ko*}.ko
  mkdir -p "$(dirname "$out")"
  case "$m" in
    *.ko.xz) xz -dc "$src/$m" >"$out" ;;
    *.ko.zst) zstd -qdc "$src/$m" >"$out" ;;
    *.ko.gz) gzip -dc "$src/$m" >"$out" ;;
    *) cp "$src/$m" "$out" ;;
  esac
  count=$((count + 1))
done

# modules.dep and modules.alias for the shipped modules only, with the
# compression endings gone.
printf '%s\n' $closure >"$wanted"
awk -F': *' 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' "$wanted" "$src/modules.dep" |
  sed -E 's/\.ko\.(xz|zst|gz)/.ko/g' >"$dst/modules.dep"
# Module names as modules.alias spells them: base name, '-' becomes '_'.
sed -E 's|.*/||; s/\.ko.*//; s/-/_/g' "$wanted" | sort -u >"$wanted.names"
awk 'NR == FNR { keep[$1] = 1; next } ($1 == "alias" && ($3 in keep))' "$wanted.names" "$src/modules.alias" >"$dst/modules.alias"
rm -f "$wanted.names"
for f in modules.builtin modules.builtin.modinfo modules.softdep; do
  [ -f "$src/$f" ] && cp "$src/$f" "$dst/$f"
done

echo "kernel.sh: $build/vmlinuz ($KVER), $count modules ($(du -sh "$dst" | cut -f1)) in $dst, $(wc -l <"$dst/modules.alias") aliases"
