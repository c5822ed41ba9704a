package boot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// fakeBus is a sysfs tree whose "drivers" bind devices and, for bus
// drivers, make child devices appear, the way the kernel does.
type fakeBus struct {
	t      *testing.T
	root   string
	loaded []string
	// children: module → devices (bus/name → modalias) that appear when it
	// loads; binds: module → devices it binds.
	children map[string]map[string]string
	binds    map[string][]string
	fail     map[string]bool
}

func (b *fakeBus) addDevice(busName, modalias string) {
	dir := filepath.Join(b.root, "sys/bus", filepath.Dir(busName), "devices", filepath.Base(busName))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modalias"), []byte(modalias+"\n"), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *fakeBus) Load(name string) error {
	if b.fail[name] {
		return errors.New("exec format error")
	}
	b.loaded = append(b.loaded, name)
	for dev, alias := range b.children[name] {
		b.addDevice(dev, alias)
	}
	for _, dev := range b.binds[name] {
		dir := filepath.Join(b.root, "sys/bus", filepath.Dir(dev), "devices", filepath.Base(dev))
		if err := os.Symlink("/sys/bus/x/drivers/"+name, filepath.Join(dir, "driver")); err != nil {
			b.t.Fatal(err)
		}
	}
	return nil
}

func TestColdplug(t *testing.T) {
	tests := []struct {
		name    string
		devices map[string]string // bus/name → modalias at boot
		bus     func(b *fakeBus)
		want    []string
		failed  []string
	}{
		{
			name: "virtio NIC and disk through the PCI transport",
			devices: map[string]string{
				"pci/0000:00:03.0": "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
				"pci/0000:00:04.0": "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
				"pci/0000:00:00.0": "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00",
			},
			bus: func(b *fakeBus) {
				b.children["virtio_pci"] = map[string]string{
					"virtio/virtio0": "virtio:d00000001v00001AF4",
					"virtio/virtio1": "virtio:d00000002v00001AF4",
				}
				b.binds["virtio_pci"] = []string{"pci/0000:00:03.0", "pci/0000:00:04.0"}
			},
			want: []string{"virtio_pci", "virtio_net", "virtio_blk"},
		},
		{
			name: "e1000 needs no bus driver",
			devices: map[string]string{
				"pci/0000:00:03.0": "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
			},
			want: []string{"e1000"},
		},
		{
			name: "USB stick behind xhci, then the SCSI disk",
			devices: map[string]string{
				"pci/0000:00:05.0": "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
			},
			bus: func(b *fakeBus) {
				b.children["xhci_pci"] = map[string]string{"usb/1-1:1.0": "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"}
				b.binds["xhci_pci"] = []string{"pci/0000:00:05.0"}
				b.children["usb_storage"] = map[string]string{"scsi/0:0:0:0": "scsi:t-0x00"}
				b.binds["usb_storage"] = []string{"usb/1-1:1.0"}
			},
			want: []string{"xhci_pci", "uas", "usb_storage", "sd_mod"},
		},
		{
			name: "a failing module is tried once and reported",
			devices: map[string]string{
				"pci/0000:00:03.0": "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
			},
			bus:    func(b *fakeBus) { b.fail["e1000"] = true },
			failed: []string{"e1000"},
		},
	}
	aliases := loadTestAliases(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBus{t: t, root: t.TempDir(), children: map[string]map[string]string{}, binds: map[string][]string{}, fail: map[string]bool{}}
			for dev, alias := range tt.devices {
				b.addDevice(dev, alias)
			}
			if tt.bus != nil {
				tt.bus(b)
			}
			c := &Coldplug{Root: b.root, Aliases: aliases, Loader: b, Logger: testLogger(t)}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := c.Run(ctx, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("loaded %q, want %q", got, tt.want)
			}
			var failed []string
			for m := range c.Failed() {
				failed = append(failed, m)
			}
			if !reflect.DeepEqual(failed, tt.failed) {
				t.Errorf("failed %q, want %q", failed, tt.failed)
			}
		})
	}
}
