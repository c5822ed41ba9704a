package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shoal-lab/shoal/imaging"
)

// Disk is a block device that could be imaged.
type Disk struct {
	Name      string // kernel name, e.g. sda
	Path      string // /dev/sda
	Size      int64  // bytes
	Model     string // vendor and model as the device reports them
	Removable bool
	Transport string // usb, nvme, virtio, mmc, ata/scsi
}

func (d Disk) String() string {
	var flags []string
	if d.Removable {
		flags = append(flags, "removable")
	}
	flags = append(flags, d.Transport)
	model := d.Model
	if model == "" {
		model = "(no model name)"
	}
	return fmt.Sprintf("%-14s %10s  %-28s %s", d.Path, imaging.HumanBytes(d.Size), model, strings.Join(flags, ", "))
}

// skipDisk tells the block devices that are never imaging targets.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "mtdblock"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ListDisks lists the whole disks under root/sys/block, sorted by name,
// leaving out loop, RAM, optical and mapper devices and empty card readers.
func ListDisks(root string) ([]Disk, error) {
	sys := filepath.Join(root, "sys/block")
	entries, err := os.ReadDir(sys)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var out []Disk
	for _, e := range entries {
		name := e.Name()
		if skipDisk(name) {
			continue
		}
		dir := filepath.Join(sys, name)
		sectors, err := strconv.ParseInt(readTrim(filepath.Join(dir, "size")), 10, 64)
		if err != nil || sectors == 0 {
			continue
		}
		d := Disk{
			Name:      name,
			Path:      "/dev/" + name,
			Size:      sectors * 512, // sysfs counts 512-byte sectors whatever the device's
			Removable: readTrim(filepath.Join(dir, "removable")) == "1",
			Model:     diskModel(dir),
		}
		target, _ := os.Readlink(dir)
		switch {
		case strings.Contains(target, "/usb"):
			d.Transport = "usb"
		case strings.HasPrefix(name, "nvme"):
			d.Transport = "nvme"
		case strings.HasPrefix(name, "vd") || strings.Contains(target, "/virtio"):
			d.Transport = "virtio"
		case strings.HasPrefix(name, "mmcblk"):
			d.Transport = "mmc"
		default:
			d.Transport = "ata/scsi"
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// diskModel is the vendor and model a disk reports; virtio disks report a
// PCI vendor number only, which is left out.
func diskModel(dir string) string {
	vendor := readTrim(filepath.Join(dir, "device/vendor"))
	if strings.HasPrefix(vendor, "0x") {
		vendor = ""
	}
	return strings.Join(strings.Fields(vendor+" "+readTrim(filepath.Join(dir, "device/model"))), " ")
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ErrBootMedium means the chosen target is the medium the client booted
// from.
var ErrBootMedium = errors.New("that is the boot medium")

// ErrNoDisk means no disk can be chosen.
var ErrNoDisk = errors.New("no disk to image")

// diskOf returns the whole disk a device path names: "/dev/sda1" → "sda",
// "/dev/nvme0n1p2" → "nvme0n1", "/dev/vda" → "vda". It looks in
// root/sys/class/block for partitions, and falls back to the name.
func diskOf(root, path string) string {
	name := filepath.Base(path)
	dir := filepath.Join(root, "sys/class/block", name)
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Base(filepath.Dir(real))
		}
	}
	return name
}

// CheckTarget refuses a target on the boot disk.
func CheckTarget(root, target, bootDisk string) error {
	if bootDisk != "" && diskOf(root, target) == bootDisk {
		return fmt.Errorf("%s: %w (/dev/%s); choose another disk", target, ErrBootMedium, bootDisk)
	}
	return nil
}

func diskNames(disks []Disk) string {
	if len(disks) == 0 {
		return "none"
	}
	names := make([]string, len(disks))
	for i, d := range disks {
		names[i] = d.Name
	}
	return strings.Join(names, ", ")
}

// errShell means the person at the console asked for a shell.
var errShell = errors.New("shell requested at the console")

// AskDisk lists the disks on the console and asks which one to image,
// then asks to proceed, defaulting to No, the way Ghost did. It returns
// errShell when the person asks for a shell, and io.EOF when the console
// has no input.
func AskDisk(ctx context.Context, con *Console, disks []Disk, bootDisk, session string) (Disk, error) {
	for {
		lines := []string{fmt.Sprintf("     %-14s %10s  %-28s %s", "device", "size", "model", "")}
		var choices []Disk
		for _, d := range disks {
			note := ""
			if d.Name == bootDisk {
				note = "  <- boot medium, not allowed"
			} else {
				choices = append(choices, d)
			}
			n := "   "
			if note == "" {
				n = fmt.Sprintf("%2d)", len(choices))
			}
			lines = append(lines, fmt.Sprintf("%s  %s%s", n, d, note))
		}
		con.Banner("Choose the disk to image", lines...)
		if len(choices) == 0 {
			return Disk{}, fmt.Errorf("%w: no disk found besides the boot medium (disks: %s)", ErrNoDisk, diskNames(disks))
		}
		ans, err := con.Ask(ctx, fmt.Sprintf("Write session %q to which disk? [1-%d, r to rescan, s for a shell]: ", session, len(choices)))
		if err != nil {
			return Disk{}, err
		}
		switch strings.ToLower(ans) {
		case "s", "shell", "q":
			return Disk{}, errShell
		case "r", "":
			return Disk{}, errRescan
		}
		n, err := strconv.Atoi(ans)
		if err != nil || n < 1 || n > len(choices) {
			con.Printf("%q is not one of the numbers 1 to %d.\n", ans, len(choices))
			continue
		}
		d := choices[n-1]
		ans, err = con.Ask(ctx, fmt.Sprintf("ALL DATA on %s (%s, %s) will be replaced. Proceed? [y/N]: ",
			d.Path, imaging.HumanBytes(d.Size), orUnknown(d.Model)))
		if err != nil {
			return Disk{}, err
		}
		if a := strings.ToLower(ans); a == "y" || a == "yes" {
			return d, nil
		}
		con.Printf("Not writing %s.\n", d.Path)
	}
}

// errRescan asks for the disks to be listed again.
var errRescan = errors.New("rescan disks")

func orUnknown(s string) string {
	if s == "" {
		return "no model name"
	}
	return s
}

// isEOF tells a console without input.
func isEOF(err error) bool { return errors.Is(err, io.EOF) }
