#!/usr/bin/env bash
# mkimage.sh OUT [SIZE_MiB] builds a realistic test disk image, without the
# network and without root: a GPT disk (sfdisk) with a small FAT EFI system
# partition (formatted if mkfs.vfat is there, else left empty) and an ext4
# root filled (mkfs.ext4 -d) with real files of this machine — shared
# libraries, translations, documentation — up to about 40 % of the
# partition; the rest is the zeros a fresh disk has. Labels and UUIDs are
# fixed; the bytes are not reproducible across machines (the files differ).
#
#   scripts/mkimage.sh /tmp/lab.img        # 256 MiB
#   scripts/mkimage.sh /tmp/lab.img 1024   # 1 GiB
set -euo pipefail
export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin"

out=${1:?usage: mkimage.sh OUT [SIZE_MiB=256]}
size_mib=${2:-256}
if ! [[ $size_mib =~ ^[0-9]+$ ]] || ((size_mib < 64)); then
  echo "mkimage.sh: SIZE_MiB must be a number of at least 64, not '$size_mib'" >&2
  exit 2
fi
for tool in sfdisk mkfs.ext4 tar; do
  command -v "$tool" >/dev/null || { echo "mkimage.sh: $tool is missing (run scripts/deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-mkimage.XXXXXX")
trap 'rm -rf "$work"' EXIT

esp_mib=32
root_start_mib=$((1 + esp_mib))
root_mib=$((size_mib - root_start_mib - 1)) # 1 MiB at the end holds the backup GPT
img="$out.partial"

rm -f "$img"
truncate -s "${size_mib}M" "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF
label: gpt
label-id: 5EA1C0DE-0000-4000-8000-000000000001
first-lba: 2048
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5EA1C0DE-0000-4000-8000-000000000002, name="ESP"
start=$((root_start_mib * 2048)), size=$((root_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5EA1C0DE-0000-4000-8000-000000000003, name="root"
EOF

# The EFI system partition: FAT with a boot loader-sized file, if we can.
if command -v mkfs.vfat >/dev/null; then
  mkfs.vfat -C -i 5EA1C0DE -n ESP "$work/esp.img" $((esp_mib * 1024)) >/dev/null
  if command -v mcopy >/dev/null; then
    mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
    mcopy -i "$work/esp.img" "$(command -v bash)" ::/EFI/BOOT/BOOTX64.EFI
  fi
  dd if="$work/esp.img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
fi

# The root file system's content: real files, in a stable order, each
# source up to its share of the budget.
budget=$((root_mib * 1024 * 1024 * 40 / 100))
pick() { # DIR SHARE_PERCENT: files of DIR, sorted, up to SHARE % of the budget
  [ -d "$1" ] || return 0
  find "$1" -xdev -type f -readable -size -16M -printf '%s\t%p\n' 2>/dev/null |
    sort -t $'\t' -k2 |
    awk -F '\t' -v limit=$((budget * $2 / 100)) 'full || sum + $1 > limit { full = 1; next } { sum += $1; print substr($2, 2) }'
}
{
  pick /usr/lib/x86_64-linux-gnu 50
  pick /usr/share/locale 25
  pick /usr/share/doc 25
} >"$work/files"
mkdir "$work/root"
tar -C / --no-recursion -cf - -T "$work/files" 2>/dev/null | tar -C "$work/root" -xf -
mkdir -p "$work/root/etc" "$work/root/home" "$work/root/var/log"
echo "shoal test image" >"$work/root/etc/hostname"

truncate -s "${root_mib}M" "$work/root.img"
mkfs.ext4 -q -F -b 4096 -L root -U 5ea1c0de-0000-4000-8000-000000000004 \
  -E root_owner=0:0,hash_seed=5ea1c0de-0000-4000-8000-000000000005 \
  -d "$work/root" "$work/root.img"
dd if="$work/root.img" of="$img" bs=1M seek="$root_start_mib" conv=notrunc,sparse status=none

mv -f "$img" "$out"
echo "mkimage.sh: $out: ${size_mib} MiB, ext4 root with $(wc -l <"$work/files") files ($(du -sh --apparent-size "$work/root" | cut -f1))" >&2
