package imaging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Target is the disk a client writes: a block device or a regular file
// (which is created if needed and ends up exactly the image's size).
type Target struct {
	f     *os.File
	path  string
	size  int64 // bytes of a block device; 0 for a regular file, which grows
	block bool
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
		return &Target{f: f, path: path}, nil
	case err != nil:
		return nil, fmt.Errorf("target: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("target %s is a directory: give a disk device (e.g. /dev/sda) or a file", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	t := &Target{f: f, path: path}
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
	}
	return t, nil
}

// Path is the target's path.
func (t *Target) Path() string { return t.path }

// IsBlockDevice reports whether the target is a block device.
func (t *Target) IsBlockDevice() bool { return t.block }

// Size is the capacity of a block device in bytes, or 0 for a regular file
// (which grows to fit).
func (t *Target) Size() int64 { return t.size }

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

// dropCache asks the kernel to forget cached pages of the target, so a read
// back comes from the disk and not from memory.
func (t *Target) dropCache() {
	_ = unix.Fadvise(int(t.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if t.block {
		_ = ioctl(t.f, unix.BLKFLSBUF, nil)
	}
}

// ReadBackResult is what a read back of the written image found.
type ReadBackResult struct {
	SHA256 [32]byte
	Bytes  int64
	// BadChunk is the first chunk whose bytes differ from the manifest, or
	// -1 if the whole image matched.
	BadChunk int
}

// ReadBack flushes the target, drops it from the page cache and reads the
// image's range back, hashing it. If the whole-image hash differs from the
// manifest it reads again chunk by chunk to name the first bad chunk.
func (t *Target) ReadBack(ctx context.Context, m *Manifest, progress func(done int64)) (ReadBackResult, error) {
	res := ReadBackResult{BadChunk: -1}
	if err := t.Sync(); err != nil {
		return res, err
	}
	t.dropCache()
	whole := sha256.New()
	buf := make([]byte, 4<<20)
	r := io.NewSectionReader(t.f, 0, m.ImageSize)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n, err := io.ReadFull(r, buf)
		whole.Write(buf[:n])
		res.Bytes += int64(n)
		if progress != nil {
			progress(res.Bytes)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read back %s at %d: %w", t.path, res.Bytes, err)
		}
	}
	copy(res.SHA256[:], whole.Sum(nil))
	if res.Bytes != m.ImageSize {
		return res, fmt.Errorf("read back %s: %d bytes, the image has %d", t.path, res.Bytes, m.ImageSize)
	}
	if res.SHA256 == m.ImageSHA256 {
		return res, nil
	}
	// Find the first chunk that differs, for the report.
	chunk := make([]byte, m.ChunkSize)
	for i := range m.Chunks {
		off, n := m.ChunkRange(i)
		if _, err := t.f.ReadAt(chunk[:n], off); err != nil {
			return res, fmt.Errorf("read back chunk %d: %w", i, err)
		}
		if sha256.Sum256(chunk[:n]) != m.Chunks[i].SHA256 {
			res.BadChunk = i
			break
		}
	}
	return res, nil
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
