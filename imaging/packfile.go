package imaging

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// PackFile packs the image file in (raw, or a zstd stream of a raw image:
// told apart by content) into a packed image at out. It writes a
// temporary file next to out, flushes it and renames it into place, so out
// is either the complete packed image or untouched. opts.Progress, if set,
// gets the bytes of in read so far and in's size.
func PackFile(ctx context.Context, in, out string, opts PackOptions) (*Manifest, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer f.Close()
	size, err := fileSize(f)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	format, err := sniff(f)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", in, err)
	}
	read := &countingReader{r: io.NewSectionReader(f, 0, size)}
	var src io.Reader = read
	imageSize := size
	switch format {
	case "packed":
		return nil, fmt.Errorf("pack %s: it is a packed image already", in)
	case "zstd":
		zr, err := zstd.NewReader(bufio.NewReaderSize(read, 1<<20), zstd.WithDecoderConcurrency(0))
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", in, err)
		}
		defer zr.Close()
		src, imageSize = zr, -1
	}
	if progress := opts.Progress; progress != nil {
		opts.Progress = func(int64, int64) { progress(read.n.Load(), size) }
	}
	var m *Manifest
	err = writeFileAtomic(out, func(tmp *os.File) error {
		var err error
		m, err = Pack(ctx, src, imageSize, tmp, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", in, err)
	}
	return m, nil
}

// UnpackFile writes the raw image of the packed image in to out,
// verifying every chunk and the whole image on the way; out is replaced
// only if all of it checks out.
func UnpackFile(ctx context.Context, in, out string, opts VerifyOptions) error {
	p, err := OpenPacked(in)
	if err != nil {
		return err
	}
	defer p.Close()
	err = writeFileAtomic(out, func(tmp *os.File) error {
		if err := tmp.Truncate(p.m.ImageSize); err != nil {
			return err
		}
		return p.Unpack(ctx, tmp, opts)
	})
	if err != nil {
		return fmt.Errorf("unpack %s: %w", in, err)
	}
	return nil
}

// writeFileAtomic runs write on a new temporary file beside path, then
// flushes it and renames it to path. On any error the temporary file is
// removed and path is left as it was.
func writeFileAtomic(path string, write func(*os.File) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	return nil
}
