package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-lab/shoal/boot"
)

// uinitMain runs shoal-client as the uinit of the u-root boot image (make
// initramfs passes -uinit): settings from the kernel command line and the
// USB stick, drivers, network, disk, session, and the final reboot or
// power-off. It returns the exit status; u-root's init starts a shell when
// the uinit exits.
func uinitMain(args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "shoal-client -uinit: unexpected arguments %q (settings come from shoal.* on the kernel command line)\n", args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Write to the consoles themselves, not to what init gave as stdout
	// (with several consoles, a pipe whose tail is lost at power-off),
	// and let them drain before the machine goes off.
	var out io.Writer = os.Stdout
	power := boot.PowerAction
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fmt.Fprintf(os.Stdout, "shoal-client: %v\n", err)
	}
	if cons, err := boot.OpenConsoles("/", boot.ConsoleDevices(string(cmdline))); err != nil {
		fmt.Fprintf(os.Stdout, "shoal-client: %v; writing to standard output\n", err)
	} else {
		defer cons.Close()
		out = cons
		power = func(a boot.After) error {
			cons.Drain()
			return boot.PowerAction(a)
		}
	}
	disp := newDisplay(out)
	err = boot.Run(ctx, boot.Options{Stdin: os.Stdin, Stdout: out, Cmdline: string(cmdline), Status: disp.show, Power: power})
	disp.end()
	if err != nil {
		fmt.Fprintln(out, "shoal-client:", err)
		return 1
	}
	return 0
}
