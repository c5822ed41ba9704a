package boot

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSys makes a sysfs tree with disks: name → {size in sectors,
// removable, link target under devices, model}.
func fakeSys(t *testing.T, disks map[string][4]string, parts map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, d := range disks {
		dev := filepath.Join(root, "sys/devices", d[2], name)
		for file, v := range map[string]string{"size": d[0], "removable": d[1], "device/model": d[3]} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dev, file)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dev, file), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, dir := range []string{"sys/block", "sys/class/block"} {
			os.MkdirAll(filepath.Join(root, dir), 0o755)
			if err := os.Symlink(dev, filepath.Join(root, dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for part, disk := range parts {
		dev := filepath.Join(root, "sys/devices", disks[disk][2], disk, part)
		os.MkdirAll(dev, 0o755)
		os.WriteFile(filepath.Join(dev, "partition"), []byte("1\n"), 0o644)
		if err := os.Symlink(dev, filepath.Join(root, "sys/class/block", part)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDisks(t *testing.T) {
	root := fakeSys(t, map[string][4]string{
		"vda":   {"16777216", "0", "pci0000:00/0000:00:04.0/virtio1/block", ""},
		"sda":   {"131072", "1", "pci0000:00/0000:00:05.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0/block", "QEMU HARDDISK"},
		"loop0": {"1000", "0", "virtual/block", ""},
		"sr0":   {"0", "1", "pci0000:00/ata/block", "DVD"},
		"sdb":   {"0", "1", "pci0000:00/0000:00:05.0/usb1/1-2/block", "Card reader"},
	}, map[string]string{"sda1": "sda"})

	disks, err := ListDisks(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 || disks[0].Name != "sda" || disks[1].Name != "vda" {
		t.Fatalf("ListDisks = %+v", disks)
	}
	if d := disks[0]; !d.Removable || d.Transport != "usb" || d.Size != 64<<20 || d.Model != "QEMU HARDDISK" {
		t.Errorf("sda = %+v", d)
	}
	if d := disks[1]; d.Removable || d.Transport != "virtio" || d.Size != 8<<30 {
		t.Errorf("vda = %+v", d)
	}

	for _, tt := range []struct {
		target string
		bad    bool
	}{{"/dev/sda", true}, {"/dev/sda1", true}, {"/dev/vda", false}} {
		if err := CheckTarget(root, tt.target, "sda"); (err != nil) != tt.bad || (tt.bad && !errors.Is(err, ErrBootMedium)) {
			t.Errorf("CheckTarget(%s) = %v", tt.target, err)
		}
	}
}

func TestAskDisk(t *testing.T) {
	disks := []Disk{
		{Name: "sda", Path: "/dev/sda", Size: 64 << 20, Transport: "usb", Removable: true},
		{Name: "vda", Path: "/dev/vda", Size: 8 << 30, Transport: "virtio"},
		{Name: "vdb", Path: "/dev/vdb", Size: 8 << 30, Transport: "virtio"},
	}
	tests := []struct {
		name  string
		input string
		want  string
		err   error
	}{
		{name: "second choice, yes", input: "2\ny\n", want: "vdb"},
		{name: "default is no, then yes", input: "1\n\n1\nYES\n", want: "vda"},
		{name: "bad number then shell", input: "7\ns\n", err: errShell},
		{name: "the boot stick is not offered", input: "3\nq\n", err: errShell},
		{name: "input ends", input: "1\n", err: errEOFForTest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			con := NewConsole(strings.NewReader(tt.input), &out)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			d, err := AskDisk(ctx, con, disks, "sda", "lab1")
			if tt.err == errEOFForTest {
				if !isEOF(err) {
					t.Fatalf("err = %v, want EOF", err)
				}
				return
			}
			if !errors.Is(err, tt.err) || d.Name != tt.want {
				t.Errorf("AskDisk = %q, %v; want %q, %v\n%s", d.Name, err, tt.want, tt.err, out.String())
			}
			if !strings.Contains(out.String(), "boot medium, not allowed") {
				t.Errorf("the listing does not mark the boot medium:\n%s", out.String())
			}
		})
	}
}

var errEOFForTest = errors.New("eof")

func TestFATLabel(t *testing.T) {
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		t.Skip("mkfs.vfat not installed (dosfstools)")
	}
	for _, tt := range []struct {
		fat  string
		size string
	}{{"12", "4"}, {"16", "16"}, {"32", "40"}} {
		img := filepath.Join(t.TempDir(), "fat.img")
		if out, err := exec.Command("truncate", "-s", tt.size+"M", img).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := exec.Command("mkfs.vfat", "-F", tt.fat, "-n", "SHOAL", img).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		label, ok := readFATLabel(img)
		if !ok || label != StickLabel {
			t.Errorf("FAT%s: label %q, %v", tt.fat, label, ok)
		}
	}
	if _, ok := FATLabel(make([]byte, 512)); ok {
		t.Error("zeros taken for FAT")
	}
}
