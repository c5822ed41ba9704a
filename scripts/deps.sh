#!/usr/bin/env bash
# deps.sh installs the Debian packages shoal's build, tests, VMs and
# benchmarks need. It is idempotent: packages already present are skipped,
# and apt-get runs only when something is missing.
set -euo pipefail

packages=(
  iproute2        # ip netns, veth, bridges, tc tbf
  nftables        # random loss per lab host
  udpcast         # the peer the benchmarks measure against
  qemu-system-x86 # the virtual lab machines
  qemu-utils      # qemu-img
  linux-image-amd64 # the stock kernel the netboot image boots
  ipxe            # undionly.kpxe, ipxe.efi, snponly.efi for PXE
  ovmf            # UEFI firmware for VM tests
  fdisk           # sfdisk for realistic test images
  gdisk           # sgdisk -v for GPT checks
  e2fsprogs       # mkfs.ext4 -d, e2fsck
  dosfstools      # mkfs.vfat for the ESP / USB image
  mtools          # mcopy for the USB image
  zstd            # compressed raw images, the packing speed reference
  cpio            # initramfs inspection
  kmod            # modinfo, depmod
  tmux            # terminal UI test
  dnsmasq-base    # a plain DHCP server for the proxyDHCP test
  grub-pc-bin grub-efi-amd64-bin xorriso # USB image (BIOS + UEFI)
  util-linux      # losetup, blockdev
)

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" for a present package.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]}; run as root (sudo make ...) to install them" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
