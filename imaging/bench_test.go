package imaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPack packs the realistic image (MB/s of raw image).
func BenchmarkPack(b *testing.B) {
	raw := realisticImage(b)
	fi, err := os.Stat(raw)
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "bench.packed")
	b.SetBytes(fi.Size())
	for b.Loop() {
		if _, err := PackFile(context.Background(), raw, out, PackOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPackVsZstdCLI times PackFile (what `shoal image pack` runs) at
// zstd levels 3 (the default) and 1, and `zstd -3 -T0` on the realistic
// image, alternately, and reports the ratio of their best times (x-zstd;
// the target is 1.2 or less).
func BenchmarkPackVsZstdCLI(b *testing.B) {
	if _, err := exec.LookPath("zstd"); err != nil {
		b.Skip("zstd is not installed")
	}
	raw := realisticImage(b)
	dir := b.TempDir()
	best := func(cur, d time.Duration) time.Duration {
		if cur == 0 || d < cur {
			return d
		}
		return cur
	}
	for _, level := range []int{3, 1} {
		b.Run(fmt.Sprintf("level=%d", level), func(b *testing.B) {
			var shoal, zstdCLI time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := PackFile(context.Background(), raw, filepath.Join(dir, "x.packed"), PackOptions{Level: level}); err != nil {
					b.Fatal(err)
				}
				shoal = best(shoal, time.Since(start))
				start = time.Now()
				if out, err := exec.Command("zstd", "-3", "-T0", "-q", "-f", "-o", filepath.Join(dir, "x.zst"), raw).CombinedOutput(); err != nil {
					b.Fatalf("zstd: %v\n%s", err, out)
				}
				zstdCLI = best(zstdCLI, time.Since(start))
			}
			b.ReportMetric(shoal.Seconds(), "shoal-s")
			b.ReportMetric(zstdCLI.Seconds(), "zstd-s")
			b.ReportMetric(shoal.Seconds()/zstdCLI.Seconds(), "x-zstd")
		})
	}
}

// BenchmarkWriter writes the packed realistic image to a file through the
// client's path: read wire bytes, decode and verify, Writer (MB/s of
// image).
func BenchmarkWriter(b *testing.B) {
	src := packedRealistic(b)
	m := src.Manifest()
	order := make([]int, len(m.Chunks))
	for i := range order {
		order[i] = i
	}
	path := filepath.Join(b.TempDir(), "disk.img")
	b.SetBytes(m.ImageSize)
	for b.Loop() {
		os.Remove(path)
		tgt, err := OpenTarget(path)
		if err != nil {
			b.Fatal(err)
		}
		w, err := NewWriter(tgt, m, WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Begin(); err != nil {
			b.Fatal(err)
		}
		writeChunks(b, w, src, order)
		if err := w.Finish(context.Background()); err != nil {
			b.Fatal(err)
		}
		w.Close()
		tgt.Close()
	}
}
