package imaging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The packed image file, version 1 (docs/image-format.md has the full
// description):
//
//	header, 64 bytes, big-endian:
//	  magic "SHOALPAK" | version u16 | flags u16 | header length u32 |
//	  manifest offset u64 | manifest length u64 |
//	  data offset u64 | data length u64 |
//	  manifest CRC32C u32 | reserved [8]byte (zero) | header CRC32C u32
//	manifest: Manifest.MarshalBinary, at the manifest offset
//	data: the wire bytes of every chunk that has any, in chunk order,
//	  back to back, at the data offset
//
// The sections may come in either order (the packer puts the manifest
// first when it knows the image's size, after the data when it reads a
// stream of unknown length) but never overlap, and the file ends where
// the later one ends.
const (
	packedMagic      = "SHOALPAK"
	packedVersion    = 1
	packedHeaderSize = 64
	// packedAlign is where the data section starts: on a page boundary.
	packedAlign = 4096
)

// ErrPacked marks a packed image file whose structure is broken: its
// header, its manifest or its size.
var ErrPacked = errors.New("bad packed image")

// castagnoli is the CRC32C table; crc32 caches it, so this is cheap.
func castagnoli() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// packedHeader is the fixed-size start of a packed image file.
type packedHeader struct {
	Version        uint16
	ManifestOffset int64
	ManifestLength int64
	DataOffset     int64
	DataLength     int64
	ManifestCRC    uint32
}

// end is the file size the header implies. An empty data section (an
// image of zero chunks only) does not count.
func (h *packedHeader) end() int64 {
	if h.DataLength == 0 {
		return h.ManifestOffset + h.ManifestLength
	}
	return max(h.ManifestOffset+h.ManifestLength, h.DataOffset+h.DataLength)
}

// marshal encodes the header with its checksum.
func (h *packedHeader) marshal() []byte {
	b := make([]byte, 0, packedHeaderSize)
	b = append(b, packedMagic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, packedHeaderSize)
	b = binary.BigEndian.AppendUint64(b, uint64(h.ManifestOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(h.ManifestLength))
	b = binary.BigEndian.AppendUint64(b, uint64(h.DataOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(h.DataLength))
	b = binary.BigEndian.AppendUint32(b, h.ManifestCRC)
	b = append(b, make([]byte, 8)...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli()))
}

// isPacked reports whether b starts with the packed image magic.
func isPacked(b []byte) bool {
	return len(b) >= len(packedMagic) && string(b[:len(packedMagic)]) == packedMagic
}

// maxManifestLength bounds the manifest section a reader loads.
const maxManifestLength = manifestHeadSize + maxManifestChunks*manifestEntry + 4

// parsePackedHeader decodes and checks a packed image header. It checks
// the header alone: the sections' placement against the file's size is
// the caller's part.
func parsePackedHeader(b []byte) (packedHeader, error) {
	var h packedHeader
	if len(b) < packedHeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, want %d", ErrPacked, len(b), packedHeaderSize)
	}
	b = b[:packedHeaderSize]
	if !isPacked(b) {
		return h, fmt.Errorf("%w: no packed image magic", ErrPacked)
	}
	if got, want := crc32.Checksum(b[:60], castagnoli()), binary.BigEndian.Uint32(b[60:]); got != want {
		return h, fmt.Errorf("%w: header checksum mismatch (stored %08x, computed %08x): the header is corrupt", ErrPacked, want, got)
	}
	h.Version = binary.BigEndian.Uint16(b[8:])
	if h.Version != packedVersion {
		return h, fmt.Errorf("%w: format version %d, this build reads version %d", ErrPacked, h.Version, packedVersion)
	}
	if flags := binary.BigEndian.Uint16(b[10:]); flags != 0 {
		return h, fmt.Errorf("%w: unknown flags %#04x", ErrPacked, flags)
	}
	if n := binary.BigEndian.Uint32(b[12:]); n != packedHeaderSize {
		return h, fmt.Errorf("%w: header length %d, want %d", ErrPacked, n, packedHeaderSize)
	}
	fields := [4]uint64{
		binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:]),
		binary.BigEndian.Uint64(b[32:]), binary.BigEndian.Uint64(b[40:]),
	}
	for _, v := range fields {
		if v > 1<<62 {
			return h, fmt.Errorf("%w: section offset or length %d out of range", ErrPacked, v)
		}
	}
	h.ManifestOffset, h.ManifestLength = int64(fields[0]), int64(fields[1])
	h.DataOffset, h.DataLength = int64(fields[2]), int64(fields[3])
	h.ManifestCRC = binary.BigEndian.Uint32(b[48:])
	for _, r := range b[52:60] {
		if r != 0 {
			return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrPacked)
		}
	}
	switch {
	case h.ManifestLength < manifestHeadSize+4 || h.ManifestLength > maxManifestLength:
		return h, fmt.Errorf("%w: manifest length %d out of range", ErrPacked, h.ManifestLength)
	case h.ManifestOffset < packedHeaderSize || h.DataOffset < packedHeaderSize:
		return h, fmt.Errorf("%w: a section starts inside the header", ErrPacked)
	case h.ManifestOffset < h.DataOffset+h.DataLength && h.DataOffset < h.ManifestOffset+h.ManifestLength && h.DataLength > 0:
		return h, fmt.Errorf("%w: the manifest [%d, +%d) and the data [%d, +%d) overlap", ErrPacked,
			h.ManifestOffset, h.ManifestLength, h.DataOffset, h.DataLength)
	}
	return h, nil
}
