package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ConsoleDevices returns the terminals the kernel command line names as
// consoles (console=ttyS0,115200n8 console=tty0 → /dev/ttyS0, /dev/tty0),
// in order and without repeats, or /dev/console when it names none. Other
// console kinds (netconsole, "null", lp…) are left out.
func ConsoleDevices(cmdline string) []string {
	var devs []string
	seen := map[string]bool{}
	for _, tok := range splitCmdline(cmdline) {
		v, ok := strings.CutPrefix(tok, "console=")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(v, ",")
		if !strings.HasPrefix(name, "tty") || strings.ContainsAny(name, "/.") || seen[name] {
			continue
		}
		seen[name] = true
		devs = append(devs, "/dev/"+name)
	}
	if len(devs) == 0 {
		return []string{"/dev/console"}
	}
	return devs
}

// Consoles writes to every console at once, so that a serial console and
// the screen both show the session, and can wait until they have sent it
// all (Drain). u-root's init hands a uinit a pipe to its own copier when
// there are several consoles; what is still in that pipe when the machine
// powers off is lost, so the boot writes to the terminals itself.
type Consoles struct {
	mu    sync.Mutex
	files []*os.File
}

// OpenConsoles opens the console devices (ConsoleDevices) under root for
// writing. It fails only when none opens.
func OpenConsoles(root string, devices []string) (*Consoles, error) {
	c := &Consoles{}
	var errs []error
	for _, d := range devices {
		f, err := os.OpenFile(filepath.Join(root, d), os.O_WRONLY|unix.O_NOCTTY, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.files = append(c.files, f)
	}
	if len(c.files) == 0 {
		return nil, fmt.Errorf("open the consoles: %w", errors.Join(errs...))
	}
	return c, nil
}

// Write writes p to every console. It fails only when every console
// failed: a screen that is gone must not silence the serial line.
func (c *Consoles) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.files {
		if _, err := f.Write(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(c.files) {
		return 0, errors.Join(errs...)
	}
	return len(p), nil
}

// Drain waits until every console that is a terminal has sent what was
// written to it (tcdrain).
func (c *Consoles) Drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.files {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
	}
}

// Close closes the consoles.
func (c *Consoles) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files = nil
	return errors.Join(errs...)
}
