// Command shoal-client joins a named shoal session and writes the image it
// receives to a disk (a block device or a file), verifies it by reading it
// back, and reports to the server.
//
//	shoal-client --session NAME --disk PATH [--server IP] [--interface IF]
//
// Exit status 0 only if the disk was verified.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/client"
	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/internal/prof"
	"github.com/shoal-lab/shoal/protocol"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-uinit" { // the boot image's uinit: see uinit.go
		os.Exit(uinitMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-client:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		session = fs.String("session", "", "session name to join (required)")
		disk    = fs.String("disk", "", "disk to write: a block device such as /dev/sda, a file, or auto (the first non-removable disk large enough) (required)")
		zero    = fs.String("zero", "write", "zero chunks: write (zero them on the disk) or skip (the disk is known to be blank)")
		verify  = fs.String("verify", "chunks", "read the disk back: chunks (each chunk right after it is written, during the transfer), full (the whole disk in one pass at the end) or off")
		grow    = fs.Bool("grow", false, "extend the last partition of a GPT image to the end of a larger disk (the file system is not grown)")
		srvAddr = fs.String("server", "", "server address to ask directly (default: ask by broadcast and multicast)")
		iface   = fs.String("interface", "", "network interface (default: the default route's)")
		buffer  = fs.Int("buffer", client.DefaultBufferChunks, "chunks to buffer ahead of the disk")
		keyFile = fs.String("key-file", "", "the session's key file (the server's --key-file)")
		verbose = fs.Bool("v", false, "log debug detail")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *session == "" || *disk == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: --session and --disk are required", errUsage)
	}
	cfg := client.Config{Session: *session, Disk: *disk, Interface: *iface, BufferChunks: *buffer, Grow: *grow}
	switch *verify {
	case "chunks", "true", "1":
	case "full":
		cfg.VerifyFull = true
	case "off", "false", "0":
		cfg.NoVerify = true
	default:
		return fmt.Errorf("%w: --verify %q: want chunks, full or off", errUsage, *verify)
	}
	switch *zero {
	case "write":
	case "skip":
		cfg.SkipZeros = true
	default:
		return fmt.Errorf("%w: --zero %q: want write or skip", errUsage, *zero)
	}
	// Fault injection for tests: corrupt this chunk on the disk before
	// the read-back, to prove a bad disk is reported.
	if v := os.Getenv("SHOAL_FAULT_CORRUPT_CHUNK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: SHOAL_FAULT_CORRUPT_CHUNK=%q: want a chunk number", errUsage, v)
		}
		cfg.CorruptChunk = n + 1
	}
	if *srvAddr != "" {
		a, err := netip.ParseAddr(*srvAddr)
		if err != nil || !a.Is4() {
			return fmt.Errorf("%w: --server %q: want an IPv4 address", errUsage, *srvAddr)
		}
		cfg.Server = a
	}
	if *keyFile != "" {
		k, err := protocol.LoadKeyFile(*keyFile)
		if err != nil {
			return fmt.Errorf("%w: --key-file: %v", errUsage, err)
		}
		cfg.Key = &k
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	disp := newDisplay(stderr)
	cfg.Status = disp.show

	stopProfile := prof.StartFromEnv()
	res, err := client.Run(ctx, cfg)
	stopProfile()
	disp.end()
	if err != nil {
		fmt.Fprintf(stdout, "RESULT: FAILED: %v\n", err)
		return err
	}
	if res.Verified {
		fmt.Fprintf(stdout, "RESULT: OK %s verified: %d bytes, SHA-256 %x, %s (%d packets lost and repaired, %d rebuilt from %d parity shards)\n",
			*disk, res.Bytes, res.SHA256, res.Elapsed.Round(10*time.Millisecond), res.Stats.Lost, res.Stats.Rebuilt, res.Stats.Parity)
	} else {
		fmt.Fprintf(stdout, "RESULT: OK %s written, NOT read back (--verify=off): %d bytes, %s\n",
			*disk, res.Bytes, res.Elapsed.Round(10*time.Millisecond))
	}
	if st := res.Stats; st.Forged+st.Replayed+st.BadPackets+st.Foreign > 0 {
		fmt.Fprintf(stdout, "dropped packets: %d forged, %d replayed, %d malformed, %d of other sessions\n",
			st.Forged, st.Replayed, st.BadPackets, st.Foreign)
	}
	return nil
}

// display shows the client's progress: one redrawn line on a terminal, a
// line every few seconds otherwise (a serial console log stays readable).
type display struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	last  time.Time
	drawn bool
	prev  client.Status
}

func newDisplay(w io.Writer) *display {
	d := &display{w: w}
	if f, ok := w.(*os.File); ok {
		d.tty = cli.IsTerminal(f)
	}
	return d
}

func (d *display) show(st client.Status) {
	d.mu.Lock()
	defer d.mu.Unlock()
	every := 3 * time.Second
	if d.tty {
		every = 0
	}
	changed := st.Phase != d.prev.Phase || st.Message != d.prev.Message
	if !changed && time.Since(d.last) < every {
		return
	}
	d.last = time.Now()
	d.prev = st
	line := statusLine(st)
	if d.tty {
		fmt.Fprintf(d.w, "\r\033[K%s", line)
		d.drawn = true
	} else {
		fmt.Fprintln(d.w, line)
	}
}

func (d *display) end() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drawn {
		fmt.Fprintln(d.w)
	}
}

func statusLine(st client.Status) string { return st.Line() }
