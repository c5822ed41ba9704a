package imaging

import (
	"errors"
	"fmt"
)

// Errors callers branch on with errors.Is.
var (
	// ErrImageHash marks an image whose chunks all match the manifest but
	// whose whole-image SHA-256 does not.
	ErrImageHash = errors.New("whole-image SHA-256 does not match the manifest")
	// ErrChunkData marks chunk wire bytes that cannot be decoded (a broken
	// zstd frame, a wrong length).
	ErrChunkData = errors.New("chunk data is corrupt")
)

// ChunkError names the chunk an error is about and where it lives, so a
// report can point at the damage.
type ChunkError struct {
	Chunk int
	// Offset is where the chunk starts in the uncompressed image.
	Offset int64
	// FileOffset is where the chunk's wire bytes start in a packed image
	// file, or -1 when there is no such file or the chunk has no bytes.
	FileOffset int64
	Err        error
}

func (e *ChunkError) Error() string {
	if e.FileOffset >= 0 {
		return fmt.Sprintf("chunk %d (image offset %d, file offset %d): %v", e.Chunk, e.Offset, e.FileOffset, e.Err)
	}
	return fmt.Sprintf("chunk %d (image offset %d): %v", e.Chunk, e.Offset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }
