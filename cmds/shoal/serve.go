package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
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
		dhcpRange  = fs.String("dhcp", "", "also serve DHCP on the interface, leasing addresses FIRST-LAST, e.g. 10.77.0.100-10.77.0.200 (for a lab without a DHCP server)")
		chunkSize  = fs.Int("chunk-size", imaging.DefaultChunkSize, "chunk size for raw images, in bytes")
		keyFile    = fs.String("key-file", "", "authenticate every packet with this key (shoal key new FILE makes one); clients need the same key")
		encrypt    = fs.Bool("encrypt", false, "with --key-file: also encrypt the image on the wire")
		logLevel   = fs.String("log-level", "", "log level: debug, info, warn or error (default: warn on a terminal, info otherwise)")
		logFormat  = fs.String("log-format", "text", "log format: text or json")
		restart    = fs.Bool("restart", false, "serve the same image session after session, with the same start criteria, until stopped")
		once       = fs.Bool("once", true, "serve one session and exit (the default; --restart overrides it)")
		logClients = fs.String("log-clients", "", "append one JSON line per client per session to this file")
		plain      = fs.Bool("plain", false, "plain log lines even on a terminal (no live view)")
		httpAddr   = fs.String("http", "", "serve the status API (/api/status, POST /api/start) and Prometheus /metrics on this address, e.g. :8080")
	)
	pxe := addPXEFlags(fs)
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
	// The live view takes the log lines over while it is on screen.
	logOut := &switchWriter{w: stderr}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level})
	default:
		return fmt.Errorf("%w: --log-format %q: want text or json", errUsage, *logFormat)
	}
	log := slog.New(handler)

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
	cfg.Source = src
	if _, err := server.New(cfg); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *dhcpRange != "" && !*pxe.on { // with --pxe, the PXE services run the DHCP server
		dhcp, err := server.NewDHCPServer(server.DHCPConfig{Interface: *iface, Range: *dhcpRange, Logger: log})
		if err != nil {
			return err
		}
		defer dhcp.Close()
		go dhcp.Serve(ctx)
	}
	mountPXE, stopPXE, err := pxe.start(ctx, fs, pxeSetup{iface: *iface, dhcpRange: *dhcpRange, session: *session, httpAddr: httpAddr, log: log})
	if err != nil {
		return err
	}
	defer stopPXE()

	if *restart && *once && flagGiven(fs, "once") {
		return fmt.Errorf("%w: --once and --restart exclude each other", errUsage)
	}
	tui := false
	if f, ok := stdout.(*os.File); ok && !*plain {
		tui = cli.IsTerminal(f)
	}
	return runRounds(ctx, cfg, roundOptions{
		restart: *restart, clientLog: *logClients, image: *image, format: src.Format(),
		stdin: stdin, stdout: stdout, stderr: stderr, tui: tui, logOut: logOut, httpAddr: *httpAddr, mount: mountPXE,
	})
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
