package imaging

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Target is the disk a client writes: a block device or a regular file
// (which is created if needed and ends up exactly the image's size).
type Target struct {
	f         *os.File
	path      string
	size      int64 // bytes of a block device; 0 for a regular file, which grows
	block     bool
	partition bool // a partition of a disk (it has no partition table of its own)
	sector    int  // logical block size: 512 for files
}

// ErrTooSmall marks a disk smaller than the image.
var ErrTooSmall = errors.New("disk is smaller than the image")

// OpenTarget opens path for writing without changing it.
func OpenTarget(path string) (*Target, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("create target file: %w", err)
		}
		return &Target{f: f, path: path, sector: 512}, nil
	case err != nil:
		return nil, fmt.Errorf("target: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("target %s is a directory: give a disk device (e.g. /dev/sda) or a file", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	t := &Target{f: f, path: path, sector: 512}
	if fi.Mode()&os.ModeDevice != 0 {
		if fi.Mode()&os.ModeCharDevice != 0 {
			f.Close()
			return nil, fmt.Errorf("target %s is a character device: give a block device or a file", path)
		}
		t.block = true
		if t.size, err = fileSize(f); err != nil {
			f.Close()
			return nil, err
		}
		if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss >= 512 {
			t.sector = ss
		}
		t.partition = isPartition(sysfsRoot, f)
	}
	return t, nil
}

// sysfsRoot is where sysfs is mounted.
const sysfsRoot = "/sys"

// isPartition reports whether the block device open as f is a partition
// (sysfs gives partitions a "partition" attribute; whole disks, and loop
// devices without partition scanning, have none).
func isPartition(sys string, f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("%s/dev/block/%d:%d/partition", sys, unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	return err == nil
}

// Path is the target's path.
func (t *Target) Path() string { return t.path }

// IsBlockDevice reports whether the target is a block device.
func (t *Target) IsBlockDevice() bool { return t.block }

// Size is the capacity of a block device in bytes, or 0 for a regular file
// (which grows to fit).
func (t *Target) Size() int64 { return t.size }

// IsPartition reports whether the target is a partition of a disk rather
// than a whole disk.
func (t *Target) IsPartition() bool { return t.partition }

// SectorSize is the target's logical block size (512 for a file).
func (t *Target) SectorSize() int { return t.sector }

// CheckFits returns an error wrapping ErrTooSmall, naming both sizes, if an
// image of imageSize bytes does not fit.
func (t *Target) CheckFits(imageSize int64) error {
	if t.block && t.size < imageSize {
		return fmt.Errorf("%w: %s is %s (%d bytes), the image is %s (%d bytes); use a disk at least as large as the image",
			ErrTooSmall, t.path, HumanBytes(t.size), t.size, HumanBytes(imageSize), imageSize)
	}
	return nil
}

// Prepare readies the target for an image of imageSize bytes: a regular
// file is cut or extended to exactly that size.
func (t *Target) Prepare(imageSize int64) error {
	if err := t.CheckFits(imageSize); err != nil {
		return err
	}
	if !t.block {
		if err := t.f.Truncate(imageSize); err != nil {
			return fmt.Errorf("size target file: %w", err)
		}
	}
	return nil
}

// WriteAt writes b at off.
func (t *Target) WriteAt(b []byte, off int64) error {
	if _, err := t.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write %d bytes at %d to %s: %w", len(b), off, t.path, err)
	}
	return nil
}

// Zero makes n bytes at off read as zeros, as cheaply as the target
// allows: BLKZEROOUT on a block device, a punched hole in a file, plain
// writes of zeros otherwise.
func (t *Target) Zero(off, n int64) error {
	if t.block {
		rng := [2]uint64{uint64(off), uint64(n)}
		if err := ioctl(t.f, unix.BLKZEROOUT, unsafe.Pointer(&rng)); err == nil {
			return nil
		}
	} else if err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
		return nil
	}
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if err := t.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Sync flushes everything written to stable storage.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", t.path, err)
	}
	return nil
}

// rereadPartitions asks the kernel to read the partition table of a
// whole-disk block device again (BLKRRPART). Partitions, loop devices
// without partition scanning and files answer EINVAL or ENOTTY, which
// means there is nothing to do.
func (t *Target) rereadPartitions() error {
	if !t.block || t.partition {
		return nil
	}
	if err := ioctl(t.f, unix.BLKRRPART, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("re-read the partition table of %s: %w", t.path, err)
	}
	return nil
}

// Close closes the target.
func (t *Target) Close() error { return t.f.Close() }

// ioctl issues an ioctl on f whose argument is a pointer (or nil).
func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno error
	if err := conn.Control(func(fd uintptr) {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg)); e != 0 {
			errno = e
		}
	}); err != nil {
		return err
	}
	return errno
}

// HumanBytes formats n with a binary unit, e.g. "64.0 MiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
