package imaging

import (
	"context"
	"fmt"
	"os"
)

// Info describes an image file for people: what `shoal image info` shows.
type Info struct {
	Path   string
	Format string // "packed", "zstd" or "raw"
	// Version is the packed format version (0 for other formats).
	Version  int
	FileSize int64
	Manifest *Manifest
	Stats    Stats
}

// Inspect describes the image at path. A packed image's header and
// manifest are read and checked, but its chunks are not verified (Verify
// does that); raw and zstd images are read in full to build their
// manifest, as Open does.
func Inspect(ctx context.Context, path string, opts OpenOptions) (*Info, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	info := &Info{Path: path, FileSize: fi.Size()}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	format, err := sniff(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	var src Source
	if format == "packed" {
		p, err := OpenPacked(path)
		if err != nil {
			return nil, err
		}
		info.Version, info.FileSize = p.Version(), p.FileSize()
		src = p
	} else if src, err = Open(ctx, path, opts); err != nil {
		return nil, err
	}
	defer src.Close()
	info.Format = src.Format()
	info.Manifest = src.Manifest()
	info.Stats = info.Manifest.Stats()
	return info, nil
}
