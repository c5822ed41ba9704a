package imaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ReadBackResult is what a read back of the written image found.
type ReadBackResult struct {
	SHA256 [32]byte
	Bytes  int64
	// BadChunk is the first chunk whose bytes differ from the manifest, or
	// -1 if the whole image matched.
	BadChunk int
}

// patch is a deliberate change the writer made inside the image's range
// (a GPT fix-up): the disk holds want where the image has orig.
type patch struct {
	off        int64
	orig, want []byte
}

// ReadBack flushes the target and reads the image's range back from the
// device itself, not the page cache: with O_DIRECT where the target allows
// it, otherwise after dropping the cache (fadvise DONTNEED, and BLKFLSBUF
// on a block device). It hashes every chunk against the manifest, on all
// cores, and the whole range in order; BadChunk names the first chunk that
// differs.
func (t *Target) ReadBack(ctx context.Context, m *Manifest, progress func(done int64)) (ReadBackResult, error) {
	return t.readBack(ctx, m, nil, progress)
}

// readBack is ReadBack where patches are expected on the disk: each must
// be there, and is hashed as the image's original bytes, so the result
// matches the manifest exactly when the disk holds the image plus the
// patches.
func (t *Target) readBack(ctx context.Context, m *Manifest, patches []patch, progress func(done int64)) (ReadBackResult, error) {
	res := ReadBackResult{BadChunk: -1}
	if err := t.Sync(); err != nil {
		return res, err
	}
	t.dropCache()
	direct := openDirect(t.path, os.O_RDONLY, t.sector)
	defer direct.Close()

	workers := defaultWorkers(0)
	bufs := newBufPool(2*workers+2, m.ChunkSize, alignedBuffer)
	whole := sha256.New()
	produce := func(ctx context.Context, i int) ([]byte, bool, error) {
		if i >= len(m.Chunks) {
			return nil, false, nil
		}
		buf, err := bufs.get(ctx)
		if err != nil {
			return nil, false, err
		}
		off, n := m.ChunkRange(i)
		buf = buf[:n]
		ok, err := direct.readAt(buf, off)
		if !ok && err == nil {
			_, err = t.f.ReadAt(buf, off)
		}
		if err != nil {
			bufs.put(buf)
			return nil, false, fmt.Errorf("read back %s, chunk %d at %d: %w", t.path, i, off, err)
		}
		return buf, true, nil
	}
	work := func(_, i int, buf []byte) (bool, error) {
		off, _ := m.ChunkRange(i)
		good := applyPatches(buf, off, patches)
		return good && sha256.Sum256(buf) == m.Chunks[i].SHA256, nil
	}
	consume := func(i int, buf []byte, good bool) error {
		defer bufs.put(buf)
		whole.Write(buf)
		res.Bytes += int64(len(buf))
		if !good && res.BadChunk < 0 {
			res.BadChunk = i
		}
		if progress != nil {
			progress(res.Bytes)
		}
		return nil
	}
	if err := runPipeline(ctx, workers, 0, produce, work, consume); err != nil {
		return res, err
	}
	copy(res.SHA256[:], whole.Sum(nil))
	if res.BadChunk < 0 && res.SHA256 != m.ImageSHA256 {
		// Every chunk matched but the whole did not: the manifest is
		// inconsistent, not the disk. Say so rather than blame a chunk.
		return res, fmt.Errorf("read back %s: %w although every chunk matched", t.path, ErrImageHash)
	}
	return res, nil
}

// applyPatches checks that buf (the image bytes at off) holds each
// overlapping patch's wanted bytes and puts the image's original bytes
// back in their place. It reports whether every patch was there.
func applyPatches(buf []byte, off int64, patches []patch) bool {
	good := true
	end := off + int64(len(buf))
	for _, p := range patches {
		pend := p.off + int64(len(p.want))
		lo, hi := max(off, p.off), min(end, pend)
		if lo >= hi {
			continue
		}
		disk := buf[lo-off : hi-off]
		if !bytes.Equal(disk, p.want[lo-p.off:hi-p.off]) {
			good = false
		}
		copy(disk, p.orig[lo-p.off:hi-p.off])
	}
	return good
}

// dropCache asks the kernel to forget cached pages of the target, so a
// buffered read back comes from the disk and not from memory.
func (t *Target) dropCache() {
	_ = unix.Fadvise(int(t.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if t.block {
		_ = ioctl(t.f, unix.BLKFLSBUF, nil)
	}
}
