package imaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ChunkChecker reads chunks back from a target, bypassing the page cache,
// and checks them against the manifest. A client runs one on its own
// goroutine beside the Writer, so the read-back of a disk overlaps the
// transfer instead of following it. It is not safe for concurrent use.
type ChunkChecker struct {
	t      *Target
	m      *Manifest
	direct *directIO
	buf    []byte
}

// NewChunkChecker returns a checker for chunks of m on t.
func NewChunkChecker(t *Target, m *Manifest) *ChunkChecker {
	return &ChunkChecker{t: t, m: m, direct: openDirect(t.path, os.O_RDONLY, t.sector), buf: alignedBuffer(m.ChunkSize)}
}

// read reads chunk i back into the checker's buffer.
func (c *ChunkChecker) read(i int) ([]byte, error) {
	off, n := c.m.ChunkRange(i)
	buf := c.buf[:n]
	ok, err := c.direct.readAt(buf, off)
	if !ok && err == nil {
		// No O_DIRECT here (a file on tmpfs, say): read through the cache
		// after asking the kernel to drop the range.
		c.t.dropRange(off, int64(n))
		_, err = c.t.f.ReadAt(buf, off)
	}
	if err != nil {
		return nil, fmt.Errorf("read back chunk %d at %d: %w", i, off, err)
	}
	return buf, nil
}

// Check reads chunk i back and reports whether it matches the manifest.
// Chunk i must be on the disk already (see Writer.HeadChunks).
func (c *ChunkChecker) Check(i int) (bool, error) {
	buf, err := c.read(i)
	if err != nil {
		return false, err
	}
	return sha256.Sum256(buf) == c.m.Chunks[i].SHA256, nil
}

// Close releases the checker's descriptor. It is idempotent.
func (c *ChunkChecker) Close() error {
	if c.direct == nil || c.direct.f == nil {
		return nil
	}
	err := c.direct.f.Close()
	c.direct.f = nil
	return err
}

// HeadChunks is how many leading chunks the Writer keeps in memory until
// Finish: a ChunkChecker can check the others as soon as they are written,
// and VerifyHead checks these after Finish.
func (w *Writer) HeadChunks() int { return w.headChunks }

// VerifyHead reads back, after Finish, what Finish wrote: the head chunks
// (with the GPT fix-ups in them checked and the image's original bytes put
// back before hashing, as Verify does) and the backup GPT past the image.
// It returns the first head chunk that differs, or -1.
func (w *Writer) VerifyHead(ctx context.Context, c *ChunkChecker) (int, error) {
	if !w.finished {
		return -1, fmt.Errorf("writer: VerifyHead before Finish")
	}
	if err := w.t.Sync(); err != nil {
		return -1, err
	}
	for i := 0; i < w.headChunks; i++ {
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		buf, err := c.read(i)
		if err != nil {
			return -1, err
		}
		off, _ := w.m.ChunkRange(i)
		good := applyPatches(buf, off, w.patches)
		if !good || sha256.Sum256(buf) != w.m.Chunks[i].SHA256 {
			return i, nil
		}
	}
	for _, r := range w.tail {
		got := make([]byte, len(r.data))
		if _, err := w.t.f.ReadAt(got, r.off); err != nil {
			return -1, fmt.Errorf("read back the backup GPT at %d: %w", r.off, err)
		}
		if !bytes.Equal(got, r.data) {
			return -1, fmt.Errorf("read back: the backup GPT at %d differs from what was written", r.off)
		}
	}
	return -1, nil
}

// dropRange writes back and drops one range of the target from the page
// cache, so a buffered read of it comes from the disk.
func (t *Target) dropRange(off, n int64) {
	fd := int(t.f.Fd())
	_ = unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	_ = unix.Fadvise(fd, off, n, unix.FADV_DONTNEED)
}
