package imaging

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// writeChunks writes the listed chunks of src through w the way the
// client does: zero chunks zeroed, the others decoded and verified first.
func writeChunks(t testing.TB, w *Writer, src Source, order []int) {
	t.Helper()
	m := src.Manifest()
	dec := NewDecoder()
	defer dec.Close()
	var wire []byte
	for _, i := range order {
		if m.Chunks[i].Encoding == EncodingZero {
			if err := w.ZeroChunk(i); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var err error
		if wire, err = src.ReadChunk(i, wire[:0]); err != nil {
			t.Fatal(err)
		}
		data, err := dec.Decode(m, i, wire)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteChunk(i, data); err != nil {
			t.Fatal(err)
		}
	}
}

// shuffled is 0..n-1 in a random order.
func shuffled(n int, seed uint64) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	rand.New(rand.NewPCG(seed, 2)).Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// openPackedBytes packs img and opens the result as a Source.
func openPackedBytes(t testing.TB, img []byte, chunkSize int) *PackedImage {
	t.Helper()
	path, _ := packBytes(t, img, PackOptions{ChunkSize: chunkSize})
	p, err := OpenPacked(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// garbageFile makes a file of n bytes of 0xA5 (an old disk's content).
func garbageFile(t testing.TB, n int) string {
	t.Helper()
	return writeFile(t, "disk", bytes.Repeat([]byte{0xA5}, n))
}

func TestWriterFile(t *testing.T) {
	const cs = 64 << 10
	img := syntheticImage(21, cs, 40, 3000) // head = the first 16 chunks
	src := openPackedBytes(t, img, cs)
	for _, tc := range []struct {
		name string
		opts WriterOptions
	}{
		{"direct", WriterOptions{}},
		{"buffered", WriterOptions{NoDirect: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := garbageFile(t, 2*len(img)) // a file target ends up the image's size
			tgt, err := OpenTarget(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			w, err := NewWriter(tgt, src.Manifest(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if err := w.Begin(); err != nil {
				t.Fatal(err)
			}
			writeChunks(t, w, src, shuffled(len(src.Manifest().Chunks), 1))
			if err := w.Finish(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Fatal("the file differs from the image")
			}
			res, err := w.Verify(context.Background(), nil)
			if err != nil || res.SHA256 != src.Manifest().ImageSHA256 || res.BadChunk != -1 || res.Bytes != int64(len(img)) {
				t.Fatalf("verify: %+v, %v", res, err)
			}
			// A damaged disk is caught, and the first bad chunk named.
			flipByte(t, path, 20*cs+5)
			flipByte(t, path, 30*cs+5)
			res, err = w.Verify(context.Background(), nil)
			if err != nil || res.BadChunk != 20 || res.SHA256 == src.Manifest().ImageSHA256 {
				t.Fatalf("verify of a damaged disk: %+v, %v; want bad chunk 20", res, err)
			}
		})
	}
}

// TestWriterFailedSession stops half way: the disk's first MiB stays zero
// (nothing boots from it), and Finish refuses to complete it.
func TestWriterFailedSession(t *testing.T) {
	const cs = 64 << 10
	img := syntheticImage(22, cs, 64, 0)
	for i := range 16 { // make every head chunk non-zero
		img[i*cs] = 0xEB
	}
	src := openPackedBytes(t, img, cs)
	path := garbageFile(t, len(img))
	tgt, err := OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	w, err := NewWriter(tgt, src.Manifest(), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	order := shuffled(64, 3)
	writeChunks(t, w, src, order[:32])
	if err := w.Finish(context.Background()); err == nil {
		t.Fatal("Finish completed a half-written disk")
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !isZero(got[:HeadSize]) {
		t.Fatal("the first MiB of a half-written disk is not zero")
	}
	if _, err := w.Verify(context.Background(), nil); err == nil {
		t.Fatal("Verify before Finish succeeded")
	}
}

// TestWriterResume writes part of an image, then the rest with the same
// Writer (as a client does when its server comes back), in random order.
func TestWriterResume(t *testing.T) {
	const cs = 64 << 10
	img := syntheticImage(26, cs, 40, 100)
	src := openPackedBytes(t, img, cs)
	path := garbageFile(t, len(img))
	tgt, err := OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	w, err := NewWriter(tgt, src.Manifest(), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	order := shuffled(40, 7)
	writeChunks(t, w, src, order[:25])
	if w.Remaining() != 15 {
		t.Fatalf("remaining %d, want 15", w.Remaining())
	}
	var rest []int
	for i := range 40 {
		if !w.Written(i) {
			rest = append(rest, i)
		}
	}
	writeChunks(t, w, src, append(rest, order[3])) // one chunk again, too
	if err := w.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, img) {
		t.Fatal("the file differs from the image")
	}
}

func TestWriterSkipZeros(t *testing.T) {
	const cs = 64 << 10
	img := syntheticImage(23, cs, 24, 0)
	src := openPackedBytes(t, img, cs)
	path := garbageFile(t, len(img))
	tgt, err := OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	w, err := NewWriter(tgt, src.Manifest(), WriterOptions{SkipZeros: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	writeChunks(t, w, src, shuffled(24, 4))
	if err := w.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	for i := range 24 {
		c := got[i*cs : (i+1)*cs]
		switch {
		case i < 16 || i%4 != 0:
			if !bytes.Equal(c, img[i*cs:(i+1)*cs]) {
				t.Fatalf("chunk %d differs", i)
			}
		case c[0] != 0xA5:
			t.Fatalf("zero chunk %d past the head was written with SkipZeros", i)
		}
	}
}

func TestWriterMisuse(t *testing.T) {
	const cs = 64 << 10
	img := syntheticImage(24, cs, 4, 0)
	src := openPackedBytes(t, img, cs)
	m := src.Manifest()
	tgt, err := OpenTarget(filepath.Join(t.TempDir(), "new.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	w, err := NewWriter(tgt, m, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.WriteChunk(0, img[:cs]); err == nil {
		t.Error("WriteChunk before Begin accepted")
	}
	if err := w.Finish(context.Background()); err == nil {
		t.Error("Finish before Begin accepted")
	}
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"out of range", w.WriteChunk(4, img[:cs])},
		{"negative", w.ZeroChunk(-1)},
		{"short data", w.WriteChunk(1, img[:cs-1])},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestWriterRefusesSmallDisk(t *testing.T) {
	needRoot(t)
	img := syntheticImage(25, 64<<10, 32, 0) // 2 MiB
	src := openPackedBytes(t, img, 64<<10)
	disk := writeFile(t, "small", make([]byte, 1<<20))
	dev := loopDevice(t, disk, false)
	tgt, err := OpenTarget(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	if _, err := NewWriter(tgt, src.Manifest(), WriterOptions{}); !errors.Is(err, ErrTooSmall) {
		t.Fatalf("error %v, want ErrTooSmall", err)
	}
}
