package imaging

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// PackOptions tune Pack.
type PackOptions struct {
	// ChunkSize is the chunk size in bytes; zero means DefaultChunkSize.
	ChunkSize int
	// Level is the zstd level, on the zstd command's scale (1 fastest …
	// 19); zero means 3, zstd's default.
	Level int
	// Workers is how many chunks are compressed at once; zero means one
	// per core.
	Workers int
	// Progress, if set, is called with the uncompressed bytes packed so
	// far and the image's size (-1 while it is unknown).
	Progress func(done, total int64)
}

// Pack reads a raw image from in and writes it to out as a packed image:
// all-zero chunks are recorded and left out, the others are
// zstd-compressed on all cores, or stored raw when zstd does not make them
// smaller. size is the image's length, or -1 if in is a stream of unknown
// length (the manifest then goes after the data). The header is written
// last, so a pack that fails half way leaves no valid packed image.
func Pack(ctx context.Context, in io.Reader, size int64, out io.WriterAt, opts PackOptions) (*Manifest, error) {
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("pack: chunk size %d outside [%d, %d]", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if size == 0 {
		return nil, errors.New("pack: image is empty")
	}
	level := opts.Level
	if level == 0 {
		level = 3
	}
	workers := defaultWorkers(opts.Workers)
	encoders := make([]*zstd.Encoder, workers)
	for w := range encoders {
		// A chunk is one frame: a window larger than the chunk buys
		// nothing and costs memory the decoder would have to allow.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(windowFor(chunkSize)))
		if err != nil {
			return nil, fmt.Errorf("pack: zstd encoder: %w", err)
		}
		defer enc.Close()
		encoders[w] = enc
	}

	h := packedHeader{Version: packedVersion, ManifestOffset: packedHeaderSize, DataOffset: packedAlign}
	if size > 0 {
		count := ChunkCount(size, chunkSize)
		if count > maxManifestChunks {
			return nil, fmt.Errorf("pack: %d chunks is more than a manifest holds (%d); use larger chunks", count, maxManifestChunks)
		}
		h.ManifestLength = int64(manifestHeadSize + count*manifestEntry + 4)
		h.DataOffset = alignUp(packedHeaderSize+h.ManifestLength, packedAlign)
	}

	// Leave the header invalid until the end: a crash leaves no image.
	if _, err := out.WriteAt(make([]byte, packedHeaderSize), 0); err != nil {
		return nil, fmt.Errorf("pack: write header: %w", err)
	}
	data := bufio.NewWriterSize(io.NewOffsetWriter(out, h.DataOffset), 4<<20)
	m, err := packChunks(ctx, in, size, chunkSize, encoders, data, opts.Progress)
	if err != nil {
		return nil, err
	}
	if err := data.Flush(); err != nil {
		return nil, fmt.Errorf("pack: write data: %w", err)
	}
	mb, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	h.DataLength = m.WireBytes()
	h.ManifestLength = int64(len(mb))
	if size < 0 {
		h.ManifestOffset = h.DataOffset + h.DataLength
	}
	h.ManifestCRC = crc32.Checksum(mb, castagnoli())
	if _, err := out.WriteAt(mb, h.ManifestOffset); err != nil {
		return nil, fmt.Errorf("pack: write manifest: %w", err)
	}
	if _, err := out.WriteAt(h.marshal(), 0); err != nil {
		return nil, fmt.Errorf("pack: write header: %w", err)
	}
	return m, nil
}

// packChunks runs the packing pipeline: read in order, hash and compress
// on every worker, write the results in order.
func packChunks(ctx context.Context, in io.Reader, size int64, chunkSize int, encoders []*zstd.Encoder, out io.Writer, progress func(done, total int64)) (*Manifest, error) {
	workers := len(encoders)
	inBufs := newBufPool(2*workers+2, chunkSize, func(n int) []byte { return make([]byte, n) })
	outBufs := newBufPool(2*workers+2, chunkSize, func(n int) []byte { return make([]byte, 0, n) })
	zeroSums := newZeroHashes()

	type packed struct {
		info ChunkInfo
		wire []byte // from outBufs; nil for zero and raw chunks
	}
	// A zero chunk gives its buffer back at once and is hashed into the
	// whole image from zeros, so long zero runs cost the in-order
	// consumer no buffers and it can trail far behind the compressors.
	zeros := make([]byte, chunkSize)
	m := &Manifest{ChunkSize: chunkSize}
	whole := sha256.New()
	var done int64
	eof := false
	produce := func(ctx context.Context, i int) ([]byte, bool, error) {
		if eof || (size >= 0 && int64(i)*int64(chunkSize) >= size) {
			return nil, false, nil
		}
		if i >= maxManifestChunks {
			return nil, false, fmt.Errorf("pack: the image has more than %d chunks; use larger chunks", maxManifestChunks)
		}
		buf, err := inBufs.get(ctx)
		if err != nil {
			return nil, false, err
		}
		want := chunkSize
		if size >= 0 {
			want = int(min(int64(chunkSize), size-int64(i)*int64(chunkSize)))
		}
		n, err := io.ReadFull(in, buf[:want])
		switch {
		case err == io.EOF && size < 0:
			inBufs.put(buf)
			return nil, false, nil
		case err == io.ErrUnexpectedEOF && size < 0:
			eof = true
		case err != nil:
			inBufs.put(buf)
			return nil, false, fmt.Errorf("pack: read chunk %d at %d: %w", i, int64(i)*int64(chunkSize), err)
		}
		return buf[:n], true, nil
	}
	work := func(w, i int, buf []byte) (packed, error) {
		if isZero(buf) {
			inBufs.put(buf)
			return packed{info: ChunkInfo{Encoding: EncodingZero, SHA256: zeroSums.sum(len(buf))}}, nil
		}
		p := packed{info: ChunkInfo{SHA256: sha256.Sum256(buf)}}
		dst, err := outBufs.get(ctx)
		if err != nil {
			return p, err
		}
		dst = encoders[w].EncodeAll(buf, dst[:0])
		if len(dst) >= len(buf) {
			outBufs.put(dst)
			p.info.Encoding, p.info.WireSize = EncodingRaw, uint32(len(buf))
			return p, nil
		}
		p.info.Encoding, p.info.WireSize, p.wire = EncodingZstd, uint32(len(dst)), dst
		return p, nil
	}
	consume := func(i int, buf []byte, p packed) error {
		if p.info.Encoding == EncodingZero {
			buf = zeros[:len(buf)] // the buffer itself is back in the pool
		} else {
			defer inBufs.put(buf)
		}
		if p.wire != nil {
			defer outBufs.put(p.wire)
		}
		whole.Write(buf)
		var err error
		switch p.info.Encoding {
		case EncodingRaw:
			_, err = out.Write(buf)
		case EncodingZstd:
			_, err = out.Write(p.wire)
		}
		if err != nil {
			return fmt.Errorf("pack: write chunk %d: %w", i, err)
		}
		m.Chunks = append(m.Chunks, p.info)
		done += int64(len(buf))
		if progress != nil {
			progress(done, size)
		}
		return nil
	}
	if err := runPipeline(ctx, workers, packDepth, produce, work, consume); err != nil {
		return nil, err
	}
	if size >= 0 && done != size {
		return nil, fmt.Errorf("pack: read %d bytes, the image has %d", done, size)
	}
	if done == 0 {
		return nil, errors.New("pack: image is empty")
	}
	m.ImageSize = done
	copy(m.ImageSHA256[:], whole.Sum(nil))
	return m, nil
}

// packDepth is how many chunks may be between reading and writing: zero
// chunks hold no buffer there, so this lets the compressors run through
// data while the consumer still hashes a long zero run.
const packDepth = 512

// zeroHashes caches the SHA-256 of all-zero chunks by length (an image
// has at most two chunk lengths), so zero chunks are not hashed again. It
// is safe for concurrent use.
type zeroHashes struct {
	mu   sync.Mutex
	sums map[int][32]byte
}

func newZeroHashes() *zeroHashes { return &zeroHashes{sums: map[int][32]byte{}} }

// sum is the SHA-256 of n zero bytes.
func (z *zeroHashes) sum(n int) [32]byte {
	z.mu.Lock()
	defer z.mu.Unlock()
	s, ok := z.sums[n]
	if !ok {
		s = sha256.Sum256(make([]byte, n))
		z.sums[n] = s
	}
	return s
}

// windowFor is the smallest zstd window (a power of two, at least
// zstd.MinWindowSize) that holds a chunk of n bytes.
func windowFor(n int) int {
	w := zstd.MinWindowSize
	for w < n {
		w <<= 1
	}
	return w
}

// alignUp rounds n up to a multiple of a (a power of two).
func alignUp(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }
