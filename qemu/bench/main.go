// Command bench measures shoal against udpcast (the engine in Clonezilla and
// FOG) and N parallel HTTP downloads on the same emulated link, in the
// private virtual lab: one sender whose link rate is capped with tc tbf, N
// receivers with independent random loss (nftables). `make bench` runs the
// whole matrix and writes docs/bench.md and docs/bench.png.
//
// Every figure is measured in one run on one machine, so compare ratios:
// the absolute times depend on the machine.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/internal/filehash"
	"github.com/shoal-lab/shoal/qemu/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		serveHTTPAddr = fs.String("serve-http", "", "internal: serve -root over HTTP on this address")
		root          = fs.String("root", "", "internal: directory for -serve-http")
		fetchURL      = fs.String("fetch", "", "internal: download this URL to -out")
		out           = fs.String("out", "", "internal: output of -fetch")

		tools    = fs.String("tools", "shoal,udpcast,unicast", "tools to run, comma-separated")
		n        = fs.Int("n", 8, "receivers (one scenario)")
		loss     = fs.Int("loss", 0, "random loss at every receiver, percent (one scenario)")
		rateFlag = fs.String("rate", "100M", "sender link rate (tc tbf); 0 for none")
		sizeMiB  = fs.Int("size", 128, "payload size in MiB")
		kill     = fs.Bool("kill", false, "kill one receiver at about 40 %")
		mtu      = fs.Int("mtu", 0, "link MTU (one scenario; pass --mtu to shoal with -shoal-args too)")
		bin      = fs.String("bin", "build", "directory with the shoal binaries")
		dir      = fs.String("dir", "build/bench", "work directory")
		shoalArg = fs.String("shoal-args", "", "extra flags for shoal serve")
		matrix   = fs.Bool("matrix", false, "run the whole benchmark and write docs/bench.md and docs/bench.png")
		outDir   = fs.String("report", "docs", "where -matrix writes its report")
		timeout  = fs.Duration("timeout", 200*time.Second, "give up on one run after this long")
		rxList   = fs.String("receivers", "1,4,8,16", "receiver counts of the -matrix")
		lossList = fs.String("losses", "0,2,10", "loss rates (%) of the -matrix")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *serveHTTPAddr != "":
		return serveHTTP(*serveHTTPAddr, *root)
	case *fetchURL != "":
		return fetch(*fetchURL, *out)
	}
	rate, err := cli.ParseRate(*rateFlag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *matrix {
		rx, err := ints(*rxList)
		if err != nil {
			return fmt.Errorf("-receivers: %w", err)
		}
		losses, err := ints(*lossList)
		if err != nil {
			return fmt.Errorf("-losses: %w", err)
		}
		return runMatrix(ctx, matrixConfig{bin: *bin, dir: *dir, self: self, out: *outDir, rate: rate, rawMiB: *sizeMiB,
			receivers: rx, losses: losses, timeout: *timeout}, stdout)
	}
	img := filepath.Join(*dir, fmt.Sprintf("random-%d.img", *sizeMiB))
	sum, err := randomFile(img, int64(*sizeMiB)<<20)
	if err != nil {
		return err
	}
	sc := scenario{N: *n, Loss: *loss, Rate: rate, Image: img, Size: int64(*sizeMiB) << 20, SHA: sum, Kill: *kill, MTU: *mtu}
	for _, tool := range strings.Split(*tools, ",") {
		rctx, cancel := context.WithTimeout(ctx, *timeout)
		r, err := runScenario(rctx, sc, tool, *bin, *dir, self, strings.Fields(*shoalArg))
		timedOut := rctx.Err() != nil && ctx.Err() == nil
		cancel()
		if timedOut {
			fmt.Fprintf(stdout, "%-8s n=%-2d loss=%2d%%: did not finish in %s\n", tool, sc.N, sc.Loss, *timeout)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tool, err)
		}
		limit := linkLimit(sc)
		fmt.Fprintf(stdout, "%-8s n=%-2d loss=%2d%% rate=%s size=%dMiB: wall %6.2fs (%.2f× link limit %.2fs) wire %dMiB repairs %d cpu sender %.2fs receivers %.2fs ok %d/%d %s\n",
			r.Tool, sc.N, sc.Loss, cli.FormatRate(float64(rate)), *sizeMiB, r.Wall.Seconds(), r.Wall.Seconds()/limit, limit,
			r.WireBytes>>20, r.Repairs, r.SenderCPU.Seconds(), r.RecvCPU.Seconds(), r.OK, r.N, r.Note)
	}
	return nil
}

// scenario is one cell of the matrix.
type scenario struct {
	MTU   int // 0: the default 1500
	N     int
	Loss  int
	Rate  int64
	Image string
	Size  int64
	SHA   [32]byte
	Kill  bool
}

// linkLimit is the time the payload needs at the link rate, in seconds.
func linkLimit(sc scenario) float64 {
	if sc.Rate == 0 {
		return 0
	}
	return float64(sc.Size*8) / float64(sc.Rate)
}

// runScenario builds a fresh lab and runs one tool in it.
func runScenario(ctx context.Context, sc scenario, tool, bin, dir, self string, shoalArgs []string) (result, error) {
	l, err := lab.New(ctx, lab.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return result{}, err
	}
	defer l.Close()
	e := &env{lab: l, dir: dir, bin: bin, self: self, rate: sc.Rate}
	if e.sender, err = l.AddHost("sender"); err != nil {
		return result{}, err
	}
	if sc.MTU > 0 {
		if err := e.sender.SetMTU(sc.MTU); err != nil {
			return result{}, err
		}
	}
	if sc.Rate > 0 {
		if err := e.sender.SetRate(sc.Rate); err != nil {
			return result{}, err
		}
	}
	for i := range sc.N {
		h, err := l.AddHost(fmt.Sprintf("r%d", i))
		if err != nil {
			return result{}, err
		}
		if sc.Loss > 0 {
			if err := h.SetLoss(sc.Loss); err != nil {
				return result{}, err
			}
		}
		if sc.MTU > 0 {
			if err := h.SetMTU(sc.MTU); err != nil {
				return result{}, err
			}
		}
		e.receivers = append(e.receivers, h)
	}
	switch tool {
	case "shoal":
		return e.runShoal(ctx, sc.Image, sc.Size, sc.SHA, sc.Kill, shoalArgs...)
	case "udpcast":
		return e.runUdpcast(ctx, sc.Image, sc.Size, sc.SHA, sc.Kill)
	case "unicast":
		return e.runHTTP(ctx, sc.Image, sc.Size, sc.SHA)
	}
	return result{}, fmt.Errorf("unknown tool %q", tool)
}

// randomFile writes size incompressible bytes to path (kept between runs).
func randomFile(path string, size int64) ([32]byte, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return filehash.SHA256(path, size)
	}
	var sum [32]byte
	f, err := os.Create(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{42})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; done += int64(len(buf)) {
		r.Read(buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			return sum, err
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// ints parses a comma-separated list of numbers.
func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
