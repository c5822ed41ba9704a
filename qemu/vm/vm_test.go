package vm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the joined command line
		not  []string
	}{
		{
			name: "direct kernel boot under TCG",
			cfg:  Config{Name: "a", Dir: dir, Accel: TCG, Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", Disks: []Disk{{Path: "/d"}}},
			want: []string{"-accel tcg -cpu max", "-kernel /k -initrd /i -append console=ttyS0", "-device virtio-blk-pci,drive=disk0", "-no-reboot", "-serial stdio"},
			not:  []string{"pflash", "-netdev", "-boot n"},
		},
		{
			name: "USB stick under UEFI with a blank disk",
			cfg: Config{Name: "b", Dir: dir, Accel: KVM, Firmware: UEFI, Disks: []Disk{
				{Path: "/stick", Interface: USB, Boot: true}, {Path: "/blank", Interface: Virtio}, {Path: "/ro", Interface: NVMe, ReadOnly: true},
			}},
			want: []string{"-accel kvm -cpu host", "if=pflash,format=raw,readonly=on,file=" + OVMFCode, "-device qemu-xhci,id=xhci",
				"usb-storage,bus=xhci.0,removable=on,drive=disk0,bootindex=0", "virtio-blk-pci,drive=disk1", "file=/ro,format=raw,if=none,id=disk2,readonly=on", "nvme,drive=disk2"},
		},
		{
			name: "network boot",
			cfg:  Config{Name: "c", Dir: dir, Accel: TCG, BootNet: true},
			want: []string{"-boot n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &VM{MAC: []byte{0x52, 0x54, 0, 1, 2, 3}}
			args, err := v.args(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			line := strings.Join(args, " ")
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("command line lacks %q:\n%s", w, line)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(line, w) {
					t.Errorf("command line has %q:\n%s", w, line)
				}
			}
		})
	}
}

// TestBootKernel boots the stock kernel with no initramfs: it must reach its
// panic about the missing root file system, and Close must end QEMU.
func TestBootKernel(t *testing.T) {
	if os.Getenv("SHOAL_SKIP_VM") == "1" {
		t.Skip("SHOAL_SKIP_VM=1")
	}
	kernel := hostKernel()
	if err := Available(BIOS); err != nil || kernel == "" {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("SHOAL_REQUIRE_LAB=1 but QEMU or a kernel is missing: %v", err)
		}
		t.Skipf("skipping: %v (kernel %q)", err, kernel)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	start := time.Now()
	accel := DetectAccel(ctx, kernel, log)
	t.Logf("accelerator %s (probe took %s)", accel, time.Since(start).Round(time.Millisecond))
	v, err := Start(ctx, Config{Name: "panic", Dir: t.TempDir(), Accel: accel, Kernel: kernel, Append: "console=ttyS0 panic=-1", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.WaitFor(ctx, regexp.MustCompile(`VFS: Unable to mount root|Kernel panic`)); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel reached its root panic in %s", time.Since(start).Round(100*time.Millisecond))
	// panic=-1 reboots at once and -no-reboot makes QEMU exit.
	if err := v.Wait(ctx); err != nil {
		t.Errorf("Wait: %v", err)
	}
	v.Close()
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(v.LogPath), "panic-serial.log")); err != nil || !strings.Contains(string(b), "Linux version") {
		t.Errorf("serial log: %v, %d bytes", err, len(b))
	}
}
