package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/internal/filehash"
)

// cell is one measured cell of the matrix.
type cell struct {
	Group string // "raw", "realistic", "kill", "cpu"
	N     int
	Loss  int
	Rate  int64
	Size  int64 // bytes of the raw payload
	Res   result
	Err   string
}

// matrixConfig says what the full benchmark covers.
type matrixConfig struct {
	bin, dir, self, out string
	rate                int64
	rawMiB              int
	receivers           []int
	losses              []int
	timeout             time.Duration
}

// runMatrix runs every scenario, printing each result as it comes, and
// writes the report and the plot.
func runMatrix(ctx context.Context, mc matrixConfig, stdout io.Writer) error {
	started := time.Now()
	raw := filepath.Join(mc.dir, fmt.Sprintf("random-%d.img", mc.rawMiB))
	rawSum, err := randomFile(raw, int64(mc.rawMiB)<<20)
	if err != nil {
		return err
	}
	real, realPacked, realSum, realSize, err := realisticPayload(ctx, mc.bin, mc.dir)
	if err != nil {
		return err
	}
	var runs []cell
	do := func(group, tool string, sc scenario, shoalImage string, extra ...string) {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, mc.timeout)
		defer cancel()
		img := sc.Image
		if tool == "shoal" && shoalImage != "" {
			sc.Image = shoalImage
		}
		r, err := runScenario(rctx, sc, tool, mc.bin, mc.dir, mc.self, extra)
		sc.Image = img
		c := cell{Group: group, N: sc.N, Loss: sc.Loss, Rate: sc.Rate, Size: sc.Size, Res: r}
		switch {
		case rctx.Err() != nil && ctx.Err() == nil:
			c.Err = fmt.Sprintf("did not finish in %s", mc.timeout)
		case err != nil:
			c.Err = err.Error()
		}
		runs = append(runs, c)
		fmt.Fprintf(stdout, "%-9s %-8s n=%-2d loss=%2d%% rate=%-12s wall %7.2fs wire %5d MiB repairs %6d cpu sender %5.2fs receivers %6.2fs ok %d/%d %s\n",
			group, tool, sc.N, sc.Loss, cli.FormatRate(float64(sc.Rate)), r.Wall.Seconds(), r.WireBytes>>20, r.Repairs,
			r.SenderCPU.Seconds(), r.RecvCPU.Seconds(), r.OK, r.N, c.Err)
	}
	// Raw incompressible payload: every receiver count and loss rate.
	for _, loss := range mc.losses {
		for _, n := range mc.receivers {
			sc := scenario{N: n, Loss: loss, Rate: mc.rate, Image: raw, Size: int64(mc.rawMiB) << 20, SHA: rawSum}
			do("raw", "shoal", sc, "")
			do("raw", "udpcast", sc, "")
			if loss == 0 {
				// The lab's loss drops UDP only: TCP would not see it, so
				// unicast runs without loss alone.
				do("raw", "unicast", sc, "")
			}
		}
	}
	// A realistic disk image: shoal sends its packed form, the others the
	// raw image.
	sc := scenario{N: 8, Rate: mc.rate, Image: real, Size: realSize, SHA: realSum}
	do("realistic", "shoal", sc, realPacked)
	do("realistic", "udpcast", sc, "")
	// One receiver killed at about 40 %.
	sc = scenario{N: 8, Rate: mc.rate, Image: raw, Size: int64(mc.rawMiB) << 20, SHA: rawSum, Kill: true}
	do("kill", "shoal", sc, "")
	do("kill", "udpcast", sc, "")
	// Jumbo frames (shoal only: udpcast's blocks are at most 1456 bytes).
	sc = scenario{N: 8, Rate: mc.rate, Image: raw, Size: int64(mc.rawMiB) << 20, SHA: rawSum, MTU: 9000}
	do("jumbo", "shoal", sc, "", "--mtu", "9000")
	// No rate limit: what the 2 cores can do, and CPU per GiB.
	sc = scenario{N: 4, Image: raw, Size: int64(mc.rawMiB) << 20, SHA: rawSum}
	do("cpu", "shoal", sc, "")
	do("cpu", "udpcast", sc, "")

	if err := os.MkdirAll(mc.out, 0o755); err != nil {
		return err
	}
	md := filepath.Join(mc.out, "bench.md")
	png := filepath.Join(mc.out, "bench.png")
	limit := float64(int64(mc.rawMiB)<<20*8) / float64(mc.rate)
	if err := plotTimes(png, runs, mc.losses, limit); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	f, err := os.Create(md)
	if err != nil {
		return err
	}
	defer f.Close()
	writeReport(f, runs, mc, time.Since(started), filepath.Base(png))
	fmt.Fprintf(stdout, "wrote %s and %s\n", md, png)
	return f.Close()
}

// realisticPayload builds the realistic disk image with scripts/mkimage.sh
// and packs it (kept between runs).
func realisticPayload(ctx context.Context, bin, dir string) (raw, packed string, sum [32]byte, size int64, err error) {
	raw = filepath.Join(dir, "realistic.img")
	packed = filepath.Join(dir, "realistic.shoal")
	if _, err := os.Stat(packed); err != nil {
		out, err := exec.CommandContext(ctx, "scripts/mkimage.sh", raw, "256").CombinedOutput()
		if err != nil {
			return "", "", sum, 0, fmt.Errorf("mkimage.sh: %v: %s", err, out)
		}
		out, err = exec.CommandContext(ctx, filepath.Join(bin, "shoal"), "image", "pack", "-q", raw, packed).CombinedOutput()
		if err != nil {
			return "", "", sum, 0, fmt.Errorf("shoal image pack: %v: %s", err, out)
		}
	}
	fi, err := os.Stat(raw)
	if err != nil {
		return "", "", sum, 0, err
	}
	sum, err = filehash.SHA256(raw, fi.Size())
	return raw, packed, sum, fi.Size(), err
}

// machine describes the machine for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), runtime.Version())
}
