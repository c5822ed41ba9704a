package imaging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// VerifyOptions tune Verify and Unpack.
type VerifyOptions struct {
	// Workers is how many chunks are decoded at once; zero means one per
	// core.
	Workers int
	// Progress, if set, is called with the uncompressed bytes checked so
	// far and the image's size.
	Progress func(done, total int64)
}

// Verify decompresses every chunk on all cores and checks it against the
// manifest, then checks the whole-image SHA-256. The first bad chunk (in
// image order) is reported as a *ChunkError with its number and offsets;
// a whole-image mismatch wraps ErrImageHash.
func (p *PackedImage) Verify(ctx context.Context, opts VerifyOptions) error {
	return p.Unpack(ctx, nil, opts)
}

// Unpack verifies the image like Verify and writes its uncompressed bytes
// to out at their image offsets (out may be nil). Zero chunks are not
// written: out must read as zeros where nothing is written, like a new
// file truncated to the image's size.
func (p *PackedImage) Unpack(ctx context.Context, out io.WriterAt, opts VerifyOptions) error {
	m := p.m
	workers := defaultWorkers(opts.Workers)
	decoders := make([]*Decoder, workers)
	for w := range decoders {
		decoders[w] = NewDecoder()
		defer decoders[w].Close()
	}
	wires := newBufPool(2*workers+2, 0, func(int) []byte { return nil })
	datas := newBufPool(2*workers+2, m.ChunkSize, func(n int) []byte { return make([]byte, n) })
	var zeros []byte
	zeroSums := newZeroHashes()
	whole := sha256.New()
	var done int64

	produce := func(ctx context.Context, i int) ([]byte, bool, error) {
		if i >= len(m.Chunks) {
			return nil, false, nil
		}
		buf, err := wires.get(ctx)
		if err != nil {
			return nil, false, err
		}
		buf, err = p.ReadChunk(i, buf[:0])
		if err != nil {
			return nil, false, err
		}
		return buf, true, nil
	}
	work := func(w, i int, wire []byte) ([]byte, error) {
		defer wires.put(wire)
		if c := m.Chunks[i]; c.Encoding == EncodingZero {
			if off, n := m.ChunkRange(i); zeroSums.sum(n) != c.SHA256 {
				return nil, &ChunkError{Chunk: i, Offset: off, FileOffset: -1, Err: ErrChunkHash}
			}
			return nil, nil
		}
		data, err := decoders[w].Decode(m, i, wire)
		if err != nil {
			return nil, p.locate(err)
		}
		buf, err := datas.get(ctx)
		if err != nil {
			return nil, err
		}
		return append(buf[:0], data...), nil
	}
	consume := func(i int, _ []byte, data []byte) error {
		off, n := m.ChunkRange(i)
		if data == nil {
			if len(zeros) < n {
				zeros = make([]byte, n)
			}
			whole.Write(zeros[:n])
		} else {
			defer datas.put(data)
			whole.Write(data)
			if out != nil {
				if _, err := out.WriteAt(data, off); err != nil {
					return fmt.Errorf("write chunk %d at %d: %w", i, off, err)
				}
			}
		}
		done += int64(n)
		if opts.Progress != nil {
			opts.Progress(done, m.ImageSize)
		}
		return nil
	}
	if err := runPipeline(ctx, workers, 0, produce, work, consume); err != nil {
		return err
	}
	var sum [32]byte
	copy(sum[:], whole.Sum(nil))
	if sum != m.ImageSHA256 {
		return fmt.Errorf("%w: computed %x, manifest says %x", ErrImageHash, sum, m.ImageSHA256)
	}
	return nil
}

// locate adds the chunk's file offset to a *ChunkError.
func (p *PackedImage) locate(err error) error {
	var ce *ChunkError
	if errors.As(err, &ce) && p.m.Chunks[ce.Chunk].WireSize > 0 {
		ce.FileOffset = p.offsets[ce.Chunk]
	}
	return err
}
