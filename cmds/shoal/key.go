package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shoal-lab/shoal/protocol"
)

// keyCmd runs "shoal key new FILE": a fresh random key, readable by its
// owner only. The same file goes to the server (--key-file) and into the
// boot image or command line of the clients.
func keyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "new" {
		fmt.Fprintln(stderr, "usage: shoal key new FILE")
		return fmt.Errorf("%w: want: shoal key new FILE", errUsage)
	}
	path := args[1]
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a key (remove it first if you mean to)", path)
	}
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if _, err := fmt.Fprintln(f, protocol.GenerateKeyText()); err != nil {
		f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	fmt.Fprintf(stdout, "wrote a new key to %s: give it to the server with --key-file and to the clients (--key-file, or shoal.key=<its text> at boot)\n", path)
	return nil
}
