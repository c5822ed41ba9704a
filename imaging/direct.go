package imaging

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT buffers get: a page, which is a
// multiple of every logical block size in use (512, 4096).
const directAlign = 4096

// alignedBuffer returns n bytes whose start is aligned to directAlign, as
// O_DIRECT needs. (Go's heap does not move objects, so the alignment
// holds.)
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1)); r != 0 {
		skip = directAlign - r
	}
	return b[skip : skip+n : skip+n]
}

// isAligned reports whether b's start is aligned for O_DIRECT.
func isAligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(directAlign-1) == 0
}

// directIO is a second descriptor of the target opened with O_DIRECT, for
// large aligned transfers that bypass the page cache. Where the device or
// the file system refuses O_DIRECT (tmpfs, some FUSE and network file
// systems) it stays off and the buffered descriptor does the work.
type directIO struct {
	f     *os.File // nil when O_DIRECT is unavailable
	align int64    // offsets and lengths must be multiples of this
	buf   []byte   // aligned bounce buffer for writes
}

// openDirect opens path with O_DIRECT, or returns a directIO that is off.
func openDirect(path string, flag int, align int) *directIO {
	d := &directIO{align: int64(max(align, 512))}
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0)
	if err == nil {
		d.f = f
	}
	return d
}

// usable reports whether a transfer of n bytes at off can go direct.
func (d *directIO) usable(off int64, n int) bool {
	return d != nil && d.f != nil && off%d.align == 0 && int64(n)%d.align == 0 && n > 0
}

// writeAt writes b at off with O_DIRECT through the bounce buffer. It
// reports false if the transfer does not qualify or the kernel refused
// O_DIRECT for it (which turns it off), so the caller writes buffered.
func (d *directIO) writeAt(b []byte, off int64) (bool, error) {
	if !d.usable(off, len(b)) {
		return false, nil
	}
	src := b
	if !isAligned(b) {
		if len(d.buf) < len(b) {
			d.buf = alignedBuffer(len(b))
		}
		src = d.buf[:len(b)]
		copy(src, b)
	}
	if _, err := d.f.WriteAt(src, off); err != nil {
		if errors.Is(err, unix.EINVAL) {
			d.off()
			return false, nil
		}
		return true, fmt.Errorf("write %d bytes at %d (O_DIRECT): %w", len(b), off, err)
	}
	return true, nil
}

// readAt reads len(b) bytes at off with O_DIRECT into b, which must be
// aligned. It reports false if the transfer does not qualify or the kernel
// refused it, so the caller reads buffered.
func (d *directIO) readAt(b []byte, off int64) (bool, error) {
	if !d.usable(off, len(b)) || !isAligned(b) {
		return false, nil
	}
	if _, err := d.f.ReadAt(b, off); err != nil {
		if errors.Is(err, unix.EINVAL) {
			d.off()
			return false, nil
		}
		return true, fmt.Errorf("read %d bytes at %d (O_DIRECT): %w", len(b), off, err)
	}
	return true, nil
}

// enabled reports whether O_DIRECT is in use.
func (d *directIO) enabled() bool { return d != nil && d.f != nil }

// off turns O_DIRECT off for good.
func (d *directIO) off() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}

// Close releases the descriptor.
func (d *directIO) Close() error {
	if d == nil {
		return nil
	}
	d.off()
	return nil
}
