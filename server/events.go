package server

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/cli"
)

// EventKind names what happened.
type EventKind string

// Event kinds.
const (
	EventJoined   EventKind = "joined"
	EventLeft     EventKind = "left"
	EventStarted  EventKind = "started"
	EventFinished EventKind = "finished"
	EventFailed   EventKind = "failed"
	EventDropped  EventKind = "dropped"
	EventFallback EventKind = "fallback"
)

// Event is one thing that happened in the session, for displays.
type Event struct {
	Time    time.Time
	Kind    EventKind
	Client  ClientInfo // zero for session events
	Message string
}

// Summary is the session's final report.
type Summary struct {
	Session     string
	Image       string
	ImageBytes  int64
	ImageSHA256 [32]byte
	Started     time.Time
	Finished    time.Time
	Counters    Counters
	Clients     []ClientInfo
}

// OK reports whether at least one client took part and every one of them
// verified its disk.
func (s *Summary) OK() bool {
	if len(s.Clients) == 0 {
		return false
	}
	for _, c := range s.Clients {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed counts clients without a good result.
func (s *Summary) Failed() int {
	n := 0
	for _, c := range s.Clients {
		if !c.OK {
			n++
		}
	}
	return n
}

// WriteTable prints the per-client table and the totals.
func (s *Summary) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "CLIENT\tMAC\tIP\tRESULT\tBYTES\tSHA-256 (read back)\tTIME\n")
	for _, c := range s.Clients {
		result := "ok"
		if c.OK && !c.Verified {
			result = "ok-unverified"
		}
		if !c.OK {
			result = string(c.State)
			if c.State == ClientDone {
				result = "failed"
			}
		}
		sum := "-"
		if c.Bytes > 0 && c.Verified {
			sum = fmt.Sprintf("%x", c.SHA256)
		}
		elapsed := "-"
		if c.Elapsed > 0 {
			elapsed = c.Elapsed.Round(10 * time.Millisecond).String()
		} else if !c.Ended.IsZero() && !s.Started.IsZero() {
			elapsed = c.Ended.Sub(s.Started).Round(10 * time.Millisecond).String()
		}
		name := fmt.Sprintf("%d", c.ID)
		if c.Hostname != "" {
			name += " " + c.Hostname
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, c.MAC, c.Addr, result, c.Bytes, sum, elapsed)
	}
	tw.Flush()
	for _, c := range s.Clients {
		if c.Error != "" {
			fmt.Fprintf(w, "client %d (%s %s): %s\n", c.ID, c.MAC, c.Addr, c.Error)
		}
	}
	dur := time.Duration(0)
	if !s.Started.IsZero() && !s.Finished.IsZero() {
		dur = s.Finished.Sub(s.Started)
	}
	fmt.Fprintf(w, "image %s: %s, SHA-256 %x\n", s.Image, imaging.HumanBytes(s.ImageBytes), s.ImageSHA256)
	k := s.Counters
	fmt.Fprintf(w, "sent %s of chunk data in %d packets (%d repairs, %d of them parity) in %s; %d of %d clients verified\n",
		imaging.HumanBytes(int64(k.PayloadBytes)), k.DataPackets+k.RepairPackets, k.RepairPackets, k.ParityPackets,
		dur.Round(10*time.Millisecond), len(s.Clients)-s.Failed(), len(s.Clients))
	if dur > 0 && k.WireBytes > 0 {
		settled := "no limit found"
		if k.Rate > 0 && k.Rate < uncappedRate {
			settled = cli.FormatRate(float64(k.Rate))
		}
		fmt.Fprintf(w, "send rate: %s on average; the rate control settled at %s; the interface queue was full %d times\n",
			cli.FormatRate(float64(k.WireBytes)*8/dur.Seconds()), settled, k.SendStalls)
	}
	if !s.OK() {
		if len(s.Clients) == 0 {
			fmt.Fprintln(w, "RESULT: no client took part")
		} else {
			fmt.Fprintf(w, "RESULT: %d client(s) FAILED: %s\n", s.Failed(), strings.Join(s.failedNames(), ", "))
		}
	} else {
		fmt.Fprintln(w, "RESULT: all clients verified")
	}
}

func (s *Summary) failedNames() []string {
	var out []string
	for _, c := range s.Clients {
		if !c.OK {
			out = append(out, fmt.Sprintf("%d (%s)", c.ID, c.Addr))
		}
	}
	return out
}
