package imaging

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Decoder turns a chunk's wire bytes back into its uncompressed bytes and
// checks them against the manifest. It keeps one zstd decoder and one
// output buffer for all its chunks. A Decoder is not safe for concurrent
// use; give each goroutine its own.
type Decoder struct {
	zd    *zstd.Decoder // made at the first zstd chunk
	buf   []byte
	zeros []byte
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{} }

// Decode returns chunk i's uncompressed bytes from its wire bytes, after
// checking their SHA-256 against the manifest: data that fails the check
// is never returned. A zstd chunk never decompresses to more than the
// chunk's length, whatever its frame claims. The result may alias wire or
// the decoder's own buffer, and is valid until the next call. Errors are
// *ChunkError values wrapping ErrChunkHash or ErrChunkData.
func (d *Decoder) Decode(m *Manifest, i int, wire []byte) ([]byte, error) {
	if i < 0 || i >= len(m.Chunks) {
		return nil, fmt.Errorf("chunk %d out of range [0, %d)", i, len(m.Chunks))
	}
	off, n := m.ChunkRange(i)
	info := m.Chunks[i]
	bad := func(format string, args ...any) error {
		return &ChunkError{Chunk: i, Offset: off, FileOffset: -1, Err: fmt.Errorf("%w: "+format, append([]any{ErrChunkData}, args...)...)}
	}
	var data []byte
	switch info.Encoding {
	case EncodingRaw:
		data = wire
	case EncodingZero:
		if len(wire) != 0 {
			return nil, bad("zero chunk with %d wire bytes", len(wire))
		}
		if len(d.zeros) < n {
			d.zeros = make([]byte, n)
		}
		data = d.zeros[:n]
	case EncodingZstd:
		if len(wire) != int(info.WireSize) {
			return nil, bad("%d wire bytes, the manifest says %d", len(wire), info.WireSize)
		}
		var err error
		if data, err = d.unzstd(wire, n); err != nil {
			return nil, bad("zstd: %v", err)
		}
	default:
		return nil, bad("%s chunks are not supported by this build", info.Encoding)
	}
	if err := m.CheckChunk(i, data); err != nil {
		return nil, err
	}
	return data, nil
}

// unzstd decompresses one frame of at most n bytes into the decoder's
// buffer.
func (d *Decoder) unzstd(wire []byte, n int) ([]byte, error) {
	if d.zd == nil {
		zd, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxChunkSize),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return nil, err
		}
		d.zd = zd
	}
	if cap(d.buf) < n {
		d.buf = make([]byte, 0, n)
	}
	// The capacity limit is what bounds the output: DecodeAll stops at
	// cap(dst) instead of growing it.
	return d.zd.DecodeAll(wire, d.buf[:0:n])
}

// Close releases the decoder's resources.
func (d *Decoder) Close() {
	if d.zd != nil {
		d.zd.Close()
		d.zd = nil
	}
}
