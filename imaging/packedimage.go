package imaging

import (
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
)

// PackedImage is an open packed image file. It is a Source: ReadChunk
// returns a chunk's wire (compressed) bytes straight from the file.
// OpenPacked checks the file's structure only; Verify checks every byte.
type PackedImage struct {
	f        *os.File
	format   string
	hdr      packedHeader
	m        *Manifest
	offsets  []int64 // file offset of each chunk's wire bytes
	fileSize int64
}

// OpenPacked opens a packed image and checks its header, its manifest and
// its size, but not its chunks (see Verify).
func OpenPacked(path string) (*PackedImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open packed image: %w", err)
	}
	p, err := readPacked(f, "packed")
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packed image %s: %w", path, err)
	}
	return p, nil
}

// readPacked reads a packed image's header and manifest from f, which it
// keeps on success.
func readPacked(f *os.File, format string) (*PackedImage, error) {
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	b := make([]byte, packedHeaderSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%w: file of %d bytes is shorter than a header", ErrPacked, size)
		}
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, err := parsePackedHeader(b)
	if err != nil {
		return nil, err
	}
	if end := h.end(); end != size {
		return nil, fmt.Errorf("%w: the header describes %d bytes, the file has %d (truncated or appended to)", ErrPacked, end, size)
	}
	mb := make([]byte, h.ManifestLength)
	if _, err := f.ReadAt(mb, h.ManifestOffset); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if got := crc32.Checksum(mb, castagnoli()); got != h.ManifestCRC {
		return nil, fmt.Errorf("%w: manifest checksum mismatch (header says %08x, the manifest section has %08x): the manifest is corrupt", ErrPacked, h.ManifestCRC, got)
	}
	m := new(Manifest)
	if err := m.UnmarshalBinary(mb); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPacked, err)
	}
	p := &PackedImage{f: f, format: format, hdr: h, m: m, fileSize: size, offsets: make([]int64, len(m.Chunks))}
	pos := h.DataOffset
	for i, c := range m.Chunks {
		p.offsets[i] = pos
		pos += int64(c.WireSize)
	}
	if pos-h.DataOffset != h.DataLength {
		return nil, fmt.Errorf("%w: the manifest's chunks hold %d bytes, the data section %d", ErrPacked, pos-h.DataOffset, h.DataLength)
	}
	return p, nil
}

// Manifest is the image's manifest.
func (p *PackedImage) Manifest() *Manifest { return p.m }

// Format is "packed", or "zstd" for a zstd-compressed raw image that
// Open repacked.
func (p *PackedImage) Format() string { return p.format }

// Version is the packed format version of the file.
func (p *PackedImage) Version() int { return int(p.hdr.Version) }

// FileSize is the packed file's size in bytes.
func (p *PackedImage) FileSize() int64 { return p.fileSize }

// ChunkFileOffset is where chunk i's wire bytes start in the file.
func (p *PackedImage) ChunkFileOffset(i int) int64 { return p.offsets[i] }

// ReadChunk appends chunk i's wire bytes, as stored, to dst.
func (p *PackedImage) ReadChunk(i int, dst []byte) ([]byte, error) {
	if i < 0 || i >= len(p.m.Chunks) {
		return dst, fmt.Errorf("chunk %d out of range", i)
	}
	n := int(p.m.Chunks[i].WireSize)
	if n == 0 {
		return dst, nil
	}
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := p.f.ReadAt(dst[start:], p.offsets[i]); err != nil {
		return dst[:start], fmt.Errorf("read chunk %d at file offset %d: %w", i, p.offsets[i], err)
	}
	return dst, nil
}

// Close closes the file.
func (p *PackedImage) Close() error { return p.f.Close() }
