package boot

import (
	"context"
	"errors"
	"fmt"
	"github.com/shoal-lab/shoal/internal/ctxtime"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Loader loads a kernel module, with its dependencies, by the name
// modules.alias gives it.
type Loader interface {
	Load(name string) error
}

// Coldplug loads the drivers for the devices a machine has, the way udev
// does at boot: it reads every /sys/bus/*/devices/*/modalias of a device
// with no driver bound, matches it against modules.alias and loads every
// module that matches. Loading a bus driver (a USB host controller, the
// virtio PCI transport) makes new devices appear, so it scans again until
// nothing new turns up. It is not safe for concurrent use.
type Coldplug struct {
	// Root is the file system root the sysfs tree is under ("/").
	Root    string
	Aliases *AliasTable
	Loader  Loader
	// Logger receives what was loaded (info) and failures (warn).
	Logger *slog.Logger

	tried map[string]error // module → result of loading it
}

// Device is one device seen in sysfs.
type Device struct {
	Path     string // sysfs path of the device
	Modalias string
	Bound    bool // a driver is bound to it
}

// Devices lists the devices under Root/sys/bus/*/devices that have a
// modalias, sorted by path.
func (c *Coldplug) Devices() ([]Device, error) {
	files, err := filepath.Glob(filepath.Join(c.root(), "sys/bus/*/devices/*/modalias"))
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	sort.Strings(files)
	var out []Device
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the device went away
		}
		dir := filepath.Dir(f)
		_, err = os.Lstat(filepath.Join(dir, "driver"))
		out = append(out, Device{Path: dir, Modalias: strings.TrimSpace(string(b)), Bound: err == nil})
	}
	return out, nil
}

func (c *Coldplug) root() string {
	if c.Root == "" {
		return "/"
	}
	return c.Root
}

func (c *Coldplug) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Pass scans the devices once and loads the modules that match devices
// with no driver and were not tried before. It returns the modules it
// loaded.
func (c *Coldplug) Pass() ([]string, error) {
	if c.tried == nil {
		c.tried = map[string]error{}
	}
	devs, err := c.Devices()
	if err != nil {
		return nil, err
	}
	var loaded []string
	for _, d := range devs {
		if d.Bound {
			continue
		}
		for _, m := range c.Aliases.Match(d.Modalias) {
			if _, done := c.tried[m]; done {
				continue
			}
			err := c.Loader.Load(m)
			c.tried[m] = err
			if err != nil {
				c.log().Warn("could not load driver", "module", m, "device", filepath.Base(d.Path), "err", err)
				continue
			}
			c.log().Debug("loaded driver", "module", m, "device", filepath.Base(d.Path), "modalias", d.Modalias)
			loaded = append(loaded, m)
		}
	}
	return loaded, nil
}

// Run scans until no new module has been loaded for quiet, or ctx ends;
// it returns every module it loaded. A USB bus is slow to show its
// devices, so quiet should be a second or more.
func (c *Coldplug) Run(ctx context.Context, quiet time.Duration) ([]string, error) {
	var all []string
	last := time.Now()
	for {
		loaded, err := c.Pass()
		if err != nil {
			return all, err
		}
		if len(loaded) > 0 {
			all = append(all, loaded...)
			last = time.Now()
		}
		if time.Since(last) >= quiet {
			return all, nil
		}
		if err := ctxtime.Sleep(ctx, 200*time.Millisecond); err != nil {
			return all, err
		}
	}
}

// Failed returns the modules that could not be loaded, with why.
func (c *Coldplug) Failed() map[string]error {
	out := map[string]error{}
	for m, err := range c.tried {
		if err != nil {
			out[m] = err
		}
	}
	return out
}

// Unsupported returns the modaliases of PCI network and storage
// controllers that have no driver bound, for a message when no NIC or no
// disk shows up.
func (c *Coldplug) Unsupported() []string {
	devs, err := c.Devices()
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range devs {
		// PCI class 01 is mass storage, 02 is network.
		if !d.Bound && strings.HasPrefix(d.Modalias, "pci:") &&
			(strings.Contains(d.Modalias, "bc01") || strings.Contains(d.Modalias, "bc02")) {
			out = append(out, d.Modalias)
		}
	}
	return out
}

// errNoModules means the image carries no modules for the running kernel.
var errNoModules = errors.New("no kernel modules for this kernel in the image")
