package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-lab/shoal/qemu/vm"
)

// fleet is the demo's virtual machines.
type fleet struct {
	vms     []*vm.VM
	disks   []string
	started time.Time // the first power-on
}

// startVMs powers on the machines: network boot first (-boot n), one
// blank disk of the image's size each.
func (d *demo) startVMs(ctx context.Context, n *network, accel vm.Accel, dir string, size int64) (*fleet, error) {
	f := &fleet{started: time.Now()}
	for i := 1; i <= d.cfg.vms; i++ {
		name := fmt.Sprintf("pc%d", i)
		disk := filepath.Join(dir, name+".disk")
		if err := os.Remove(disk); err != nil && !os.IsNotExist(err) {
			f.close()
			return nil, err
		}
		v, err := vm.Start(ctx, vm.Config{
			Name: name, Dir: dir, Lab: n.l, Accel: accel, Memory: 512, BootNet: true,
			Disks: []vm.Disk{{Path: disk, Size: size}},
			// SeaBIOS puts the screen on the serial console, so the serial
			// log shows iPXE's part of the boot too.
			Extra:  []string{"-machine", "graphics=off"},
			Logger: n.log,
		})
		if err != nil {
			f.close()
			return nil, err
		}
		f.vms = append(f.vms, v)
		f.disks = append(f.disks, disk)
	}
	return f, nil
}

// waitPowerOff gives the machines grace to power off once the server is
// done, then stops those still running (a machine that never joined).
func (f *fleet) waitPowerOff(ctx context.Context, grace time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	for _, v := range f.vms {
		v.Wait(ctx)
	}
}

// close stops every machine still running.
func (f *fleet) close() {
	for _, v := range f.vms {
		v.Close()
	}
}
