// Package imaging knows disk images: the manifest of per-chunk SHA-256
// hashes that both ends of a session trust; the image formats the server
// reads (raw, zstd-compressed raw, and shoal's packed format, see
// docs/image-format.md) with packing and verification; the chunk decoder;
// and on the client, the disk writer with its read-back verification, GPT
// fix-ups for larger disks, and disk selection.
package imaging

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Encoding says how a chunk travels and is stored.
type Encoding uint8

// Chunk encodings.
const (
	// EncodingRaw chunks travel as their plain bytes.
	EncodingRaw Encoding = 0
	// EncodingZero chunks are all zeros: never sent, zeroed by the client.
	EncodingZero Encoding = 1
	// EncodingZstd chunks travel zstd-compressed.
	EncodingZstd Encoding = 2
)

func (e Encoding) String() string {
	switch e {
	case EncodingRaw:
		return "raw"
	case EncodingZero:
		return "zero"
	case EncodingZstd:
		return "zstd"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// Limits on chunk sizes. A chunk is also the unit the client verifies
// before writing, so it stays small enough to buffer many of them.
const (
	MinChunkSize     = 4 << 10
	MaxChunkSize     = 16 << 20
	DefaultChunkSize = 1 << 20
)

// ChunkInfo describes one chunk of the image.
type ChunkInfo struct {
	Encoding Encoding
	// WireSize is how many bytes the chunk occupies on the wire and in a
	// packed image: 0 for zero chunks, the chunk's length for raw ones,
	// the length of its zstd frame (always less than the chunk's length)
	// for zstd ones.
	WireSize uint32
	// SHA256 is the hash of the chunk's uncompressed bytes.
	SHA256 [32]byte
}

// Manifest describes an image: its size, its chunks and their hashes.
type Manifest struct {
	ImageSize   int64
	ChunkSize   int
	ImageSHA256 [32]byte // hash of the whole uncompressed image
	Chunks      []ChunkInfo
}

// ChunkCount is the number of chunks an image of size bytes has.
func ChunkCount(size int64, chunkSize int) int {
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

// ChunkRange is the offset and length of chunk i in the uncompressed image.
func (m *Manifest) ChunkRange(i int) (off int64, n int) {
	off = int64(i) * int64(m.ChunkSize)
	n = m.ChunkSize
	if rest := m.ImageSize - off; rest < int64(n) {
		n = int(rest)
	}
	return off, n
}

// WireBytes is the number of chunk bytes a session sends once.
func (m *Manifest) WireBytes() int64 {
	var n int64
	for _, c := range m.Chunks {
		n += int64(c.WireSize)
	}
	return n
}

// ErrManifest marks a manifest that is malformed or inconsistent.
var ErrManifest = errors.New("bad manifest")

// Validate checks the manifest's internal consistency.
func (m *Manifest) Validate() error {
	if m.ImageSize <= 0 {
		return fmt.Errorf("%w: image size %d", ErrManifest, m.ImageSize)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrManifest, m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if want := ChunkCount(m.ImageSize, m.ChunkSize); len(m.Chunks) != want {
		return fmt.Errorf("%w: %d chunks for %d bytes in %d-byte chunks, want %d", ErrManifest, len(m.Chunks), m.ImageSize, m.ChunkSize, want)
	}
	for i, c := range m.Chunks {
		_, n := m.ChunkRange(i)
		switch c.Encoding {
		case EncodingRaw:
			if int(c.WireSize) != n {
				return fmt.Errorf("%w: raw chunk %d has wire size %d, length %d", ErrManifest, i, c.WireSize, n)
			}
		case EncodingZero:
			if c.WireSize != 0 {
				return fmt.Errorf("%w: zero chunk %d has wire size %d", ErrManifest, i, c.WireSize)
			}
		case EncodingZstd:
			// A chunk that does not shrink is stored raw, so a zstd chunk
			// is always smaller than its uncompressed length.
			if c.WireSize == 0 || int(c.WireSize) >= n {
				return fmt.Errorf("%w: zstd chunk %d has wire size %d for %d bytes", ErrManifest, i, c.WireSize, n)
			}
		default:
			return fmt.Errorf("%w: chunk %d has unknown %s", ErrManifest, i, c.Encoding)
		}
	}
	return nil
}

// Manifest encoding, version 1:
//
//	"SHMF" | version u16 | flags u16 | image size u64 | chunk size u32 |
//	chunk count u32 | image SHA-256 [32] |
//	count × (encoding u8 | wire size u32 | SHA-256 [32]) |
//	CRC32C u32 of everything before
const (
	manifestMagic    = "SHMF"
	manifestVersion  = 1
	manifestHeadSize = 4 + 2 + 2 + 8 + 4 + 4 + 32
	manifestEntry    = 1 + 4 + 32
)

// EncodedSize is the length of the manifest's binary encoding.
func (m *Manifest) EncodedSize() int {
	return manifestHeadSize + len(m.Chunks)*manifestEntry + 4
}

// MarshalBinary encodes the manifest.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, m.EncodedSize())
	b = append(b, manifestMagic...)
	b = binary.BigEndian.AppendUint16(b, manifestVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(m.ImageSize))
	b = binary.BigEndian.AppendUint32(b, uint32(m.ChunkSize))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Chunks)))
	b = append(b, m.ImageSHA256[:]...)
	for _, c := range m.Chunks {
		b = append(b, byte(c.Encoding))
		b = binary.BigEndian.AppendUint32(b, c.WireSize)
		b = append(b, c.SHA256[:]...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))), nil
}

// maxManifestChunks bounds the chunk count a decoder accepts (64 TiB of
// 1 MiB chunks), so a forged count cannot make it allocate without limit.
const maxManifestChunks = 64 << 20

// UnmarshalBinary decodes and validates a manifest.
func (m *Manifest) UnmarshalBinary(b []byte) error {
	if len(b) < manifestHeadSize+4 {
		return fmt.Errorf("%w: %d bytes is too short", ErrManifest, len(b))
	}
	if string(b[:4]) != manifestMagic {
		return fmt.Errorf("%w: no manifest magic", ErrManifest)
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != manifestVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrManifest, v, manifestVersion)
	}
	if flags := binary.BigEndian.Uint16(b[6:]); flags != 0 {
		return fmt.Errorf("%w: reserved field is %#x, this build writes 0 (a newer shoal made this image?)", ErrManifest, flags)
	}
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)), binary.BigEndian.Uint32(b[len(b)-4:]); got != want {
		return fmt.Errorf("%w: checksum mismatch", ErrManifest)
	}
	size := binary.BigEndian.Uint64(b[8:])
	chunkSize := binary.BigEndian.Uint32(b[16:])
	count := binary.BigEndian.Uint32(b[20:])
	if size > 1<<62 || count > maxManifestChunks {
		return fmt.Errorf("%w: image size %d with %d chunks", ErrManifest, size, count)
	}
	if want := manifestHeadSize + int(count)*manifestEntry; len(body) != want {
		return fmt.Errorf("%w: %d chunks need %d bytes, have %d", ErrManifest, count, want+4, len(b))
	}
	out := Manifest{ImageSize: int64(size), ChunkSize: int(chunkSize), Chunks: make([]ChunkInfo, count)}
	copy(out.ImageSHA256[:], b[24:56])
	p := body[manifestHeadSize:]
	for i := range out.Chunks {
		c := &out.Chunks[i]
		c.Encoding = Encoding(p[0])
		c.WireSize = binary.BigEndian.Uint32(p[1:])
		copy(c.SHA256[:], p[5:37])
		p = p[manifestEntry:]
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*m = out
	return nil
}

// ErrChunkHash marks chunk data whose SHA-256 differs from the manifest's.
var ErrChunkHash = errors.New("SHA-256 does not match the manifest")

// CheckChunk verifies data (a chunk's uncompressed bytes) against chunk i
// of the manifest. A mismatch is a *ChunkError wrapping ErrChunkHash.
func (m *Manifest) CheckChunk(i int, data []byte) error {
	off, n := m.ChunkRange(i)
	if len(data) != n {
		return &ChunkError{Chunk: i, Offset: off, FileOffset: -1, Err: fmt.Errorf("%w: %d bytes, want %d", ErrChunkHash, len(data), n)}
	}
	if sha256.Sum256(data) != m.Chunks[i].SHA256 {
		return &ChunkError{Chunk: i, Offset: off, FileOffset: -1, Err: ErrChunkHash}
	}
	return nil
}
