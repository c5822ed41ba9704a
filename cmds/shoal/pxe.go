package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/shoal-lab/shoal/server"
)

// defaultPXEHTTP is where the HTTP server listens with --pxe and no --http.
const defaultPXEHTTP = ":8080"

// pxeFlags are the flags of `shoal serve` for the network boot chain.
type pxeFlags struct {
	on        *bool
	proxy     *bool
	kernel    *string
	initrd    *string
	disk      *string
	after     *string
	args      *string
	chainload *bool
	ipxeDir   *string
	efi       *string
}

// addPXEFlags defines the flags on fs.
func addPXEFlags(fs *flag.FlagSet) *pxeFlags {
	return &pxeFlags{
		on: fs.Bool("pxe", false, "also serve the clients' network boot: TFTP (the iPXE binaries), HTTP (an iPXE script, the kernel, the initramfs; on --http, default "+defaultPXEHTTP+"), "+
			"and DHCP with --dhcp RANGE or proxyDHCP with --proxy-dhcp"),
		proxy:     fs.Bool("proxy-dhcp", false, "with --pxe: proxyDHCP beside the LAN's DHCP server: boot information only, to PXE clients only (ports 67 and 4011)"),
		kernel:    fs.String("pxe-kernel", "build/vmlinuz", "with --pxe: the client kernel (make kernel)"),
		initrd:    fs.String("pxe-initrd", "build/shoal-initramfs.cpio.gz", "with --pxe: the client initramfs (make initramfs)"),
		disk:      fs.String("pxe-disk", "auto", "with --pxe: the clients' target disk (shoal.disk): a device such as /dev/sda, auto, or ask (list the disks and ask at the console)"),
		after:     fs.String("pxe-after", "poweroff", "with --pxe: what clients do when done (shoal.after): poweroff, reboot or shell (reboot may PXE-boot the machine into the next --restart round)"),
		args:      fs.String("pxe-args", "", "with --pxe: more kernel parameters for the clients, space-separated, e.g. \"shoal.zero=skip quiet\""),
		chainload: fs.Bool("pxe-chainload", false, "with --pxe: clients that already run iPXE (QEMU's NIC ROMs) load the iPXE binary over TFTP first, as a real NIC's PXE ROM does, then get the script"),
		ipxeDir:   fs.String("pxe-ipxe-dir", server.DefaultIPXEDir, "with --pxe: where the iPXE binaries are (Debian package ipxe)"),
		efi:       fs.String("pxe-efi", server.IPXEEFI, "with --pxe: the iPXE binary for x86-64 UEFI clients: "+server.IPXEEFI+" or "+server.IPXESNP+" (the firmware's NIC driver)"),
	}
}

// pxeSetup is what the PXE services take from the other flags.
type pxeSetup struct {
	iface, dhcpRange, session string
	// httpAddr is --http; start sets it to defaultPXEHTTP when empty.
	httpAddr *string
	log      *slog.Logger
}

// start checks the PXE flags and, with --pxe, opens the boot chain's
// sockets and serves it in the background. It returns what to mount on
// the HTTP server's mux (nil without --pxe) and a stop that waits for the
// services.
func (f *pxeFlags) start(ctx context.Context, fs *flag.FlagSet, s pxeSetup) (mount func(*http.ServeMux), stop func(), err error) {
	noop := func() {}
	if !*f.on {
		for _, name := range []string{"proxy-dhcp", "pxe-kernel", "pxe-initrd", "pxe-disk", "pxe-after", "pxe-args", "pxe-chainload", "pxe-ipxe-dir", "pxe-efi"} {
			if flagGiven(fs, name) {
				return nil, noop, fmt.Errorf("%w: --%s needs --pxe", errUsage, name)
			}
		}
		return nil, noop, nil
	}
	if *f.proxy && s.dhcpRange != "" {
		return nil, noop, fmt.Errorf("%w: --dhcp (a DHCP server) and --proxy-dhcp (beside the LAN's DHCP server) exclude each other", errUsage)
	}
	if *s.httpAddr == "" {
		*s.httpAddr = defaultPXEHTTP
	}
	port, err := fixedPort(*s.httpAddr)
	if err != nil {
		return nil, noop, fmt.Errorf("%w: --http %s: %v", errUsage, *s.httpAddr, err)
	}
	cfg := server.PXEConfig{
		Interface: s.iface, DHCPRange: s.dhcpRange, ProxyDHCP: *f.proxy,
		IPXEDir: *f.ipxeDir, EFIBinary: *f.efi, Kernel: *f.kernel, Initrd: *f.initrd, HTTPPort: port,
		Boot:      server.BootParams{Session: s.session, Disk: *f.disk, After: *f.after, Args: strings.Fields(*f.args)},
		Chainload: *f.chainload, Logger: s.log,
	}
	p, err := server.NewPXEServer(cfg)
	if errors.Is(err, server.ErrPXEConfig) {
		return nil, noop, fmt.Errorf("%w: %v", errUsage, err)
	} else if err != nil {
		return nil, noop, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Serve(ctx); err != nil {
			s.log.Error("PXE services stopped", "err", err)
		}
	}()
	return p.Register, func() { p.Close(); <-done }, nil
}

// fixedPort returns the port of a listen address such as ":8080"; the
// PXE URLs need to know it, so 0 (any port) will not do.
func fixedPort(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("--pxe needs a fixed port (clients are told the URL), not %q", p)
	}
	return n, nil
}
