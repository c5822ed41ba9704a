package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/internal/prof"
	"github.com/shoal-lab/shoal/protocol"
	"github.com/shoal-lab/shoal/server"
)

func serve(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		session    = fs.String("session", "", "session name clients ask for (required)")
		image      = fs.String("image", "", "disk image to serve (required)")
		iface      = fs.String("interface", "", "network interface to serve on (default: the default route's)")
		group      = fs.String("group", "", "multicast group, range (A-B) or prefix (A/N) to pick the data group from (default: random in 239.0.0.0-239.254.255.255)")
		port       = fs.Int("port", protocol.DefaultDataPort, "UDP port of the data stream")
		discPort   = fs.Int("discovery-port", protocol.DiscoveryPort, "UDP port clients send discovery to")
		ctlPort    = fs.Int("control-port", 0, "TCP port clients join on (default: any free port)")
		ttl        = fs.Int("ttl", 1, "multicast TTL (1 keeps the stream on the local network)")
		maxRate    = fs.String("max-rate", "0", "send rate cap in bits per second, e.g. 500M or 1G (0: no cap)")
		mode       = fs.String("mode", string(server.ModeMulticast), "how data reaches clients: multicast, broadcast (switches that drop multicast) or unicast (one stream per client)")
		fallback   = fs.Duration("fallback-after", 3*time.Second, "multicast mode: fall back to broadcast when a client hears nothing of the group this long after joining (0: never)")
		mtu        = fs.Int("mtu", server.DefaultMTU, "path MTU; sets the data packet size (9000 for jumbo frames)")
		minClients = fs.Int("min-clients", 0, "start when this many clients have joined")
		waitJoin   = fs.Duration("wait-after-join", 0, "start this long after the last client joined (restarts at every join)")
		startAt    = fs.String("start-at", "", "start at this time of day, HH:MM or HH:MM:SS")
		timeout    = fs.Duration("client-timeout", 8*time.Second, "drop a client silent this long")
		slow       = fs.String("slow", string(server.SlowWait), "policy for a client that cannot keep up: wait (it sets the pace) or drop")
		slowAfter  = fs.Duration("slow-after", 30*time.Second, "with --slow=drop: drop a client that held the sender back this long")
		chunkSize  = fs.Int("chunk-size", imaging.DefaultChunkSize, "chunk size for raw images, in bytes")
		keyFile    = fs.String("key-file", "", "authenticate every packet with this key (shoal key new FILE makes one); clients need the same key")
		encrypt    = fs.Bool("encrypt", false, "with --key-file: also encrypt the image on the wire")
		logLevel   = fs.String("log-level", "", "log level: debug, info, warn or error (default: warn on a terminal, info otherwise)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: shoal serve --session NAME --image FILE [flags]\n\n"+
			"Starts when any criterion is met (--min-clients, --wait-after-join, --start-at),\n"+
			"or when you press Enter here, or on SIGUSR1. Exit status 0 only if every client verified its disk.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *session == "" || *image == "" {
		fs.Usage()
		return fmt.Errorf("%w: --session and --image are required", errUsage)
	}
	level, err := logLevelFor(*logLevel, stderr)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := server.Config{
		Session: *session, ImageName: *image, Interface: *iface,
		DataPort: *port, DiscoveryPort: *discPort, ControlPort: *ctlPort, TTL: *ttl, MTU: *mtu,
		MinClients: *minClients, WaitAfterJoin: *waitJoin, ClientTimeout: *timeout,
		Slow: server.SlowPolicy(*slow), SlowAfter: *slowAfter, Logger: log,
		Mode: server.Mode(*mode), FallbackAfter: *fallback,
	}
	if cfg.MaxRate, err = cli.ParseRate(*maxRate); err != nil {
		return fmt.Errorf("%w: --max-rate: %v", errUsage, err)
	}
	if *group != "" {
		if cfg.Groups, err = server.ParseGroupRange(*group); err != nil {
			return fmt.Errorf("%w: --group: %v", errUsage, err)
		}
	}
	if cfg.FallbackAfter == 0 {
		cfg.FallbackAfter = -1
	}
	if *keyFile != "" {
		k, err := protocol.LoadKeyFile(*keyFile)
		if err != nil {
			return fmt.Errorf("%w: --key-file: %v", errUsage, err)
		}
		cfg.Key, cfg.Encrypt = &k, *encrypt
	} else if *encrypt {
		return fmt.Errorf("%w: --encrypt needs --key-file", errUsage)
	}
	if *startAt != "" {
		if cfg.StartAt, err = cli.NextClock(*startAt, time.Now()); err != nil {
			return fmt.Errorf("%w: --start-at: %v", errUsage, err)
		}
	}

	fmt.Fprintf(stderr, "shoal: reading %s\n", *image)
	src, err := imaging.Open(ctx, *image, imaging.OpenOptions{ChunkSize: *chunkSize})
	if err != nil {
		return err
	}
	defer src.Close()
	m := src.Manifest()

	out := &lineWriter{w: stdout}
	cfg.Source = src
	cfg.OnEvent = func(ev server.Event) { out.event(ev) }
	srv, err := server.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	fmt.Fprintf(stdout, "session %q: %s (%s, %s, %d chunks, %s to send), SHA-256 %x\n",
		*session, *image, src.Format(), imaging.HumanBytes(m.ImageSize), len(m.Chunks), imaging.HumanBytes(m.WireBytes()), m.ImageSHA256)
	fmt.Fprintf(stdout, "waiting for clients; starts %s\n", startCriteria(&cfg))

	// "Send now": a line typed on the terminal, or SIGUSR1 from a script.
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			srv.StartNow()
		}
	}()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			srv.StartNow()
		}
	}()

	progressCtx, stopProgress := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		showProgress(progressCtx, srv, stderr, out)
	}()
	stopProfile := prof.StartFromEnv()
	sum, runErr := srv.Run(ctx)
	stopProfile()
	stopProgress()
	wg.Wait()
	out.endLine()
	if sum != nil {
		fmt.Fprintln(stdout)
		sum.WriteTable(stdout)
	}
	if runErr != nil {
		return runErr
	}
	if !sum.OK() {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d clients failed", sum.Failed(), len(sum.Clients))}
	}
	return nil
}

func startCriteria(cfg *server.Config) string {
	var c []string
	if cfg.MinClients > 0 {
		c = append(c, fmt.Sprintf("when %d clients have joined", cfg.MinClients))
	}
	if cfg.WaitAfterJoin > 0 {
		c = append(c, fmt.Sprintf("%s after the last join", cfg.WaitAfterJoin))
	}
	if !cfg.StartAt.IsZero() {
		c = append(c, "at "+cfg.StartAt.Format("15:04 Mon Jan 2"))
	}
	c = append(c, fmt.Sprintf("when you press Enter (or: kill -USR1 %d)", os.Getpid()))
	return strings.Join(c, ", or ")
}

// lineWriter prints event lines, keeping them apart from a live progress
// line on a terminal.
type lineWriter struct {
	mu       sync.Mutex
	w        io.Writer
	progress bool // a progress line is on screen (terminal only)
}

func (l *lineWriter) event(ev server.Event) {
	c := ev.Client
	var line string
	switch ev.Kind {
	case server.EventJoined:
		line = fmt.Sprintf("client %d joined: %s %s %s disk %s (%s)", c.ID, c.MAC, c.Addr, c.Hostname, c.Disk, diskSize(c.DiskSize))
	case server.EventLeft:
		line = fmt.Sprintf("client %d left before the start: %s %s", c.ID, c.MAC, c.Addr)
	case server.EventStarted:
		line = "sending: " + ev.Message
	case server.EventFallback:
		line = "FALLBACK: " + ev.Message
	case server.EventFinished:
		line = fmt.Sprintf("client %d verified: %s %s sha256 %x in %s", c.ID, c.MAC, c.Addr, c.SHA256, c.Elapsed.Round(10*time.Millisecond))
	case server.EventFailed:
		line = fmt.Sprintf("client %d FAILED: %s %s: %s", c.ID, c.MAC, c.Addr, ev.Message)
	case server.EventDropped:
		line = fmt.Sprintf("client %d DROPPED: %s %s: %s", c.ID, c.MAC, c.Addr, ev.Message)
	default:
		line = fmt.Sprintf("%s %s", ev.Kind, ev.Message)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.progress {
		fmt.Fprint(l.w, "\r\033[K")
		l.progress = false
	}
	fmt.Fprintf(l.w, "%s %s\n", ev.Time.Format("15:04:05"), line)
}

func (l *lineWriter) endLine() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.progress {
		fmt.Fprintln(l.w)
		l.progress = false
	}
}

func diskSize(n uint64) string {
	if n == 0 {
		return "a file"
	}
	return imaging.HumanBytes(int64(n))
}

// showProgress prints a live progress line: redrawn each second on a
// terminal, a log line every five seconds otherwise.
func showProgress(ctx context.Context, srv *server.Server, stderr io.Writer, out *lineWriter) {
	tty := false
	if f, ok := stderr.(*os.File); ok {
		tty = cli.IsTerminal(f)
	}
	every := 5 * time.Second
	if tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastBytes uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := srv.Status()
		if st.State != server.StateSending {
			continue
		}
		now := time.Now()
		rate := float64(st.Counters.WireBytes-lastBytes) * 8 / now.Sub(last).Seconds()
		lastBytes, last = st.Counters.WireBytes, now
		line := progressLine(st, rate)
		if tty {
			out.mu.Lock()
			fmt.Fprintf(stderr, "\r\033[K%s", line)
			out.progress = true
			out.mu.Unlock()
		} else {
			fmt.Fprintln(stderr, line)
		}
	}
}

func progressLine(st server.Status, rate float64) string {
	var receiving, done, failed int
	slowest := int64(-1)
	for _, c := range st.Clients {
		switch {
		case c.State == server.ClientDone:
			done++
		case c.State.Final():
			if c.State != server.ClientLeft {
				failed++
			}
		default:
			receiving++
			if b := int64(c.Progress.BytesWritten); slowest < 0 || b < slowest {
				slowest = b
			}
		}
	}
	pct := 100.0
	if slowest >= 0 && st.ImageBytes > 0 {
		pct = 100 * float64(slowest) / float64(st.ImageBytes)
	}
	return fmt.Sprintf("progress %5.1f%% (slowest client)  %s  %s sent  %d repairs  clients: %d active, %d done, %d failed",
		pct, cli.FormatRate(rate), imaging.HumanBytes(int64(st.Counters.PayloadBytes)), st.Counters.RepairPackets, receiving, done, failed)
}

// logLevelFor parses --log-level; by default a terminal gets warnings only
// (the event lines tell the story) and a log file gets everything from info.
func logLevelFor(name string, stderr io.Writer) (slog.Level, error) {
	if name == "" {
		if f, ok := stderr.(*os.File); ok && cli.IsTerminal(f) {
			return slog.LevelWarn, nil
		}
		return slog.LevelInfo, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", name)
	}
	return l, nil
}
