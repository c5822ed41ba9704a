package imaging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
)

// Source is an image the server sends: its manifest, and each chunk's wire
// bytes (what travels in data packets) on demand. Sources are safe for
// concurrent use.
type Source interface {
	Manifest() *Manifest
	// ReadChunk appends the wire bytes of chunk i to dst. Zero chunks have
	// no wire bytes.
	ReadChunk(i int, dst []byte) ([]byte, error)
	// Format names the image format for people ("raw", "packed", …).
	Format() string
	Close() error
}

// OpenOptions tune how an image is opened.
type OpenOptions struct {
	// ChunkSize for images that do not fix their own (raw images); zero
	// means DefaultChunkSize.
	ChunkSize int
	// Progress, if set, is called with bytes scanned so far while a raw
	// image is hashed.
	Progress func(done, total int64)
}

// Open opens the image at path for serving. The format is detected from
// the content, not the file name.
func Open(ctx context.Context, path string, opts OpenOptions) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	src, err := openRaw(ctx, f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return src, nil
}

// rawSource serves an uncompressed image file; its manifest is computed
// when it is opened.
type rawSource struct {
	f        *os.File
	manifest *Manifest
}

func openRaw(ctx context.Context, f *os.File, opts OpenOptions) (*rawSource, error) {
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, errors.New("image is empty")
	}
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	m, err := scanRaw(ctx, f, size, chunkSize, opts.Progress)
	if err != nil {
		return nil, err
	}
	return &rawSource{f: f, manifest: m}, nil
}

// fileSize is the size of a regular file or a block device.
func fileSize(f *os.File) (int64, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", f.Name(), err)
	}
	return size, nil
}

// scanRaw hashes every chunk of a raw image on all cores, hashes the whole
// image in order, and marks all-zero chunks.
func scanRaw(ctx context.Context, r io.ReaderAt, size int64, chunkSize int, progress func(done, total int64)) (*Manifest, error) {
	m := &Manifest{ImageSize: size, ChunkSize: chunkSize, Chunks: make([]ChunkInfo, ChunkCount(size, chunkSize))}
	workers := runtime.GOMAXPROCS(0)
	type job struct {
		i   int
		buf []byte
	}
	free := make(chan []byte, 2*workers)
	for range cap(free) {
		free <- make([]byte, chunkSize)
	}
	jobs := make(chan job, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				c := &m.Chunks[j.i]
				_, n := m.ChunkRange(j.i)
				if isZero(j.buf[:n]) {
					c.Encoding, c.WireSize = EncodingZero, 0
				} else {
					c.Encoding, c.WireSize = EncodingRaw, uint32(n)
				}
				c.SHA256 = sha256.Sum256(j.buf[:n])
				free <- j.buf
			}
		}()
	}
	whole := sha256.New()
	var err error
	for i := range m.Chunks {
		if err = ctx.Err(); err != nil {
			break
		}
		buf := <-free
		off, n := m.ChunkRange(i)
		if _, err = r.ReadAt(buf[:n], off); err != nil {
			err = fmt.Errorf("read chunk %d at %d: %w", i, off, err)
			break
		}
		whole.Write(buf[:n])
		jobs <- job{i, buf}
		if progress != nil {
			progress(off+int64(n), size)
		}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	copy(m.ImageSHA256[:], whole.Sum(nil))
	return m, nil
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

func (s *rawSource) Manifest() *Manifest { return s.manifest }
func (s *rawSource) Format() string      { return "raw" }
func (s *rawSource) Close() error        { return s.f.Close() }

func (s *rawSource) ReadChunk(i int, dst []byte) ([]byte, error) {
	if i < 0 || i >= len(s.manifest.Chunks) {
		return dst, fmt.Errorf("chunk %d out of range", i)
	}
	if s.manifest.Chunks[i].Encoding == EncodingZero {
		return dst, nil
	}
	off, n := s.manifest.ChunkRange(i)
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := s.f.ReadAt(dst[start:], off); err != nil {
		return dst[:start], fmt.Errorf("read chunk %d: %w", i, err)
	}
	// The file may have changed since it was scanned: never send bytes the
	// manifest does not vouch for.
	if err := s.manifest.CheckChunk(i, dst[start:]); err != nil {
		return dst[:start], fmt.Errorf("image changed since it was opened: %w", err)
	}
	return dst, nil
}
