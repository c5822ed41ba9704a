package boot

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// kernelModules loads modules from /lib/modules/<release> with u-root's
// kmodule, which follows modules.dep and takes .ko, .ko.xz, .ko.zst and
// .ko.gz files.
type kernelModules struct {
	prober *kmodule.Prober
}

// Load loads module name and its dependencies; a module already loaded or
// built in is no error.
func (k *kernelModules) Load(name string) error {
	if err := k.prober.Probe(name, ""); err != nil {
		return fmt.Errorf("load module %s: %w", name, err)
	}
	return nil
}

// KernelRelease returns the running kernel's release (uname -r).
func KernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// OpenModules returns the module directory of the running kernel, its alias
// table and a Loader for it.
func OpenModules() (dir string, aliases *AliasTable, loader Loader, err error) {
	rel, err := KernelRelease()
	if err != nil {
		return "", nil, nil, err
	}
	dir = filepath.Join("/lib/modules", rel)
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return dir, nil, nil, fmt.Errorf("%w (kernel %s): %w", errNoModules, rel, err)
	}
	defer f.Close()
	if aliases, err = ParseAliases(f); err != nil {
		return dir, nil, nil, err
	}
	p, err := kmodule.NewProber(kmodule.ProbeOpts{KVer: rel})
	if err != nil {
		return dir, nil, nil, fmt.Errorf("read modules.dep of %s: %w", rel, err)
	}
	return dir, aliases, &kernelModules{prober: p}, nil
}
