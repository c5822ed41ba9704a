package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// StickLabel is the FAT volume label make usb gives the stick's partition.
// A FAT file system with this label marks its disk as the boot medium even
// when the settings file is gone.
const StickLabel = "SHOAL"

// Stick is the boot medium found by its settings file or label.
type Stick struct {
	Disk      string // whole disk, e.g. sda
	Partition string // the FAT partition, e.g. sda1
	Label     string
	// File is the settings file's name on the stick; Pairs its settings
	// and Warnings what could not be read of it. Empty if there is none.
	File     string
	Pairs    []Pair
	Warnings []string
}

// FATLabel tells whether a boot sector is that of a FAT file system and
// returns its volume label.
func FATLabel(sector []byte) (label string, ok bool) {
	if len(sector) < 512 || sector[510] != 0x55 || sector[511] != 0xAA {
		return "", false
	}
	switch {
	case bytes.HasPrefix(sector[82:], []byte("FAT32   ")):
		return strings.TrimSpace(string(sector[71:82])), true
	case bytes.HasPrefix(sector[54:], []byte("FAT12   ")), bytes.HasPrefix(sector[54:], []byte("FAT16   ")),
		bytes.HasPrefix(sector[54:], []byte("FAT     ")):
		return strings.TrimSpace(string(sector[43:54])), true
	}
	return "", false
}

// FindStick looks at every block device (partitions and whole disks) for a
// FAT file system; it mounts each one read-only under mountDir, looks for
// the settings file named name (any letter case) at its root, and unmounts
// it. It returns the first that has the file, else the first whose label
// is StickLabel, else nil. It never writes to any device.
func FindStick(root, mountDir, name string, log *slog.Logger) (*Stick, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	devs, err := os.ReadDir(filepath.Join(root, "sys/class/block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	names := make([]string, 0, len(devs))
	for _, d := range devs {
		if !skipDisk(d.Name()) {
			names = append(names, d.Name())
		}
	}
	sort.Strings(names)
	var labelled *Stick
	for _, dev := range names {
		label, ok := readFATLabel(filepath.Join(root, "dev", dev))
		if !ok {
			continue
		}
		st := &Stick{Disk: diskOf(root, "/dev/"+dev), Partition: dev, Label: label}
		if name != "" {
			if err := readSettingsFrom(st, "/dev/"+dev, filepath.Join(mountDir, dev), name); err != nil {
				log.Warn("could not look into FAT file system", "device", dev, "err", err)
			}
		}
		log.Debug("FAT file system", "device", dev, "label", label, "settings", st.File)
		if st.File != "" {
			return st, nil
		}
		if labelled == nil && strings.EqualFold(label, StickLabel) {
			labelled = st
		}
	}
	return labelled, nil
}

func readFATLabel(dev string) (string, bool) {
	f, err := os.Open(dev)
	if err != nil {
		return "", false
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := io.ReadFull(f, b); err != nil {
		return "", false
	}
	return FATLabel(b)
}

// readSettingsFrom mounts dev read-only on dir, reads the settings file into
// st if there is one, and unmounts.
func readSettingsFrom(st *Stick, dev, dir, name string) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount(dev, dir, "vfat", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount %s read-only: %w", dev, err)
	}
	defer func() {
		if uerr := unix.Unmount(dir, 0); uerr != nil {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
			err = errors.Join(err, fmt.Errorf("unmount %s: %w", dir, uerr))
		}
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.EqualFold(e.Name(), name) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("open settings: %w", err)
		}
		defer f.Close()
		st.Pairs, st.Warnings, err = FilePairs(f)
		st.File = e.Name()
		return err
	}
	return nil
}
