package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
	"github.com/shoal-lab/shoal/server"
)

// tui is the live terminal view of `shoal serve`: the session's state and
// start countdown, one row per client with a progress bar, totals and ETA,
// recent events, and keys for "send now", "drop a client" and "quit after
// this session". It redraws the screen four times a second.
type tui struct {
	out io.Writer
	op  *operator

	mu      sync.Mutex
	events  []string
	prompt  string // what the operator is typing, e.g. "drop client: 3"
	note    string // the answer to the last key
	dropID  []byte // digits typed after "d"
	saved   *unix.Termios
	fd      int
	meters  map[uint32]*rateMeter
	total   rateMeter
	started time.Time
}

const maxEvents = 8

// newTUI puts the terminal on stdin into key-at-a-time mode and starts
// reading keys.
func newTUI(stdin io.Reader, stdout io.Writer, op *operator) (*tui, error) {
	t := &tui{out: stdout, op: op, meters: map[uint32]*rateMeter{}, fd: -1}
	if f, ok := stdin.(*os.File); ok && cli.IsTerminal(f) {
		fd := int(f.Fd())
		old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return nil, fmt.Errorf("terminal: %w", err)
		}
		raw := *old
		raw.Lflag &^= unix.ICANON | unix.ECHO
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
			return nil, fmt.Errorf("terminal: %w", err)
		}
		t.saved, t.fd = old, fd
	}
	go t.readKeys(stdin)
	fmt.Fprint(stdout, "\033[?25l\033[H\033[2J") // hide the cursor, clear
	return t, nil
}

// restore gives the terminal back as it was.
func (t *tui) restore() {
	if t.saved != nil {
		unix.IoctlSetTermios(t.fd, unix.TCSETS, t.saved)
		t.saved = nil
	}
	fmt.Fprint(t.out, "\033[?25h")
}

func (t *tui) readKeys(r io.Reader) {
	var b [1]byte
	for {
		if _, err := r.Read(b[:]); err != nil {
			return
		}
		t.key(b[0])
	}
}

// key handles one key press.
func (t *tui) key(k byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.prompt != "" {
		switch {
		case k >= '0' && k <= '9':
			t.dropID = append(t.dropID, k)
			t.prompt = "drop client: " + string(t.dropID)
		case k == '\n' || k == '\r':
			id, err := strconv.ParseUint(string(t.dropID), 10, 32)
			t.prompt, t.dropID = "", nil
			if err != nil {
				t.note = "drop: type the client's number, then Enter"
				return
			}
			if srv := t.op.current.Load(); srv != nil {
				if err := srv.DropClient(uint32(id)); err != nil {
					t.note = "drop: " + err.Error()
				} else {
					t.note = fmt.Sprintf("client %d dropped", id)
				}
			}
		case k == 27 || k == 'q': // Esc
			t.prompt, t.dropID, t.note = "", nil, "drop cancelled"
		}
		return
	}
	switch k {
	case 's', 'S', '\n', '\r', ' ':
		t.op.startNow()
		t.note = "send now: starting as soon as a client has joined"
	case 'd', 'D':
		t.prompt = "drop client: "
	case 'q', 'Q':
		t.op.quitAfter.Store(true)
		t.note = "will quit after this session"
	}
}

func (t *tui) event(ev server.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, ev.Time.Format("15:04:05")+" "+eventLine(ev))
	if len(t.events) > maxEvents {
		t.events = t.events[len(t.events)-maxEvents:]
	}
}

func (t *tui) run(ctx context.Context, srv *server.Server) {
	t.mu.Lock()
	t.started = time.Now()
	t.meters = map[uint32]*rateMeter{}
	t.total = rateMeter{}
	t.mu.Unlock()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		t.draw(srv)
		select {
		case <-ctx.Done():
			t.draw(srv)
			return
		case <-tick.C:
		}
	}
}

func (t *tui) close() {
	fmt.Fprint(t.out, "\033[J")
}

// draw redraws the whole view.
func (t *tui) draw(srv *server.Server) {
	st := srv.Status()
	t.mu.Lock()
	defer t.mu.Unlock()
	var b bytes.Buffer
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\033[K\r\n")
	}
	b.WriteString("\033[H")
	line("shoal  session %q  image %s  state %s", st.Session, imaging.HumanBytes(st.ImageBytes), strings.ToUpper(string(st.State)))
	switch st.State {
	case server.StateWaiting:
		crit := srv.StartStatus()
		crit = append(crit, "or press s")
		line("waiting for clients: %s", strings.Join(crit, "; "))
	default:
		rate := t.total.rate(st.Counters.WireBytes)
		line("%s to %s  rate %s  sent %s  repairs %d  elapsed %s  %s", st.Mode, st.Group, cli.FormatRate(rate),
			imaging.HumanBytes(int64(st.Counters.PayloadBytes)), st.Counters.RepairPackets,
			time.Since(st.Started).Round(time.Second), eta(st))
	}
	line("")
	line("%3s  %-17s  %-15s  %-10s  %-10s  %-30s  %11s  %6s  %s", "ID", "MAC", "IP", "HOST", "STATE", "PROGRESS", "RATE", "NACKS", "LAST HEARD")
	for _, c := range st.Clients {
		m := t.meters[c.ID]
		if m == nil {
			m = &rateMeter{}
			t.meters[c.ID] = m
		}
		rate := m.rate(c.Progress.BytesWritten)
		frac := 0.0
		if st.ImageBytes > 0 {
			frac = float64(c.Progress.BytesWritten) / float64(st.ImageBytes)
		}
		if c.OK {
			frac = 1
		}
		state := string(c.State)
		if c.OK {
			state = "done ok"
		}
		line("%3d  %-17s  %-15s  %-10.10s  %-10s  %s %5.1f%%  %11s  %6d  %s", c.ID, c.MAC, c.Addr, c.Hostname, state,
			progressBar(frac, 20), 100*frac, cli.FormatRate(rate), c.NackRanges, ago(c.LastHeard))
	}
	if len(st.Clients) == 0 {
		line("     (no clients yet)")
	}
	line("")
	for _, e := range t.events {
		line(" %s", e)
	}
	line("")
	switch {
	case t.prompt != "":
		line("%s", t.prompt)
	case t.note != "":
		line("keys: s send now · d drop a client · q quit after this session   [%s]", t.note)
	default:
		line("keys: s send now · d drop a client · q quit after this session")
	}
	b.WriteString("\033[J")
	t.out.Write(b.Bytes())
}

// progressBar draws a progress bar of width cells.
func progressBar(frac float64, width int) string {
	frac = min(max(frac, 0), 1)
	n := int(frac * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

// eta estimates the time left from the slowest active client's progress.
func eta(st server.Status) string {
	if st.Started.IsZero() {
		return ""
	}
	elapsed := time.Since(st.Started)
	slowest := -1.0
	for _, c := range st.Clients {
		if c.State.Final() || st.ImageBytes == 0 {
			continue
		}
		f := float64(c.Progress.BytesWritten) / float64(st.ImageBytes)
		if slowest < 0 || f < slowest {
			slowest = f
		}
	}
	if slowest <= 0.01 {
		return "ETA -"
	}
	left := time.Duration(float64(elapsed) * (1 - slowest) / slowest)
	return "ETA " + left.Round(time.Second).String()
}

// Write takes log lines: the view shows them with the events.
func (t *tui) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		t.events = append(t.events, time.Now().Format("15:04:05")+" log: "+l)
	}
	if len(t.events) > maxEvents {
		t.events = t.events[len(t.events)-maxEvents:]
	}
	return len(p), nil
}
