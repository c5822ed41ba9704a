// Command demo shows what shoal is for: machines are switched on, boot
// from the network, and are imaged, all at once. In a private virtual lab
// (network namespaces and a bridge; nothing touches this machine's
// network) it starts `shoal serve --pxe` and N QEMU virtual machines with
// blank disks that boot from the network (-boot n): their iPXE NIC ROM
// asks shoal's DHCP server, chainloads iPXE over TFTP, fetches the boot
// script, the kernel and the initramfs over HTTP, and the client in the
// initramfs joins the session, writes the image to the disk, verifies it
// and powers off. The server's live view is on the terminal (plain lines
// when the output is not a terminal, or with -plain); at the end the
// server prints its per-client table and the demo checks every disk.
//
// `make demo` installs what is missing, builds the binaries, the kernel
// and the initramfs, and runs this. It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/qemu/vm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// config is the demo's settings, from its flags.
type config struct {
	vms       int
	sizeMiB   int
	bin       string // directory with the shoal binary
	work      string // image, disks, serial logs, server log
	kernel    string
	initrd    string
	plain     bool
	chainload bool
	timeout   time.Duration
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var c config
	fs.IntVar(&c.vms, "vms", 3, "number of virtual machines to image")
	fs.IntVar(&c.sizeMiB, "size", 64, "size of the realistic disk image in MiB (at least 64; TCG guests are slow)")
	fs.StringVar(&c.bin, "bin", "build", "directory with the shoal binary (make build)")
	fs.StringVar(&c.work, "dir", "build/demo", "directory for the image, the disks and the logs")
	fs.StringVar(&c.kernel, "kernel", "build/vmlinuz", "the client kernel (make kernel)")
	fs.StringVar(&c.initrd, "initrd", "build/shoal-initramfs.cpio.gz", "the client initramfs (make initramfs)")
	fs.BoolVar(&c.plain, "plain", false, "the server prints plain lines instead of its live view")
	fs.BoolVar(&c.chainload, "chainload", true, "QEMU's iPXE ROM loads undionly.kpxe over TFTP first, as a real NIC's PXE ROM does")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.vms < 1 || c.sizeMiB < 64 {
		return c, errors.New("-vms must be at least 1 and -size at least 64")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdin *os.File, stdout *os.File) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	if err := lab.Available(); err != nil {
		return fmt.Errorf("the demo needs the virtual lab (run it as root; make demo installs the packages): %w", err)
	}
	if err := vm.Available(vm.BIOS); err != nil {
		return err
	}
	for _, f := range []string{filepath.Join(cfg.bin, "shoal"), cfg.kernel, cfg.initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w (make build kernel initramfs builds it)", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	d := &demo{cfg: cfg, out: stdout, stdin: stdin, tui: !cfg.plain && cli.IsTerminal(stdout)}
	return d.run(ctx)
}

// demo is one run.
type demo struct {
	cfg   config
	out   io.Writer
	stdin *os.File
	tui   bool // the server shows its live view on this terminal
	logs  string
}

func (d *demo) say(format string, a ...any) {
	fmt.Fprintf(d.out, "== "+format+"\n", a...)
}

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	d.logs = filepath.Join(d.cfg.work, "logs")
	vmDir := filepath.Join(d.cfg.work, "vms")
	for _, dir := range []string{d.logs, vmDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	img, err := d.makeImage(ctx)
	if err != nil {
		return err
	}
	net, err := d.startLab(ctx)
	if err != nil {
		return err
	}
	defer net.close()
	accel := vm.DetectAccel(ctx, d.cfg.kernel, net.log)
	srv, err := d.startServer(ctx, net, img)
	if err != nil {
		return err
	}
	d.say("%d virtual machines (%s, 512 MiB, blank %d MiB disk each) power on and boot from the network", d.cfg.vms, accel, d.cfg.sizeMiB)
	if d.tui {
		time.Sleep(2 * time.Second) // let the lines above be read before the live view takes the screen
	}
	fleet, err := d.startVMs(ctx, net, accel, vmDir, img.size)
	if err != nil {
		srv.stop()
		return err
	}
	defer fleet.close()
	srvErr := srv.wait()
	fleet.waitPowerOff(ctx, 30*time.Second)
	fmt.Fprintln(d.out)
	ok := d.report(img, fleet, srvErr, time.Since(start))
	if !ok {
		return errors.New("not every machine was imaged; see the logs above")
	}
	return nil
}
