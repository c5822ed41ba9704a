package imaging

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// zstd frame magics (little-endian on disk).
const (
	zstdMagic          = 0xFD2FB528
	zstdSkippableMagic = 0x184D2A50 // low four bits are free
)

// isZstd reports whether b starts like a zstd stream: a frame or a
// skippable frame (which some tools put first).
func isZstd(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	v := binary.LittleEndian.Uint32(b)
	return v == zstdMagic || v&^0xF == zstdSkippableMagic
}

// openZstd serves a zstd-compressed raw image: the stream is decompressed
// once, on all cores, into a packed image in an unlinked temporary file,
// and served from there. The temporary file needs about as much free space
// as the .zst itself (both hold the non-zero data, zstd-compressed) and
// disappears when the Source is closed or the process ends. f is closed on
// success.
func openZstd(ctx context.Context, f *os.File, opts OpenOptions) (*PackedImage, error) {
	total, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(opts.TempDir, "shoal-unzstd-*.packed")
	if err != nil {
		return nil, fmt.Errorf("zstd image: temporary file: %w", err)
	}
	// Unlinked now, the file lives as long as it is open.
	os.Remove(tmp.Name())
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
		}
	}()
	read := &countingReader{r: io.NewSectionReader(f, 0, total)}
	zr, err := zstd.NewReader(bufio.NewReaderSize(read, 1<<20), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("zstd image: %w", err)
	}
	defer zr.Close()
	popts := PackOptions{ChunkSize: opts.ChunkSize, Workers: opts.Workers}
	if opts.Progress != nil {
		popts.Progress = func(int64, int64) { opts.Progress(read.n.Load(), total) }
	}
	if _, err := Pack(ctx, zr, -1, tmp, popts); err != nil {
		return nil, fmt.Errorf("zstd image: %w", err)
	}
	p, err := readPacked(tmp, "zstd")
	if err != nil {
		return nil, fmt.Errorf("zstd image: repacked: %w", err)
	}
	ok = true
	f.Close()
	return p, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
