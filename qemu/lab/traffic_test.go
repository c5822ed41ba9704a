package lab

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	group3 = netip.MustParseAddr("239.1.2.3")
	group4 = netip.MustParseAddr("239.1.2.4")
)

const port = 9000

func TestMulticastAndBroadcast(t *testing.T) {
	_, hs := newLab(t, Config{}, "a", "b", "c")
	sender, receivers := hs[0], hs[1:]
	tests := []struct {
		name      string
		dst, bind netip.Addr // where the sender sends, where receivers bind
		port      uint16
	}{
		{"multicast 239.1.2.3", group3, group3, port},
		{"broadcast 255.255.255.255", netip.AddrFrom4([4]byte{255, 255, 255, 255}), netip.IPv4Unspecified(), port + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conns []*net.UDPConn
			for _, h := range receivers {
				conns = append(conns, listenUDP(t, h, netip.AddrPortFrom(tt.bind, tt.port)))
			}
			dst := netip.AddrPortFrom(tt.dst, tt.port)
			out := dialUDP(t, sender, dst)
			tag := []byte(tt.name)
			if err := sendN(t.Context(), out, tag, 3); err != nil {
				t.Fatal(err)
			}
			for i, c := range conns {
				got, from, err := receive(c, tag, 3, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got != 3 {
					t.Errorf("%s received %d of 3 packets to %s", receivers[i].Name, got, dst)
				}
				if got > 0 && from.Addr() != sender.Addr {
					t.Errorf("%s: source %s, want %s", receivers[i].Name, from, sender.Addr)
				}
			}
		})
	}
}

func TestLoss(t *testing.T) {
	_, hs := newLab(t, Config{}, "a", "b")
	recv := listenUDP(t, hs[1], netip.AddrPortFrom(hs[1].Addr, port))
	send := dialUDP(t, hs[0], netip.AddrPortFrom(hs[1].Addr, port))
	const n = 1000
	tests := []struct {
		percent  int
		min, max int // accepted number of received packets
	}{
		{50, 300, 700},
		{0, n, n},
		{100, 0, 0},
		{10, 800, 980},
		{0, n, n},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d%%", tt.percent), func(t *testing.T) {
			if err := hs[1].SetLoss(tt.percent); err != nil {
				t.Fatal(err)
			}
			tag := fmt.Appendf(nil, "round %d:", i)
			done := make(chan int, 1)
			go func() {
				got, _, err := receive(recv, tag, n, 500*time.Millisecond)
				if err != nil {
					t.Error(err)
				}
				done <- got
			}()
			if err := sendN(t.Context(), send, tag, n); err != nil {
				t.Fatal(err)
			}
			got := <-done
			t.Logf("loss %d%%: received %d of %d", tt.percent, got, n)
			if got < tt.min || got > tt.max {
				t.Errorf("received %d of %d with %d%% loss, want %d..%d", got, n, tt.percent, tt.min, tt.max)
			}
		})
	}
}

func TestRate(t *testing.T) {
	_, hs := newLab(t, Config{}, "a", "b")
	a, b := hs[0], hs[1]
	const (
		rate = 20_000_000 // bit/s
		size = 5 << 20    // bytes: 2.1 s at the rate
	)
	// transfer sends size bytes by TCP from a to b and returns the time
	// until b has read them all.
	transfer := func(t *testing.T) time.Duration {
		var ln net.Listener
		if err := b.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.Addr, 0).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		type result struct {
			n   int64
			err error
			at  time.Time
		}
		done := make(chan result, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- result{err: err}
				return
			}
			defer c.Close()
			n, err := io.Copy(io.Discard, c)
			done <- result{n, err, time.Now()}
		}()
		start := time.Now()
		var c net.Conn
		if err := a.Do(func() error {
			var err error
			c, err = net.Dial("tcp4", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		r := <-done
		if r.err != nil || r.n != size {
			t.Fatalf("received %d of %d bytes: %v", r.n, size, r.err)
		}
		return r.at.Sub(start)
	}

	if err := a.SetRate(rate); err != nil {
		t.Fatal(err)
	}
	qdisc, err := a.Run(t.Context(), "tc", "qdisc", "show", "dev", "eth0")
	if err != nil || !strings.Contains(qdisc, "tbf") || !strings.Contains(qdisc, "rate 20Mbit") {
		t.Errorf("qdisc after SetRate: %q, %v", qdisc, err)
	}
	// A second call replaces the first.
	if err := a.SetRate(rate); err != nil {
		t.Fatalf("SetRate again: %v", err)
	}
	d := transfer(t)
	t.Logf("%d bytes at %d bit/s took %v (%.1f Mbit/s)", size, rate, d, float64(size)*8/d.Seconds()/1e6)
	// A lower bound only: a slow machine may take longer.
	if d < 1500*time.Millisecond {
		t.Errorf("transfer took %v, want at least 1.5 s at 20 Mbit/s", d)
	}

	for range 2 { // removing twice is fine
		if err := a.SetRate(0); err != nil {
			t.Fatalf("SetRate(0): %v", err)
		}
	}
	qdisc, err = a.Run(t.Context(), "tc", "qdisc", "show", "dev", "eth0")
	if err != nil || strings.Contains(qdisc, "tbf") {
		t.Errorf("qdisc after SetRate(0): %q, %v", qdisc, err)
	}
	t.Logf("without a rate: %v", transfer(t))
}

func TestBlockUDPDest(t *testing.T) {
	_, hs := newLab(t, Config{}, "a", "b", "c")
	sender, blocked, free := hs[0], hs[1], hs[2]
	// One port per group: Go's ListenUDP on a group address binds the
	// wildcard address, so a socket "on 239.1.2.3:p" also receives what
	// is sent to any other joined group on port p.
	groups := []netip.AddrPort{netip.AddrPortFrom(group3, port), netip.AddrPortFrom(group4, port+1)}
	conns := map[*Host][]*net.UDPConn{}
	for _, h := range []*Host{blocked, free} {
		for _, g := range groups {
			conns[h] = append(conns[h], listenUDP(t, h, g))
		}
	}
	var outs []*net.UDPConn
	for _, g := range groups {
		outs = append(outs, dialUDP(t, sender, g))
	}
	// Steps apply one after the other to host b; host c never blocks.
	tests := []struct {
		name  string
		apply func() error
		want  []bool // whether b receives group3, group4
	}{
		{"none", func() error { return nil }, []bool{true, true}},
		{"block 239.1.2.3", func() error { return blocked.BlockUDPDest(netip.MustParsePrefix("239.1.2.3/32")) }, []bool{false, true}},
		{"loss 0 keeps the block", func() error { return blocked.SetLoss(0) }, []bool{false, true}},
		{"block 239.1.2.4 as well", func() error { return blocked.BlockUDPDest(netip.MustParsePrefix("239.1.2.4/32")) }, []bool{false, false}},
		{"clear", blocked.ClearBlocks, []bool{true, true}},
		{"block 239.1.2.0/30", func() error { return blocked.BlockUDPDest(netip.MustParsePrefix("239.1.2.0/30")) }, []bool{false, true}},
		{"clear again", blocked.ClearBlocks, []bool{true, true}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.apply(); err != nil {
				t.Fatal(err)
			}
			tag := fmt.Appendf(nil, "step %d:", i)
			for _, out := range outs {
				if err := sendN(t.Context(), out, tag, 5); err != nil {
					t.Fatal(err)
				}
			}
			for gi, g := range groups {
				for _, h := range []*Host{blocked, free} {
					want := h == free || tt.want[gi]
					got, _, err := receive(conns[h][gi], tag, 5, 300*time.Millisecond)
					if err != nil {
						t.Fatal(err)
					}
					if (got == 5) != want || (got != 0 && got != 5) {
						t.Errorf("%s got %d of 5 packets to %s, want delivered=%v", h.Name, got, g, want)
						rules, _ := h.Run(t.Context(), "nft", "list", "ruleset")
						t.Logf("ruleset of %s:\n%s", h.Name, rules)
					}
				}
			}
		})
	}
}
