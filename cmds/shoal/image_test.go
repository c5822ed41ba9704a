package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-lab/shoal/imaging"
)

// testImage writes a 3 MiB image: zeros, text and random bytes.
func testImage(t *testing.T) string {
	t.Helper()
	img := make([]byte, 3<<20)
	copy(img[1<<20:], bytes.Repeat([]byte("shoal image test "), 60000))
	r := rand.New(rand.NewPCG(1, 2))
	for i := 2 << 20; i < len(img); i++ {
		img[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runShoal(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestImagePackInfoVerifyUnpack(t *testing.T) {
	raw := testImage(t)
	dir := t.TempDir()
	packed := filepath.Join(dir, "disk.packed")
	out, _, err := runShoal("image", "pack", "-chunk-size", "65536", raw, packed)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "48 chunks: 16 zero, 16 zstd, 16 raw") {
		t.Errorf("pack said %q", out)
	}
	out, _, err = runShoal("image", "info", packed)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"shoal packed image, version 1", "3.0 MiB", "zero:      16", "zstd:      16", "raw:       16", "SHA-256:"} {
		if !strings.Contains(out, want) {
			t.Errorf("info lacks %q:\n%s", want, out)
		}
	}
	if out, _, err = runShoal("image", "verify", packed); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	unpacked := filepath.Join(dir, "back.img")
	if _, _, err := runShoal("image", "unpack", packed, unpacked); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(raw)
	b, _ := os.ReadFile(unpacked)
	if !bytes.Equal(a, b) {
		t.Fatal("unpacked image differs")
	}
	if out, _, err = runShoal("image", "info", raw); err != nil || !strings.Contains(out, "raw image") {
		t.Fatalf("info of a raw image: %v\n%s", err, out)
	}
}

func TestImageVerifyCorrupt(t *testing.T) {
	raw := testImage(t)
	packed := filepath.Join(t.TempDir(), "disk.packed")
	if _, _, err := runShoal("image", "pack", "-chunk-size", "65536", raw, packed); err != nil {
		t.Fatal(err)
	}
	p, err := imaging.OpenPacked(packed)
	if err != nil {
		t.Fatal(err)
	}
	off := p.ChunkFileOffset(20) + 10 // a zstd chunk
	p.Close()
	f, err := os.OpenFile(packed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xFF}, off)
	f.Close()

	out, _, err := runShoal("image", "verify", packed)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a corrupt image: error %v, want exit status 1", err)
	}
	if !strings.Contains(out, "BAD: chunk 20 of 48") || !strings.Contains(out, "image bytes 1310720-") {
		t.Errorf("verify said %q", out)
	}
}

func TestImageUsage(t *testing.T) {
	for _, args := range [][]string{
		{"image"},
		{"image", "frob"},
		{"image", "pack", "only-one"},
		{"image", "verify"},
	} {
		if _, _, err := runShoal(args...); !errors.Is(err, errUsage) {
			t.Errorf("%q: error %v, want a usage error", args, err)
		}
	}
	if out, _, err := runShoal("image", "help"); err != nil || !strings.Contains(out, "pack IN OUT") {
		t.Errorf("help: %v %q", err, out)
	}
}
