// Command impair forwards Ethernet frames between two interfaces and
// impairs them on the way (loss, bursty loss, duplication, reordering,
// delay), for tests on a kernel without tc netem. To put it between a QEMU
// tap and the lab's bridge (both in the switch namespace SW), take the tap
// off the bridge, give the bridge a veth pair, and forward between the tap
// and the pair's free end:
//
//	ip -n SW link set TAP nomaster
//	ip -n SW link add imp0 type veth peer name imp1
//	ip -n SW link set imp0 master shlbr up
//	ip -n SW link set imp1 up
//	ip netns exec SW impair -a TAP -b imp1 -loss 20 -burst 5 -dup 5 -reorder 5 -seed 42
//
// (From Go, lab.Lab.DetourTap does the plumbing and impair.InsertTap runs
// the switch in-process.) The rules apply to both directions unless -dir
// says otherwise: atob is what the VM sends.
//
// It runs until interrupted, then prints each direction's counters (and
// every -stats interval). The seed (a random one if -seed is 0) is logged
// so that a run can be replayed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/qemu/impair"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "impair:", err)
		}
		os.Exit(2)
	}
}

// options are the parsed command line.
type options struct {
	cfg   impair.Config
	stats time.Duration
}

// parse turns the command line into a switch configuration.
func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("impair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		a        = fs.String("a", "", "first interface (required)")
		b        = fs.String("b", "", "second interface (required)")
		dir      = fs.String("dir", "both", "direction the rules apply to: both, atob or btoa")
		seed     = fs.Uint64("seed", 0, "seed of the pseudo-random decisions (0: random, logged)")
		loss     = fs.Float64("loss", 0, "percent of frames to drop (the mean, with -burst)")
		burst    = fs.Float64("burst", 0, "drop in bursts of this many frames on average (Gilbert-Elliott); -loss is then the mean loss")
		ge       = fs.String("ge", "", "Gilbert-Elliott model in percent: ENTER,LEAVE,BADLOSS[,GOODLOSS] (overrides -loss and -burst)")
		dup      = fs.Float64("dup", 0, "percent of frames to send twice")
		reorder  = fs.Float64("reorder", 0, "percent of frames to hold back so later ones overtake them")
		depth    = fs.Int("reorder-depth", 0, "frames that overtake a held frame (0: 1)")
		wait     = fs.Duration("reorder-wait", 0, "longest a held frame waits for them (0: 10ms)")
		delay    = fs.Duration("delay", 0, "delay added to every frame")
		jitter   = fs.Duration("jitter", 0, "uniform variation of the delay, ±")
		udpOnly  = fs.Bool("udp-only", false, "apply the rules to UDP frames only; everything else passes unharmed")
		noVnet   = fs.Bool("no-vnet-hdr", false, "do not use PACKET_VNET_HDR (then turn checksum offload off on the interfaces)")
		stats    = fs.Duration("stats", 0, "print the counters at this interval (0: only at exit)")
		verbose  = fs.Bool("v", false, "log debug messages")
		logLevel = slog.LevelInfo
	)
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *a == "" || *b == "" {
		return options{}, errors.New("need -a and -b")
	}
	r := impair.Rules{Loss: *loss / 100}
	if *burst > 0 {
		r = impair.BurstyLoss(*loss/100, *burst)
	}
	if *ge != "" {
		f := strings.Split(*ge, ",")
		if len(f) < 3 || len(f) > 4 {
			return options{}, fmt.Errorf("-ge %q: want ENTER,LEAVE,BADLOSS[,GOODLOSS]", *ge)
		}
		var p [4]float64
		for i, s := range f {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return options{}, fmt.Errorf("-ge %q: %w", *ge, err)
			}
			p[i] = v / 100
		}
		r = impair.Rules{BurstEnter: p[0], BurstLeave: p[1], BurstLoss: p[2], Loss: p[3]}
	}
	r.Duplicate = *dup / 100
	r.Reorder = *reorder / 100
	r.ReorderDepth = *depth
	r.ReorderWait = *wait
	r.Delay = *delay
	r.Jitter = *jitter
	r.UDPOnly = *udpOnly
	if err := r.Validate(); err != nil {
		return options{}, err
	}
	if *verbose {
		logLevel = slog.LevelDebug
	}
	o := options{
		cfg: impair.Config{
			A: *a, B: *b, Seed: *seed, NoVnetHdr: *noVnet,
			Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel})),
		},
		stats: *stats,
	}
	switch *dir {
	case "both":
		o.cfg.AtoB, o.cfg.BtoA = r, r
	case "atob":
		o.cfg.AtoB = r
	case "btoa":
		o.cfg.BtoA = r
	default:
		return options{}, fmt.Errorf("-dir %q: want both, atob or btoa", *dir)
	}
	return o, nil
}

// run forwards until ctx is done, then prints the counters to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	sw, err := impair.New(o.cfg)
	if err != nil {
		return err
	}
	defer sw.Close()
	report := func() {
		atob, btoa := sw.Stats()
		fmt.Fprintf(stdout, "%s→%s: %s\n%s→%s: %s\n", o.cfg.A, o.cfg.B, atob, o.cfg.B, o.cfg.A, btoa)
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.stats > 0 {
		wg.Go(func() {
			t := time.NewTicker(o.stats)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					report()
				}
			}
		})
	}
	err = sw.Run(ctx)
	cancel()
	wg.Wait()
	report()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, sw.Close())
}
