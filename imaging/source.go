package imaging

import (
	"bytes"
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
	// ChunkSize for images that do not fix their own (raw and zstd
	// images); zero means DefaultChunkSize.
	ChunkSize int
	// Workers is how many cores hash, verify or repack at once; zero
	// means all of them.
	Workers int
	// TempDir is where a zstd-compressed image is unpacked into a packed
	// one (an unlinked file, gone when the Source is closed); empty means
	// os.TempDir(), usually $TMPDIR or /tmp.
	TempDir string
	// Progress, if set, is called while the image is read at open (raw
	// images are hashed, packed ones verified, zstd ones repacked) with
	// the bytes of the file done so far and the file's size.
	Progress func(done, total int64)
}

// Open opens the image at path for serving. The format is detected from
// the content, not the file name:
//
//   - a packed image (it starts with "SHOALPAK") is checked and then
//     verified in full, on all cores: a bad chunk makes Open fail with a
//     *ChunkError naming it, so a corrupt image is never served;
//   - a zstd stream (it starts with the zstd frame magic 28 b5 2f fd, or a
//     skippable frame) is a compressed raw image: it is decompressed once
//     and repacked into an unlinked temporary file in TempDir, which is
//     then served like a packed image;
//   - anything else is a raw image, hashed chunk by chunk.
func Open(ctx context.Context, path string, opts OpenOptions) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	var src Source
	switch format, ferr := sniff(f); {
	case ferr != nil:
		err = ferr
	case format == "packed":
		src, err = openPackedVerified(ctx, f, opts)
	case format == "zstd":
		src, err = openZstd(ctx, f, opts)
	default:
		src, err = openRaw(ctx, f, opts)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return src, nil
}

// sniff names an image file's format from its first bytes: "packed",
// "zstd" or "raw".
func sniff(f *os.File) (string, error) {
	b := make([]byte, 8)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read image: %w", err)
	}
	switch b = b[:n]; {
	case isPacked(b):
		return "packed", nil
	case isZstd(b):
		return "zstd", nil
	}
	return "raw", nil
}

// openPackedVerified opens a packed image and verifies every chunk.
func openPackedVerified(ctx context.Context, f *os.File, opts OpenOptions) (*PackedImage, error) {
	p, err := readPacked(f, "packed")
	if err != nil {
		return nil, err
	}
	vopts := VerifyOptions{Workers: opts.Workers}
	if opts.Progress != nil {
		// Report file bytes: roughly, the share of the image verified.
		vopts.Progress = func(done, total int64) { opts.Progress(p.fileSize*done/total, p.fileSize) }
	}
	if err := p.Verify(ctx, vopts); err != nil {
		return nil, fmt.Errorf("refusing a corrupt packed image: %w", err)
	}
	return p, nil
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

// isZero reports whether b holds only zero bytes: its first byte is zero
// and every byte equals the one before it (one vectorised comparison).
func isZero(b []byte) bool {
	return len(b) == 0 || b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1])
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
