package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/shoal-lab/shoal/qemu/impair"
	"github.com/shoal-lab/shoal/qemu/lab"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		args       string
		atob, btoa impair.Rules
		seed       uint64
		wantErr    bool
	}{
		{name: "plain", args: "-a x -b y", seed: 0},
		{name: "loss both ways", args: "-a x -b y -loss 5 -seed 42", seed: 42,
			atob: impair.Rules{Loss: 0.05}, btoa: impair.Rules{Loss: 0.05}},
		{name: "bursty one way", args: "-a x -b y -loss 20 -burst 5 -dup 5 -reorder 10 -reorder-depth 3 -udp-only -dir btoa",
			btoa: func() impair.Rules {
				r := impair.BurstyLoss(0.2, 5)
				r.Duplicate, r.Reorder, r.ReorderDepth, r.UDPOnly = 0.05, 0.1, 3, true
				return r
			}()},
		{name: "gilbert-elliott", args: "-a x -b y -ge 5,20,80,1 -delay 10ms -jitter 2ms -dir atob",
			atob: impair.Rules{BurstEnter: 0.05, BurstLeave: 0.2, BurstLoss: 0.8, Loss: 0.01, Delay: 10 * time.Millisecond, Jitter: 2 * time.Millisecond}},
		{name: "no interfaces", args: "-loss 5", wantErr: true},
		{name: "loss above 100", args: "-a x -b y -loss 150", wantErr: true},
		{name: "bad ge", args: "-a x -b y -ge 5,20", wantErr: true},
		{name: "bad dir", args: "-a x -b y -dir up", wantErr: true},
		{name: "extra argument", args: "-a x -b y z", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(strings.Fields(tt.args), io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse(%q) error %v, want error %v", tt.args, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if o.cfg.A != "x" || o.cfg.B != "y" || o.cfg.Seed != tt.seed {
				t.Errorf("a %q b %q seed %d", o.cfg.A, o.cfg.B, o.cfg.Seed)
			}
			if !sameRules(o.cfg.AtoB, tt.atob) || !sameRules(o.cfg.BtoA, tt.btoa) {
				t.Errorf("rules a→b %+v, b→a %+v; want %+v, %+v", o.cfg.AtoB, o.cfg.BtoA, tt.atob, tt.btoa)
			}
		})
	}
}

// sameRules compares rules, allowing for rounding in percent conversions.
func sameRules(a, b impair.Rules) bool {
	near := func(x, y float64) bool { return x-y < 1e-12 && y-x < 1e-12 }
	return near(a.Loss, b.Loss) && near(a.BurstEnter, b.BurstEnter) && near(a.BurstLeave, b.BurstLeave) &&
		near(a.BurstLoss, b.BurstLoss) && near(a.Duplicate, b.Duplicate) && near(a.Reorder, b.Reorder) &&
		a.ReorderDepth == b.ReorderDepth && a.ReorderWait == b.ReorderWait && a.Delay == b.Delay &&
		a.Jitter == b.Jitter && a.UDPOnly == b.UDPOnly
}

// TestRunInLab runs the command in a lab's switch namespace between a
// host's detoured port and the bridge, as it would run for a VM's tap.
func TestRunInLab(t *testing.T) {
	if err := lab.Available(); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("the virtual lab is required (SHOAL_REQUIRE_LAB=1) but unavailable: %v", err)
		}
		t.Skipf("virtual lab unavailable (run as root, or set SHOAL_REQUIRE_LAB=1 to make this fail): %v", err)
	}
	l, err := lab.New(t.Context(), lab.Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := l.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Detour(b)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	ctx, cancel := context.WithCancel(t.Context())
	var (
		stdout, stderr syncBuffer
		wg             sync.WaitGroup
		runErr         error
	)
	wg.Go(func() {
		runErr = l.SwitchDo(func() error {
			return run(ctx, []string{"-a", d.HostSide, "-b", d.BridgeSide, "-delay", "30ms", "-dir", "btoa", "-seed", "7"}, &stdout, &stderr)
		})
	})
	var rtt time.Duration
	for i := range 20 {
		if rtt, err = ping(a, b.Addr); err == nil {
			break
		}
		if i == 19 {
			t.Fatalf("no ping through the command: %v\n%s", err, stderr.String())
		}
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("run: %v\n%s", runErr, stderr.String())
	}
	t.Logf("RTT %s; output:\n%s%s", rtt, stdout.String(), stderr.String())
	if rtt < 30*time.Millisecond {
		t.Errorf("RTT %s through a 30 ms delay", rtt)
	}
	if !strings.Contains(stdout.String(), d.BridgeSide+"→"+d.HostSide+": received") || !strings.Contains(stderr.String(), "seed=7") {
		t.Errorf("counters or seed missing from the output")
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ping sends one ICMP echo from a host and returns the round-trip time.
func ping(from *lab.Host, to netip.Addr) (time.Duration, error) {
	var c *icmp.PacketConn
	if err := from.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	b, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("impair")}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	if err := c.SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		if m, err := icmp.ParseMessage(1, buf[:n]); err == nil && m.Type == ipv4.ICMPTypeEchoReply {
			return time.Since(start), nil
		}
	}
}
