package filehash

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

func TestSHA256(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := []byte("shoal writes disks")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		n       int64
		want    [32]byte
		wantErr bool
	}{
		{-1, sha256.Sum256(data), false},
		{int64(len(data)), sha256.Sum256(data), false},
		{5, sha256.Sum256(data[:5]), false},
		{0, sha256.Sum256(nil), false},
		{int64(len(data)) + 1, [32]byte{}, true},
	}
	for _, tt := range tests {
		got, err := SHA256(path, tt.n)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("SHA256(n=%d) = %x, %v", tt.n, got, err)
		}
	}
	if _, err := SHA256(filepath.Join(t.TempDir(), "missing"), -1); err == nil {
		t.Error("a missing file: no error")
	}
}
