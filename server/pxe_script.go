package server

import (
	"fmt"
	"net/netip"
	"strings"
)

// The files the iPXE script loads, under /pxe/ on the HTTP server.
const (
	pxeKernelName = "vmlinuz"
	pxeInitrdName = "initrd.cpio.gz"
)

// BootParams is what the client's kernel command line carries: the
// shoal.* settings of the boot package.
type BootParams struct {
	// Session is the session the client joins (shoal.session). Required.
	Session string
	// Disk is the target disk (shoal.disk): a device, "auto", or "" or
	// "ask" to list the disks and ask at the console.
	Disk string
	// After is what the client does when done (shoal.after): reboot,
	// poweroff or shell; "" leaves the client's default (reboot).
	After string
	// Args are more kernel parameters, e.g. "shoal.zero=skip" or "quiet".
	Args []string
}

// safeCmdlineValue tells whether s can go on a kernel command line inside
// an iPXE script as it is: no spaces or quotes (the kernel splits on
// them), no '$' or '\' (iPXE expands ${…} and escapes), nothing invisible.
func safeCmdlineValue(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("\"'$\\#", r) {
			return false
		}
	}
	return true
}

// Check says what is wrong with the parameters, if anything.
func (p BootParams) Check() error {
	if p.Session == "" {
		return fmt.Errorf("no session name")
	}
	for _, v := range []struct{ key, val string }{{"session", p.Session}, {"disk", p.Disk}, {"after", p.After}} {
		if !safeCmdlineValue(v.val) {
			return fmt.Errorf("shoal.%s=%q cannot go on a kernel command line: no spaces, quotes, '$', '\\' or '#'", v.key, v.val)
		}
	}
	switch p.After {
	case "", "reboot", "poweroff", "shell":
	default:
		return fmt.Errorf("after %q: want reboot, poweroff or shell", p.After)
	}
	for _, a := range p.Args {
		if !safeCmdlineValue(a) {
			return fmt.Errorf("kernel parameter %q: no spaces, quotes, '$', '\\' or '#'", a)
		}
	}
	return nil
}

// kernelCmdline is the client's kernel command line; server is the shoal
// server's address the client asks directly (shoal.server).
func (p BootParams) kernelCmdline(server netip.Addr) string {
	args := []string{
		"initrd=" + pxeInitrdName, // for the EFI stub; BIOS kernels ignore it
		"console=ttyS0", "console=tty0",
		"shoal.session=" + p.Session,
		"shoal.server=" + server.String(),
	}
	if p.Disk != "" && p.Disk != "ask" {
		args = append(args, "shoal.disk="+p.Disk)
	}
	if p.After != "" {
		args = append(args, "shoal.after="+p.After)
	}
	return strings.Join(append(args, p.Args...), " ")
}

// ipxeScript is the boot script: load the kernel and the initramfs over
// HTTP from base ("http://10.0.0.1:8080/pxe/") and boot; on failure say
// so and try again in 10 s.
func ipxeScript(base string, server netip.Addr, p BootParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!ipxe\n")
	fmt.Fprintf(&b, "# shoal: the imaging client for session %s, from %s\n", p.Session, server)
	fmt.Fprintf(&b, ":retry\n")
	fmt.Fprintf(&b, "imgfree\n")
	fmt.Fprintf(&b, "echo shoal: booting the imaging client for session %s from %s\n", p.Session, server)
	fmt.Fprintf(&b, "kernel %s%s %s || goto failed\n", base, pxeKernelName, p.kernelCmdline(server))
	fmt.Fprintf(&b, "initrd --name %s %s%s || goto failed\n", pxeInitrdName, base, pxeInitrdName)
	fmt.Fprintf(&b, "boot || goto failed\n")
	fmt.Fprintf(&b, ":failed\n")
	fmt.Fprintf(&b, "echo shoal: network boot failed, trying again in 10 seconds\n")
	fmt.Fprintf(&b, "sleep 10\n")
	fmt.Fprintf(&b, "goto retry\n")
	return b.String()
}
