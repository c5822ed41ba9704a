package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/server"
)

// view is how a session is shown while it runs: plain lines (a log, a pipe)
// or the live terminal view.
type view interface {
	// event shows one session event.
	event(ev server.Event)
	// run shows the session's progress until ctx ends.
	run(ctx context.Context, srv *server.Server)
	// close leaves the screen ready for the summary.
	close()
}

// eventLine is the one-line text of an event.
func eventLine(ev server.Event) string {
	c := ev.Client
	switch ev.Kind {
	case server.EventJoined:
		return fmt.Sprintf("client %d joined: %s %s %s disk %s (%s)", c.ID, c.MAC, c.Addr, c.Hostname, c.Disk, diskSize(c.DiskSize))
	case server.EventLeft:
		return fmt.Sprintf("client %d left before the start: %s %s", c.ID, c.MAC, c.Addr)
	case server.EventStarted:
		return "sending: " + ev.Message
	case server.EventFallback:
		return "FALLBACK: " + ev.Message
	case server.EventFinished:
		return fmt.Sprintf("client %d verified: %s %s sha256 %x in %s", c.ID, c.MAC, c.Addr, c.SHA256, c.Elapsed.Round(10*time.Millisecond))
	case server.EventFailed:
		return fmt.Sprintf("client %d FAILED: %s %s: %s", c.ID, c.MAC, c.Addr, ev.Message)
	case server.EventDropped:
		return fmt.Sprintf("client %d DROPPED: %s %s: %s", c.ID, c.MAC, c.Addr, ev.Message)
	}
	return fmt.Sprintf("%s %s", ev.Kind, ev.Message)
}

func diskSize(n uint64) string {
	if n == 0 {
		return "a file"
	}
	return imaging.HumanBytes(int64(n))
}

// startCriteria says, for people, what starts the session.
func startCriteria(cfg *server.Config) string {
	var c []string
	if cfg.MinClients > 0 {
		c = append(c, fmt.Sprintf("when %d clients have joined", cfg.MinClients))
	}
	if cfg.WaitAfterJoin > 0 {
		c = append(c, fmt.Sprintf("%s after the last join", cfg.WaitAfterJoin))
	}
	if !cfg.StartAt.IsZero() {
		c = append(c, "at "+cfg.StartAt.Format("15:04:05 Mon Jan 2"))
	}
	c = append(c, fmt.Sprintf("when you press Enter (or: kill -USR1 %d)", os.Getpid()))
	return strings.Join(c, ", or ")
}

// lineView prints event lines on stdout and a progress line on stderr:
// redrawn in place each second on a terminal, a new line every five
// seconds otherwise.
type lineView struct {
	mu       sync.Mutex
	out      io.Writer
	errw     io.Writer
	tty      bool
	progress bool // a progress line is on screen
}

func newLineView(stdout, stderr io.Writer) *lineView {
	v := &lineView{out: stdout, errw: stderr}
	if f, ok := stderr.(*os.File); ok {
		v.tty = cli.IsTerminal(f)
	}
	return v
}

func (v *lineView) event(ev server.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearProgress()
	fmt.Fprintf(v.out, "%s %s\n", ev.Time.Format("15:04:05"), eventLine(ev))
}

func (v *lineView) clearProgress() {
	if v.progress {
		fmt.Fprint(v.errw, "\r\033[K")
		v.progress = false
	}
}

func (v *lineView) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clearProgress()
}

func (v *lineView) run(ctx context.Context, srv *server.Server) {
	every := 5 * time.Second
	if v.tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var meter rateMeter
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
		line := progressLine(st, meter.rate(st.Counters.WireBytes))
		v.mu.Lock()
		if v.tty {
			fmt.Fprintf(v.errw, "\r\033[K%s", line)
			v.progress = true
		} else {
			fmt.Fprintln(v.errw, line)
		}
		v.mu.Unlock()
	}
}

// rateMeter turns a byte counter into bits per second between calls.
type rateMeter struct {
	last  uint64
	since time.Time
}

func (m *rateMeter) rate(total uint64) float64 {
	now := time.Now()
	r := 0.0
	if !m.since.IsZero() {
		if d := now.Sub(m.since).Seconds(); d > 0 && total >= m.last {
			r = float64(total-m.last) * 8 / d
		}
	}
	m.last, m.since = total, now
	return r
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

// switchWriter is an io.Writer whose destination can change: log lines go
// to stderr, or into the live view while it is on screen.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// set changes the destination and returns the old one.
func (s *switchWriter) set(w io.Writer) io.Writer {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.w
	s.w = w
	return old
}

// flagGiven reports whether the flag was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
