package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
)

const imageUsage = `usage: shoal image <command> [flags] FILE...

commands:
  pack IN OUT        pack a raw image (or a zstd-compressed one) into shoal's packed format
  unpack PACKED OUT  write the raw image of a packed one, verifying it
  info FILE          describe an image: format, sizes, chunks by encoding, ratio, SHA-256
  verify FILE        decompress and check every chunk and the whole-image SHA-256

Formats are told apart by content: packed ("SHOALPAK"), zstd stream, or raw.
See docs/image-format.md.
`

// imageCmd runs "shoal image …".
func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, imageUsage)
		return fmt.Errorf("%w: shoal image needs a command", errUsage)
	}
	switch args[0] {
	case "pack":
		return imagePack(ctx, args[1:], stdout, stderr)
	case "unpack":
		return imageUnpack(ctx, args[1:], stdout, stderr)
	case "info":
		return imageInfo(ctx, args[1:], stdout, stderr)
	case "verify":
		return imageVerify(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, imageUsage)
		return nil
	}
	fmt.Fprint(stderr, imageUsage)
	return fmt.Errorf("%w: unknown image command %q", errUsage, args[0])
}

// imageFlags parses a subcommand's flags and checks its argument count.
func imageFlags(fs *flag.FlagSet, args []string, stderr io.Writer, usage string, nargs int) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: shoal image %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return fmt.Errorf("%w: shoal image %s", errUsage, usage)
	}
	return nil
}

// helpOK turns -h into success.
func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func imagePack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal image pack", flag.ContinueOnError)
	chunkSize := fs.Int("chunk-size", imaging.DefaultChunkSize, "chunk size in bytes")
	level := fs.Int("level", 3, "zstd level (1 fastest … 19 smallest; as the zstd command's)")
	workers := fs.Int("workers", 0, "chunks compressed at once (default: one per core)")
	quiet := fs.Bool("q", false, "no progress bar")
	if err := imageFlags(fs, args, stderr, "pack [flags] IN OUT", 2); err != nil {
		return helpOK(err)
	}
	in, out := fs.Arg(0), fs.Arg(1)
	bar := newBar(stderr, *quiet, "packing")
	start := time.Now()
	m, err := imaging.PackFile(ctx, in, out, imaging.PackOptions{ChunkSize: *chunkSize, Level: *level, Workers: *workers, Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	s := m.Stats()
	fmt.Fprintf(stdout, "packed %s to %s: %s image in %s (%.1f %% of it), %d chunks: %d zero, %d zstd, %d raw; %s, %.0f MB/s\n",
		in, out, imaging.HumanBytes(m.ImageSize), imaging.HumanBytes(fi.Size()), 100*float64(fi.Size())/float64(m.ImageSize),
		s.Chunks, s.Zero, s.Zstd, s.Raw, elapsed.Round(time.Millisecond), float64(m.ImageSize)/elapsed.Seconds()/1e6)
	return nil
}

func imageUnpack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal image unpack", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "no progress bar")
	if err := imageFlags(fs, args, stderr, "unpack [flags] PACKED OUT", 2); err != nil {
		return helpOK(err)
	}
	bar := newBar(stderr, *quiet, "unpacking")
	err := imaging.UnpackFile(ctx, fs.Arg(0), fs.Arg(1), imaging.VerifyOptions{Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unpacked %s to %s, every chunk and the whole image verified\n", fs.Arg(0), fs.Arg(1))
	return nil
}

func imageInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal image info", flag.ContinueOnError)
	chunkSize := fs.Int("chunk-size", imaging.DefaultChunkSize, "chunk size to describe raw and zstd images with")
	quiet := fs.Bool("q", false, "no progress bar")
	if err := imageFlags(fs, args, stderr, "info [flags] FILE", 1); err != nil {
		return helpOK(err)
	}
	bar := newBar(stderr, *quiet, "reading")
	info, err := imaging.Inspect(ctx, fs.Arg(0), imaging.OpenOptions{ChunkSize: *chunkSize, Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	m, s := info.Manifest, info.Stats
	format := info.Format
	switch info.Format {
	case "packed":
		format = fmt.Sprintf("shoal packed image, version %d", info.Version)
	case "zstd":
		format = "zstd-compressed raw image"
	case "raw":
		format = "raw image"
	}
	pct := func(n int) float64 { return 100 * float64(n) / float64(max(1, s.Chunks)) }
	w := stdout
	fmt.Fprintf(w, "file:        %s\n", info.Path)
	fmt.Fprintf(w, "format:      %s\n", format)
	fmt.Fprintf(w, "file size:   %s (%d bytes)\n", imaging.HumanBytes(info.FileSize), info.FileSize)
	fmt.Fprintf(w, "image size:  %s (%d bytes)\n", imaging.HumanBytes(m.ImageSize), m.ImageSize)
	fmt.Fprintf(w, "chunks:      %d of %s\n", s.Chunks, imaging.HumanBytes(int64(m.ChunkSize)))
	fmt.Fprintf(w, "  zero:      %d (%.1f %%), never sent\n", s.Zero, pct(s.Zero))
	if info.Format == "raw" {
		fmt.Fprintf(w, "  raw:       %d (%.1f %%)\n", s.Raw, pct(s.Raw))
	} else {
		fmt.Fprintf(w, "  zstd:      %d (%.1f %%), %s compressed to %s\n", s.Zstd, pct(s.Zstd), imaging.HumanBytes(s.ZstdBytes), imaging.HumanBytes(s.ZstdWireBytes))
		fmt.Fprintf(w, "  raw:       %d (%.1f %%), incompressible\n", s.Raw, pct(s.Raw))
	}
	fmt.Fprintf(w, "to send:     %s (%.1f %% of the image", imaging.HumanBytes(s.WireBytes), 100*float64(s.WireBytes)/float64(m.ImageSize))
	if s.WireBytes > 0 {
		fmt.Fprintf(w, ", ratio %.2f:1", s.Ratio())
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "SHA-256:     %x\n", m.ImageSHA256)
	return nil
}

func imageVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal image verify", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "no progress bar")
	if err := imageFlags(fs, args, stderr, "verify [flags] FILE", 1); err != nil {
		return helpOK(err)
	}
	path := fs.Arg(0)
	p, err := imaging.OpenPacked(path)
	if errors.Is(err, imaging.ErrPacked) && !isPackedFile(path) {
		// Raw and zstd images carry no hashes of their own: reading them
		// through (zstd checks its frame checksums) is all there is.
		bar := newBar(stderr, *quiet, "reading")
		src, err := imaging.Open(ctx, path, imaging.OpenOptions{Progress: bar.update})
		bar.done()
		if err != nil {
			return err
		}
		defer src.Close()
		m := src.Manifest()
		fmt.Fprintf(stdout, "%s: %s image with no stored hashes; read %s in full, SHA-256 %x\n", path, src.Format(), imaging.HumanBytes(m.ImageSize), m.ImageSHA256)
		return nil
	}
	if err != nil {
		if errors.Is(err, imaging.ErrPacked) {
			fmt.Fprintf(stdout, "%s: BAD: %v\n", path, err)
			return &exitError{code: 1, err: fmt.Errorf("%s is corrupt: %w", path, err)}
		}
		return err
	}
	defer p.Close()
	m := p.Manifest()
	bar := newBar(stderr, *quiet, "verifying")
	start := time.Now()
	err = p.Verify(ctx, imaging.VerifyOptions{Progress: bar.update})
	bar.done()
	if err != nil {
		var ce *imaging.ChunkError
		if errors.As(err, &ce) {
			off, n := m.ChunkRange(ce.Chunk)
			fmt.Fprintf(stdout, "%s: BAD: chunk %d of %d is corrupt: image bytes %d-%d, stored at file offset %d: %v\n",
				path, ce.Chunk, len(m.Chunks), off, off+int64(n)-1, ce.FileOffset, ce.Err)
		} else {
			fmt.Fprintf(stdout, "%s: BAD: %v\n", path, err)
		}
		return &exitError{code: 1, err: fmt.Errorf("%s is corrupt: %w", path, err)}
	}
	fmt.Fprintf(stdout, "%s: OK: %d chunks and the whole image (%s, SHA-256 %x) match the manifest; verified in %s\n",
		path, len(m.Chunks), imaging.HumanBytes(m.ImageSize), m.ImageSHA256, time.Since(start).Round(time.Millisecond))
	return nil
}

// isPackedFile reports whether path starts with the packed magic, so a
// damaged header is reported as damage and not as "not packed".
func isPackedFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 8)
	n, _ := io.ReadFull(f, b)
	return string(b[:n]) == "SHOALPAK"
}

// bar is a progress bar on a terminal, and nothing otherwise. It is
// drawn from the first update on, when the total is known.
type bar struct {
	w    io.Writer // nil: no bar
	what string
	once sync.Once
	pb   *progressbar.ProgressBar
}

func newBar(stderr io.Writer, quiet bool, what string) *bar {
	if f, ok := stderr.(*os.File); ok && !quiet && cli.IsTerminal(f) {
		return &bar{w: stderr, what: what}
	}
	return &bar{}
}

// update is a Progress callback.
func (b *bar) update(done, total int64) {
	if b.w == nil {
		return
	}
	b.once.Do(func() {
		b.pb = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(b.what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionClearOnFinish(),
		)
	})
	b.pb.Set64(done)
}

// done clears the bar.
func (b *bar) done() {
	if b.pb != nil {
		b.pb.Finish()
	}
}
