package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/prof"
	"github.com/shoal-lab/shoal/server"
)

// roundOptions say how `shoal serve` runs its sessions.
type roundOptions struct {
	restart   bool   // serve session after session (--restart)
	clientLog string // append one JSON line per client per session
	image     string
	format    string // the image's format, for the header
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	tui       bool          // the live terminal view
	logOut    *switchWriter // where log lines go; the live view takes them
	// httpAddr, if set, is where the status API and metrics are served.
	httpAddr string
	// mount, if set, adds more routes (the PXE boot files) to that server.
	mount func(*http.ServeMux)
}

// operator is what the person at the server can ask for, whichever view
// is on screen.
type operator struct {
	current   atomic.Pointer[server.Server]
	quitAfter atomic.Bool
}

func (o *operator) startNow() {
	if s := o.current.Load(); s != nil {
		s.StartNow()
	}
}

// runRounds runs one session, or with restart one after the other, and
// returns an error when a client failed (exit status 1).
func runRounds(ctx context.Context, cfg server.Config, opts roundOptions) error {
	var clog *clientLog
	if opts.clientLog != "" {
		var err error
		if clog, err = openClientLog(opts.clientLog); err != nil {
			return err
		}
		defer clog.close()
	}
	op := &operator{}
	var onServer func(*server.Server)
	if opts.httpAddr != "" {
		api := server.NewAPI()
		mux := api.Handler()
		if opts.mount != nil {
			opts.mount(mux)
		}
		stop, err := serveHTTP(ctx, opts.httpAddr, mux, cfg.Logger)
		if err != nil {
			return err
		}
		defer stop()
		onServer = api.SetServer
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			op.startNow()
		}
	}()
	var v view
	if opts.tui {
		t, err := newTUI(opts.stdin, opts.stdout, op)
		if err != nil {
			return err
		}
		defer t.restore()
		v = t
		if opts.logOut != nil {
			old := opts.logOut.set(t)
			defer opts.logOut.set(old)
		}
	} else {
		v = newLineView(opts.stdout, opts.stderr)
		// "Send now": a line typed on the terminal.
		go func() {
			sc := bufio.NewScanner(opts.stdin)
			for sc.Scan() {
				op.startNow()
			}
		}()
	}
	m := cfg.Source.Manifest()
	failedRounds := 0
	for round := 1; ; round++ {
		cfg.OnEvent = v.event
		srv, err := server.New(cfg)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		op.current.Store(srv)
		if onServer != nil {
			onServer(srv)
		}
		if !opts.tui {
			fmt.Fprintf(opts.stdout, "session %q round %d: %s (%s, %s, %d chunks, %s to send), SHA-256 %x\n",
				cfg.Session, round, opts.image, opts.format, imaging.HumanBytes(m.ImageSize), len(m.Chunks), imaging.HumanBytes(m.WireBytes()), m.ImageSHA256)
			fmt.Fprintf(opts.stdout, "waiting for clients; starts %s\n", startCriteria(&cfg))
		}
		viewCtx, stopView := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.run(viewCtx, srv)
		}()
		stopProfile := prof.StartFromEnv()
		sum, runErr := srv.Run(ctx)
		stopProfile()
		stopView()
		wg.Wait()
		v.close()
		if sum != nil && (len(sum.Clients) > 0 || runErr == nil) {
			fmt.Fprintln(opts.stdout)
			sum.WriteTable(opts.stdout)
			if clog != nil {
				if err := clog.write(sum, round); err != nil {
					fmt.Fprintln(opts.stderr, "shoal:", err)
				}
			}
		}
		interrupted := errors.Is(runErr, context.Canceled) && ctx.Err() != nil
		switch {
		case interrupted && opts.restart && (sum == nil || len(sum.Clients) == 0):
			// Stopped while waiting for the next round: not a failure.
			return roundsResult(failedRounds, round-1)
		case runErr != nil:
			return runErr
		case !sum.OK():
			failedRounds++
		}
		if !opts.restart || op.quitAfter.Load() || ctx.Err() != nil {
			return roundsResult(failedRounds, round)
		}
		fmt.Fprintf(opts.stdout, "\nserving the next round (--restart); Ctrl-C to stop\n\n")
	}
}

func roundsResult(failed, rounds int) error {
	if failed == 0 {
		return nil
	}
	return &exitError{code: 1, err: fmt.Errorf("%d of %d sessions had failed clients", failed, rounds)}
}

// clientLog appends one JSON line per client per session: Ghost's "log
// clients".
type clientLog struct {
	f *os.File
}

func openClientLog(path string) (*clientLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("client log: %w", err)
	}
	return &clientLog{f: f}, nil
}

// clientRecord is one line of the client log.
type clientRecord struct {
	Time        time.Time `json:"time"`
	Session     string    `json:"session"`
	Round       int       `json:"round"`
	Image       string    `json:"image"`
	ImageSHA256 string    `json:"image_sha256"`
	Client      uint32    `json:"client"`
	MAC         string    `json:"mac"`
	IP          string    `json:"ip"`
	Hostname    string    `json:"hostname,omitempty"`
	Disk        string    `json:"disk"`
	Result      string    `json:"result"`
	Error       string    `json:"error,omitempty"`
	Bytes       uint64    `json:"bytes"`
	SHA256      string    `json:"sha256,omitempty"`
	Seconds     float64   `json:"seconds"`
}

func (l *clientLog) write(sum *server.Summary, round int) error {
	enc := json.NewEncoder(l.f)
	for _, c := range sum.Clients {
		r := clientRecord{
			Time: c.Ended, Session: sum.Session, Round: round, Image: sum.Image, ImageSHA256: fmt.Sprintf("%x", sum.ImageSHA256),
			Client: c.ID, MAC: c.MAC, IP: c.Addr.String(), Hostname: c.Hostname, Disk: c.Disk,
			Result: string(c.State), Error: c.Error, Bytes: c.Bytes, Seconds: c.Elapsed.Seconds(),
		}
		if c.OK {
			r.Result = "ok"
		}
		if c.Bytes > 0 {
			r.SHA256 = fmt.Sprintf("%x", c.SHA256)
		}
		if r.Time.IsZero() {
			r.Time = sum.Finished
		}
		if err := enc.Encode(&r); err != nil {
			return fmt.Errorf("client log: %w", err)
		}
	}
	return l.f.Sync()
}

func (l *clientLog) close() { l.f.Close() }

// serveHTTP serves handler on addr until the returned stop is called.
func serveHTTP(ctx context.Context, addr string, handler http.Handler, log *slog.Logger) (stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("http server", "err", err)
		}
	}()
	if log != nil {
		log.Info("status API and metrics", "addr", ln.Addr().String())
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		<-done
	}, nil
}
