// Package filehash hashes files and disk images with SHA-256, the way
// sha256sum does, for the tools and tests that check what landed on a disk.
package filehash

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// SHA256 hashes the first n bytes of the file at path, or all of it when n
// is negative. A file shorter than n is an error: what should be there is
// not.
func SHA256(path string, n int64) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if n < 0 {
		_, err = io.Copy(h, f)
	} else {
		_, err = io.CopyN(h, f, n)
	}
	if err != nil {
		return sum, fmt.Errorf("read %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
