package imaging

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRawSourceDetectsChange: a raw image changed on disk after the server
// scanned it is caught when the changed chunk is read to be sent.
func TestRawSourceDetectsChange(t *testing.T) {
	data := make([]byte, 4*MinChunkSize)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "raw.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := Open(context.Background(), path, OpenOptions{ChunkSize: MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.ReadChunk(2, nil); err != nil {
		t.Fatalf("unchanged chunk: %v", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{data[2*MinChunkSize+7] ^ 1}, 2*MinChunkSize+7)
	f.Close()
	_, err = src.ReadChunk(2, nil)
	if err == nil || !strings.Contains(err.Error(), "image changed since it was opened") || !strings.Contains(err.Error(), "chunk 2") {
		t.Fatalf("changed chunk: err = %v, want it named as changed", err)
	}
	if _, err := src.ReadChunk(1, nil); err != nil {
		t.Fatalf("unchanged neighbour: %v", err)
	}
}
