package main

import (
	"context"
	"fmt"
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
	disp := newDisplay(os.Stdout)
	err := boot.Run(ctx, boot.Options{Stdin: os.Stdin, Stdout: os.Stdout, Status: disp.show})
	disp.end()
	if err != nil {
		fmt.Fprintln(os.Stdout, "shoal-client:", err)
		return 1
	}
	return 0
}
