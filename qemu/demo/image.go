package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shoal-lab/shoal/internal/filehash"
)

// image is the disk image the demo serves.
type image struct {
	raw    string   // the raw disk image (mkimage.sh)
	packed string   // shoal's packed form, which the server serves
	size   int64    // raw size in bytes
	sum    [32]byte // raw SHA-256
}

// makeImage builds a realistic disk image with scripts/mkimage.sh (GPT,
// an EFI system partition and an ext4 root with real files) and packs it.
func (d *demo) makeImage(ctx context.Context) (image, error) {
	img := image{
		raw:    filepath.Join(d.cfg.work, "demo.img"),
		packed: filepath.Join(d.cfg.work, "demo.shoal"),
		size:   int64(d.cfg.sizeMiB) << 20,
	}
	d.say("making a realistic %d MiB disk image: scripts/mkimage.sh %s %d", d.cfg.sizeMiB, img.raw, d.cfg.sizeMiB)
	if err := d.runShown(ctx, "scripts/mkimage.sh", img.raw, strconv.Itoa(d.cfg.sizeMiB)); err != nil {
		return img, err
	}
	d.say("packing it: shoal image pack %s %s", img.raw, img.packed)
	if err := d.runShown(ctx, filepath.Join(d.cfg.bin, "shoal"), "image", "pack", img.raw, img.packed); err != nil {
		return img, err
	}
	sum, err := filehash.SHA256(img.raw, -1)
	if err != nil {
		return img, err
	}
	img.sum = sum
	return img, nil
}

// runShown runs a command with its output indented under the demo's.
func (d *demo) runShown(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(d.out, "   %s\n", line)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
