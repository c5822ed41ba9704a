package client

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-lab/shoal/imaging"
)

// TestCheckerFindsWhatReadsBackWrong writes an image to a file target,
// spoils the disk in one place, queues every chunk as the writer does, and
// expects the checker to name that chunk and no other.
func TestCheckerFindsWhatReadsBackWrong(t *testing.T) {
	const chunk = 4096
	img := make([]byte, 24*chunk)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img {
		if (i/chunk)%3 != 1 { // chunks 1, 4, 7, … stay zero
			img[i] = byte(rng.Uint32())
		}
	}
	packed, err := os.Create(filepath.Join(t.TempDir(), "img.shoal"))
	if err != nil {
		t.Fatal(err)
	}
	defer packed.Close()
	m, err := imaging.Pack(context.Background(), bytes.NewReader(img), int64(len(img)), packed, imaging.PackOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		spoil []int // chunks whose disk bytes are spoiled
		want  int   // the first bad chunk reported, or -1
	}{
		{"all good", nil, -1},
		{"a data chunk spoiled", []int{9}, 9},
		{"a zero chunk not zero", []int{13}, 13},
		{"two spoiled: the first is named", []int{20, 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk")
			disk := bytes.Clone(img)
			for _, c := range tt.spoil {
				disk[c*chunk+100] ^= 0x40
			}
			if err := os.WriteFile(path, disk, 0o644); err != nil {
				t.Fatal(err)
			}
			tgt, err := imaging.OpenTarget(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			c := startChecker(context.Background(), tgt, m, slog.New(slog.DiscardHandler))
			for i := range m.Chunks {
				c.add(i)
			}
			bad, err := c.finish()
			if err != nil {
				t.Fatal(err)
			}
			if bad != tt.want {
				t.Errorf("first bad chunk %d, want %d", bad, tt.want)
			}
			if got := c.read.Load(); got != int64(len(img)) {
				t.Errorf("read back %d bytes, want %d", got, len(img))
			}
		})
	}
}
