package imaging

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPackRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		chunkSize int
		chunks    int
		tail      int
		unknown   bool // pack from a stream of unknown length
		workers   int
	}{
		{name: "default chunks", chunkSize: DefaultChunkSize, chunks: 9},
		{name: "small chunks short tail", chunkSize: 4096, chunks: 37, tail: 1000},
		{name: "stream of unknown length", chunkSize: 64 << 10, chunks: 13, tail: 777, unknown: true},
		{name: "one worker", chunkSize: 64 << 10, chunks: 8, workers: 1},
		{name: "single chunk", chunkSize: 64 << 10, chunks: 1, tail: 5000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := syntheticImage(7, tc.chunkSize, tc.chunks, tc.tail)
			size := int64(len(img))
			if tc.unknown {
				size = -1
			}
			path := filepath.Join(t.TempDir(), "img.packed")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			var progressed int64
			m, err := Pack(context.Background(), io.MultiReader(bytes.NewReader(img)), size, f,
				PackOptions{ChunkSize: tc.chunkSize, Workers: tc.workers, Progress: func(done, _ int64) { progressed = done }})
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if m.ImageSize != int64(len(img)) || progressed != m.ImageSize {
				t.Fatalf("manifest size %d, progress %d, image %d", m.ImageSize, progressed, len(img))
			}
			s := m.Stats()
			if tc.chunks >= 4 && (s.Zero == 0 || s.Zstd == 0 || s.Raw == 0) {
				t.Errorf("want every encoding in a mixed image, got %+v", s)
			}

			p, err := OpenPacked(path)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if got, _ := p.Manifest().MarshalBinary(); !bytes.Equal(got, mustMarshal(t, m)) {
				t.Error("the file's manifest differs from Pack's")
			}
			if err := p.Verify(context.Background(), VerifyOptions{}); err != nil {
				t.Fatalf("verify: %v", err)
			}
			var out bytes.Buffer
			if err := p.Unpack(context.Background(), &writerAt{&out}, VerifyOptions{}); err != nil {
				t.Fatal(err)
			}
			got := out.Bytes()
			got = append(got, make([]byte, len(img)-len(got))...) // zero chunks at the end are not written
			if !bytes.Equal(got, img) {
				t.Fatal("unpacked image differs")
			}
			// ReadChunk hands out the stored wire bytes, which decode.
			dec := NewDecoder()
			defer dec.Close()
			for i := range m.Chunks {
				wire, err := p.ReadChunk(i, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(wire) != int(m.Chunks[i].WireSize) {
					t.Fatalf("chunk %d: %d wire bytes, manifest says %d", i, len(wire), m.Chunks[i].WireSize)
				}
				if _, err := dec.Decode(m, i, wire); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// writerAt is an io.WriterAt over a growing buffer.
type writerAt struct{ b *bytes.Buffer }

func (w *writerAt) WriteAt(p []byte, off int64) (int, error) {
	buf := w.b.Bytes()
	if need := int(off) + len(p); need > len(buf) {
		w.b.Write(make([]byte, need-len(buf)))
		buf = w.b.Bytes()
	}
	return copy(buf[off:], p), nil
}

func mustMarshal(t testing.TB, m *Manifest) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPackIncompressibleIsRaw(t *testing.T) {
	img := syntheticImage(3, 4096, 4, 0)[3*4096:] // one random chunk
	_, m := packBytes(t, img, PackOptions{ChunkSize: 4096})
	if m.Chunks[0].Encoding != EncodingRaw || m.Chunks[0].WireSize != 4096 {
		t.Fatalf("random chunk packed as %s of %d bytes, want raw", m.Chunks[0].Encoding, m.Chunks[0].WireSize)
	}
}

func TestPackErrors(t *testing.T) {
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tests := []struct {
		name string
		in   io.Reader
		size int64
		opts PackOptions
		want string
	}{
		{"empty", bytes.NewReader(nil), 0, PackOptions{}, "empty"},
		{"empty stream", bytes.NewReader(nil), -1, PackOptions{}, "empty"},
		{"short input", bytes.NewReader(make([]byte, 4196)), 5000, PackOptions{ChunkSize: 4096}, "read chunk 1"},
		{"chunk size", bytes.NewReader(make([]byte, 100)), 100, PackOptions{ChunkSize: 100}, "chunk size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Pack(context.Background(), tc.in, tc.size, out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPackCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	img := syntheticImage(1, 4096, 64, 0)
	if _, err := Pack(ctx, bytes.NewReader(img), int64(len(img)), out, PackOptions{ChunkSize: 4096}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	// A pack that did not finish leaves no valid header.
	if _, err := OpenPacked(out.Name()); err == nil {
		t.Fatal("a canceled pack left a valid packed image")
	}
}

// TestPackedCorruption flips single bytes of a packed image: in a chunk's
// data, the manifest, the header; and cuts the file short.
func TestPackedCorruption(t *testing.T) {
	img := syntheticImage(11, 64<<10, 12, 0)
	good, m := packBytes(t, img, PackOptions{ChunkSize: 64 << 10})
	p, err := OpenPacked(good)
	if err != nil {
		t.Fatal(err)
	}
	hdr := p.hdr
	chunk := 5 // a zstd chunk (i%4 == 1)
	if m.Chunks[chunk].Encoding != EncodingZstd || m.Chunks[6].Encoding != EncodingZstd || m.Chunks[7].Encoding != EncodingRaw {
		t.Fatalf("unexpected encodings %v %v %v", m.Chunks[5].Encoding, m.Chunks[6].Encoding, m.Chunks[7].Encoding)
	}
	zstdOff := p.ChunkFileOffset(chunk) + int64(m.Chunks[chunk].WireSize)/2
	rawOff := p.ChunkFileOffset(7) + 100
	p.Close()
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		corrupt func(path string)
		chunk   int    // the bad chunk Verify and Open must name, or -1
		want    string // in the error otherwise
	}{
		{name: "zstd chunk byte", corrupt: func(p string) { flipByte(t, p, zstdOff) }, chunk: chunk},
		{name: "raw chunk byte", corrupt: func(p string) { flipByte(t, p, rawOff) }, chunk: 7},
		{name: "manifest byte", corrupt: func(p string) { flipByte(t, p, hdr.ManifestOffset+100) }, chunk: -1, want: "manifest checksum mismatch"},
		{name: "header byte", corrupt: func(p string) { flipByte(t, p, 20) }, chunk: -1, want: "header checksum mismatch"},
		{name: "truncated", corrupt: func(p string) { os.Truncate(p, int64(len(raw))-1) }, chunk: -1, want: "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "bad.packed", raw)
			tc.corrupt(path)
			verr := verifyFile(path)
			_, oerr := Open(context.Background(), path, OpenOptions{})
			for what, err := range map[string]error{"verify": verr, "open": oerr} {
				if err == nil {
					t.Fatalf("%s accepted a corrupt image", what)
				}
				if tc.chunk < 0 {
					if !errors.Is(err, ErrPacked) || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("%s: %v, want ErrPacked mentioning %q", what, err, tc.want)
					}
					continue
				}
				var ce *ChunkError
				if !errors.As(err, &ce) || ce.Chunk != tc.chunk {
					t.Fatalf("%s: %v, want a ChunkError for chunk %d", what, err, tc.chunk)
				}
				off, _ := m.ChunkRange(tc.chunk)
				if ce.Offset != off || ce.FileOffset <= 0 {
					t.Errorf("%s: offsets %d/%d, want image offset %d and a file offset", what, ce.Offset, ce.FileOffset, off)
				}
				if !strings.Contains(err.Error(), "chunk 5") && !strings.Contains(err.Error(), "chunk 7") {
					t.Errorf("%s: message %q does not name the chunk", what, err)
				}
			}
		})
	}
}

func verifyFile(path string) error {
	p, err := OpenPacked(path)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Verify(context.Background(), VerifyOptions{})
}

func TestOpenDetectsFormats(t *testing.T) {
	img := syntheticImage(5, 64<<10, 10, 300)
	rawPath := writeFile(t, "disk.packed", img) // a misleading name: content decides
	packedPath, m := packBytes(t, img, PackOptions{ChunkSize: 64 << 10})
	for _, tc := range []struct {
		path, format string
	}{{rawPath, "raw"}, {packedPath, "packed"}} {
		src, err := Open(context.Background(), tc.path, OpenOptions{ChunkSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if src.Format() != tc.format {
			t.Errorf("%s opened as %s, want %s", tc.path, src.Format(), tc.format)
		}
		if got := src.Manifest(); got.ImageSHA256 != m.ImageSHA256 || got.ImageSize != m.ImageSize || len(got.Chunks) != len(m.Chunks) {
			t.Errorf("%s: manifest differs", tc.format)
		}
		src.Close()
	}
}
