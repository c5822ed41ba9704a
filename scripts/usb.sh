#!/usr/bin/env bash
# usb.sh writes build/shoal-usb.img: a disk image to copy onto a USB stick
# (dd, or any "write image" tool) that boots by BIOS and by UEFI into the
# shoal client.
#
# Layout: an MBR partition table with one bootable FAT32 partition labelled
# SHOAL from sector 2048. GRUB boots both ways: for BIOS its boot.img is in
# the MBR and its core.img in the gap before the partition (the same as
# grub-install, without needing a loop device or root); for UEFI it is
# EFI/BOOT/BOOTX64.EFI on the partition. The partition carries
#   boot/vmlinuz, boot/shoal-initramfs.cpio.gz, boot/grub/grub.cfg
#   shoal.txt   the settings a person edits (scripts/usb-settings.txt)
# The client reads shoal.txt at boot with the partition mounted read-only,
# and refuses the stick as a target.
#
# Usage: scripts/usb.sh [BUILD_DIR]   (needs make kernel initramfs first;
# Debian packages grub-pc-bin grub-efi-amd64-bin dosfstools mtools fdisk)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=$build/shoal-usb.img
work=$build/usb
kernel=$build/vmlinuz
initrd=$build/shoal-initramfs.cpio.gz
for f in "$kernel" "$initrd"; do
  [ -f "$f" ] || { echo "usb.sh: $f missing: run make kernel initramfs first" >&2; exit 1; }
done
for tool in grub-mkimage mkfs.vfat mcopy mmd sfdisk; do
  command -v "$tool" >/dev/null || { echo "usb.sh: $tool missing: run scripts/deps.sh" >&2; exit 1; }
done
grub_pc=/usr/lib/grub/i386-pc
grub_efi=/usr/lib/grub/x86_64-efi
rm -rf "$work"
mkdir -p "$work"

# Size: the payload plus 16 MiB of room, at least 64 MiB (FAT32's minimum
# cluster count is met from 33 MiB on).
payload=$(( ($(stat -c %s "$kernel") + $(stat -c %s "$initrd")) / 1048576 + 1 ))
part_mib=$(( payload + 16 < 63 ? 63 : payload + 16 ))
part_sectors=$(( part_mib * 2048 ))
start=2048

# GRUB, the same menu for both firmwares. The early config finds the
# partition by its label wherever the firmware numbered the stick.
cat >"$work/early.cfg" <<'EOF'
search --no-floppy --label SHOAL --set=root
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
EOF
cat >"$work/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=3
set default=0
# console=tty0 last: the screen and keyboard are the console a person uses
# (the client's questions read from it); everything is shown on the serial
# port too.
menuentry "shoal client (settings from shoal.txt on this stick)" {
  linux /boot/vmlinuz console=ttyS0,115200 console=tty0 quiet
  initrd /boot/shoal-initramfs.cpio.gz
}
menuentry "shoal client, then a shell (debug)" {
  linux /boot/vmlinuz console=ttyS0,115200 console=tty0 shoal.after=shell shoal.debug=1
  initrd /boot/shoal-initramfs.cpio.gz
}
EOF
mods="part_msdos part_gpt fat search search_label normal linux configfile echo test serial terminal"
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub $mods biosdisk
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" -p /boot/grub $mods efi_gop efi_uga all_video
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
if [ "$core_sectors" -ge "$start" ]; then
  echo "usb.sh: core.img ($core_sectors sectors) does not fit before the partition" >&2
  exit 1
fi

# The FAT32 partition, built as its own file and then placed.
part=$work/part.img
truncate -s $(( part_sectors * 512 )) "$part"
mkfs.vfat -F 32 -n SHOAL -i 5e0a1b00 "$part" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$part" ::/boot ::/boot/grub ::/EFI ::/EFI/BOOT
mcopy -i "$part" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$part" "$work/grub.cfg" ::/boot/grub/grub.cfg
mcopy -i "$part" "$kernel" ::/boot/vmlinuz
mcopy -i "$part" "$initrd" ::/boot/shoal-initramfs.cpio.gz
# CRLF line ends, so that Notepad shows the settings properly too.
sed 's/$/\r/' scripts/usb-settings.txt >"$work/shoal.txt"
mcopy -i "$part" "$work/shoal.txt" ::/shoal.txt

# The disk: MBR with the partition (type 0x0c, FAT32 LBA, active), GRUB's
# boot.img in the MBR's code area, core.img from sector 1.
img=$work/disk.img
truncate -s $(( (start + part_sectors) * 512 )) "$img"
echo "label: dos
label-id: 0x5e0a1b00
start=$start, size=$part_sectors, type=c, bootable" | sfdisk -q "$img"
dd if="$grub_pc/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
dd if="$part" of="$img" bs=512 seek=$start conv=notrunc status=none
mv "$img" "$out"
rm -f "$part"
echo "usb.sh: $out: $(du -h --apparent-size "$out" | cut -f1) (BIOS and UEFI; settings in shoal.txt on the SHOAL partition)"
