// Package boot is shoal-client's early boot, when it runs as the uinit of
// the u-root initramfs: it reads the shoal.* settings from the kernel
// command line (and from a settings file on the USB stick it booted from),
// loads the kernel modules the machine's hardware needs by matching
// /sys/bus/*/devices/*/modalias against modules.alias (coldplug), brings the
// network up by DHCP, picks the target disk (asking at the console when no
// shoal.disk= is given), runs the imaging session, shows a clear error
// screen and retries on failure, and finally reboots, powers off or returns
// to u-root's shell.
//
// The recipes that build the boot image live in scripts/ (initramfs.sh,
// kernel.sh, usb.sh) and are run by make initramfs, make kernel, make usb.
package boot
