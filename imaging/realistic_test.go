package imaging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRealisticPackRoundTrip packs the realistic disk image, checks the
// acceptance bound on its packed size, and goes round trip through info,
// verify and unpack.
func TestRealisticPackRoundTrip(t *testing.T) {
	raw := realisticImage(t)
	ctx := context.Background()
	packed := filepath.Join(t.TempDir(), "lab.packed")
	m, err := PackFile(ctx, raw, packed, PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(packed)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Stats()
	pct := 100 * float64(fi.Size()) / float64(m.ImageSize)
	t.Logf("realistic image: %s raw, %s packed (%.1f %%); %d chunks: %d zero (%.0f %%), %d zstd (%s to %s, %.2f:1), %d raw",
		HumanBytes(m.ImageSize), HumanBytes(fi.Size()), pct, s.Chunks, s.Zero, 100*float64(s.Zero)/float64(s.Chunks),
		s.Zstd, HumanBytes(s.ZstdBytes), HumanBytes(s.ZstdWireBytes), float64(s.ZstdBytes)/float64(max(1, s.ZstdWireBytes)), s.Raw)
	if pct >= 40 {
		t.Errorf("packed image is %.1f %% of the raw one, want < 40 %%", pct)
	}
	if m.ImageSHA256 != fileSHA256(t, raw, m.ImageSize) {
		t.Error("manifest's image SHA-256 is not the raw file's")
	}

	info, err := Inspect(ctx, packed, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "packed" || info.Version != packedVersion || info.FileSize != fi.Size() || info.Stats != s {
		t.Errorf("info %+v does not describe the packed file", info)
	}
	rawInfo, err := Inspect(ctx, raw, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rawInfo.Format != "raw" || rawInfo.Manifest.ImageSHA256 != m.ImageSHA256 || rawInfo.Stats.Zero != s.Zero {
		t.Errorf("raw info %+v disagrees with the packed image", rawInfo.Stats)
	}

	p, err := OpenPacked(packed)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Close()

	unpacked := filepath.Join(t.TempDir(), "lab.img")
	if err := UnpackFile(ctx, packed, unpacked, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cmp", raw, unpacked).CombinedOutput(); err != nil {
		t.Fatalf("unpacked image differs from the raw one: %v %s", err, out)
	}
}

// TestRealisticCorruptChunk flips one data byte of the packed realistic
// image: verify and Open both name the chunk.
func TestRealisticCorruptChunk(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(realisticPacked(t))
	if err != nil {
		t.Fatal(err)
	}
	packed := writeFile(t, "lab.packed", b)
	p, err := OpenPacked(packed)
	if err != nil {
		t.Fatal(err)
	}
	m := p.Manifest()
	// The middle byte of the last chunk that has data.
	bad := len(m.Chunks) - 1
	for m.Chunks[bad].WireSize == 0 {
		bad--
	}
	off := p.ChunkFileOffset(bad) + int64(m.Chunks[bad].WireSize)/2
	p.Close()
	flipByte(t, packed, off)

	_, oerr := Open(ctx, packed, OpenOptions{})
	for what, err := range map[string]error{"verify": verifyFile(packed), "open": oerr} {
		var ce *ChunkError
		if !errors.As(err, &ce) || ce.Chunk != bad {
			t.Fatalf("%s: %v, want a ChunkError for chunk %d", what, err, bad)
		}
		t.Logf("%s: %v", what, err)
	}
}

// TestZstdImageServesSameManifest compresses the realistic image with the
// zstd command (with and without the content size in the frame) and
// opens it: it must serve the manifest packing the raw image gives.
func TestZstdImageServesSameManifest(t *testing.T) {
	needTools(t, "zstd")
	raw := realisticImage(t)
	ctx := context.Background()
	dir := t.TempDir()
	packed, err := OpenPacked(realisticPacked(t))
	if err != nil {
		t.Fatal(err)
	}
	want := mustMarshal(t, packed.Manifest())
	packed.Close()
	rawSrc, err := Open(ctx, raw, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rawM := rawSrc.Manifest()
	rawSrc.Close()

	file := filepath.Join(dir, "lab.img.zst")
	run(t, "zstd", "-3", "-q", "-T0", "-o", file, raw)
	piped := filepath.Join(dir, "lab-piped.zst") // streamed: no content size in the frame
	in, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(piped)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("zstd", "-1", "-q", "-c")
	cmd.Stdin, cmd.Stdout = in, out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	out.Close()

	for _, path := range []string{file, piped} {
		var progressed int64
		src, err := Open(ctx, path, OpenOptions{TempDir: dir, Progress: func(done, _ int64) { progressed = done }})
		if err != nil {
			t.Fatal(err)
		}
		if src.Format() != "zstd" {
			t.Errorf("%s opened as %s", path, src.Format())
		}
		m := src.Manifest()
		if got := mustMarshal(t, m); !bytes.Equal(got, want) {
			t.Errorf("%s: manifest differs from packing the raw image", path)
		}
		if m.ImageSHA256 != rawM.ImageSHA256 || len(m.Chunks) != len(rawM.Chunks) {
			t.Fatalf("%s: image hash or chunk count differs from the raw image's", path)
		}
		for i := range m.Chunks {
			if m.Chunks[i].SHA256 != rawM.Chunks[i].SHA256 {
				t.Fatalf("%s: chunk %d hash differs from the raw image's", path, i)
			}
		}
		if fi, _ := os.Stat(path); progressed != fi.Size() {
			t.Errorf("progress ended at %d of %d bytes", progressed, fi.Size())
		}
		// Served chunks decode.
		dec := NewDecoder()
		for i := range m.Chunks {
			wire, err := src.ReadChunk(i, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Decode(m, i, wire); err != nil {
				t.Fatal(err)
			}
		}
		dec.Close()
		src.Close()
	}
	// The repacked temporary file is unlinked: nothing is left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "shoal-unzstd-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	// PackFile takes zstd input too.
	m, err := PackFile(ctx, file, filepath.Join(dir, "from-zst.packed"), PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, m), want) {
		t.Error("packing the .zst gives a different manifest than packing the raw image")
	}
}
