// Command shoal is the shoal server and admin tool.
//
//	shoal serve --session NAME --image FILE [flags]   serve one imaging session
//	shoal image pack|unpack|info|verify …              pack and check images
//
// Run "shoal serve -h" for the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if errors.Is(err, errUsage) {
		code = 2
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "shoal:", msg)
	}
	os.Exit(code)
}

const usage = `usage: shoal <command> [flags]

commands:
  serve    serve a disk image to a named session of clients
  key      make a key file for authenticated sessions (shoal key new FILE)
  image    pack, unpack, describe and verify disk images (shoal image help)
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdin, stdout, stderr)
	case "key":
		return keyCmd(args[1:], stdout, stderr)
	case "image":
		return imageCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}
