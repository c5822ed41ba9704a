//go:build linux

package impair

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

const udpPort = 9100

func TestSwitchStartClose(t *testing.T) {
	l, hs := newLab(t, "a")
	d, err := l.Detour(hs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	open := func(t *testing.T) *Switch {
		var s *Switch
		if err := l.SwitchDo(func() error {
			var err error
			s, err = New(Config{A: d.HostSide, B: d.BridgeSide, Seed: 1, Logger: testLogger(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s *Switch)
	}{
		{"close without run", func(t *testing.T, s *Switch) {}},
		{"close while running", func(t *testing.T, s *Switch) {
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background()) }()
			time.Sleep(50 * time.Millisecond)
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run after Close = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after Close")
			}
		}},
		{"cancel", func(t *testing.T, s *Switch) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := s.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run = %v, want context.DeadlineExceeded", err)
			}
			if err := s.Run(ctx); err == nil {
				t.Error("second Run returned nil")
			}
		}},
		{"run after close", func(t *testing.T, s *Switch) {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("Run after Close = %v, want ErrClosed", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			tt.fn(t, s)
			for range 2 {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
	if err := l.SwitchDo(func() error {
		_, err := New(Config{A: d.HostSide, B: "nosuchif0"})
		return err
	}); err == nil {
		t.Error("New on a missing interface succeeded")
	}
	if _, err := New(Config{A: "x", B: "y", AtoB: Rules{Loss: 2}}); err == nil {
		t.Error("New with a loss of 200 % succeeded")
	}
}

// TestClean: with no rules the link carries ICMP, unicast and multicast UDP
// and TCP unharmed, and Close puts the host back on the bridge.
func TestClean(t *testing.T) {
	l, hs := newLab(t, "a", "b", "c")
	a, b, c := hs[0], hs[1], hs[2]
	k := insertLink(t, l, b, LinkConfig{Seed: 1})
	if _, err := pingRetry(a, b.Addr, 3); err != nil {
		t.Fatalf("ping through the switch: %v", err)
	}
	if _, err := pingRetry(b, a.Addr, 3); err != nil {
		t.Fatalf("ping from behind the switch: %v", err)
	}
	group := netip.MustParseAddr("239.7.7.7")
	recvB := listenUDP(t, b, netip.AddrPortFrom(group, udpPort))
	recvC := listenUDP(t, c, netip.AddrPortFrom(group, udpPort))
	got := exchange(t, dialUDP(t, a, netip.AddrPortFrom(group, udpPort)), "multicast", 1000, recvB, recvC)
	for i, name := range []string{"b", "c"} {
		if len(got[i]) != 1000 || !slices.IsSorted(got[i]) {
			t.Errorf("%s got %d of 1000 multicast datagrams (sorted %v)", name, len(got[i]), slices.IsSorted(got[i]))
		}
	}
	uni := listenUDP(t, a, netip.AddrPortFrom(a.Addr, udpPort+1))
	if got := exchange(t, dialUDP(t, b, netip.AddrPortFrom(a.Addr, udpPort+1)), "unicast", 1000, uni); len(got[0]) != 1000 {
		t.Errorf("a got %d of 1000 unicast datagrams from behind the switch", len(got[0]))
	}
	if err := tcpTransfer(t, a, b, 4<<20, 30*time.Second); err != nil {
		t.Errorf("TCP: %v", err)
	}
	toHost, fromHost := k.Stats()
	t.Logf("to b: %s", toHost)
	t.Logf("from b: %s", fromHost)
	for _, c := range []Counters{toHost, fromHost} {
		if c.Dropped+c.Duplicated+c.Reordered+c.Delayed+c.Overruns+c.SendErrors != 0 || c.Forwarded != c.Received {
			t.Errorf("clean link changed frames: %s", c)
		}
	}
	if toHost.Received < 1000 {
		t.Errorf("only %d frames reached b through the switch", toHost.Received)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pingRetry(a, b.Addr, 3); err != nil {
		t.Fatalf("ping after the switch was removed: %v", err)
	}
}

// TestUDPLoss: random loss limited to UDP drops about the configured share
// of a UDP stream, in the direction configured only, and spares ICMP.
func TestUDPLoss(t *testing.T) {
	l, hs := newLab(t, "a", "b")
	a, b := hs[0], hs[1]
	const n, loss = 4000, 0.2
	k := insertLink(t, l, b, LinkConfig{ToHost: Rules{Loss: loss, UDPOnly: true}, Seed: 42})
	for range 20 {
		if _, err := ping(a, b.Addr, time.Second); err != nil {
			t.Fatalf("ICMP lost although the rules are UDP only: %v", err)
		}
	}
	recv := listenUDP(t, b, netip.AddrPortFrom(b.Addr, udpPort))
	got := exchange(t, dialUDP(t, a, netip.AddrPortFrom(b.Addr, udpPort)), "lossy", n, recv)[0]
	share := 1 - float64(len(got))/n
	toHost, fromHost := k.Stats()
	t.Logf("lost %d of %d (%.3f); to b: %s; from b: %s", n-len(got), n, share, toHost, fromHost)
	// 5 standard deviations of a binomial share.
	if tol := 5 * math.Sqrt(loss*(1-loss)/n); math.Abs(share-loss) > tol {
		t.Errorf("lost %.3f of the datagrams, want %.2f ± %.3f", share, loss, tol)
	}
	if toHost.Dropped != uint64(n-len(got)) {
		t.Errorf("Dropped = %d, but %d datagrams were lost", toHost.Dropped, n-len(got))
	}
	if toHost.Overruns+toHost.SendErrors != 0 {
		t.Errorf("loss the rules did not choose: %s", toHost)
	}
	// The other direction is clean.
	back := listenUDP(t, a, netip.AddrPortFrom(a.Addr, udpPort))
	if got := exchange(t, dialUDP(t, b, netip.AddrPortFrom(a.Addr, udpPort)), "back", 1000, back)[0]; len(got) != 1000 {
		t.Errorf("a got %d of 1000 datagrams on the unimpaired direction", len(got))
	}
}

// TestReplay: the same seed and the same frames give the same losses, even
// on a new switch; another seed gives other losses.
func TestReplay(t *testing.T) {
	l, hs := newLab(t, "a", "b")
	a, b := hs[0], hs[1]
	recv := listenUDP(t, b, netip.AddrPortFrom(b.Addr, udpPort))
	send := dialUDP(t, a, netip.AddrPortFrom(b.Addr, udpPort))
	// Prime ARP on both sides before any rule applies.
	if _, err := pingRetry(a, b.Addr, 3); err != nil {
		t.Fatal(err)
	}
	rules := Rules{Loss: 0.05, BurstEnter: 0.05, BurstLeave: 0.25, BurstLoss: 0.9, Duplicate: 0.05, UDPOnly: true}
	round := func(seed uint64) []int {
		k, err := Insert(l, b, LinkConfig{ToHost: rules, Seed: seed, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		got := exchange(t, send, fmt.Sprintf("seed %d", seed), 2000, recv)[0]
		toHost, _ := k.Stats()
		t.Logf("seed %d: received %d of 2000; %s", seed, len(got), toHost)
		return got
	}
	first, again, other := round(7), round(7), round(8)
	if !slices.Equal(first, again) {
		t.Errorf("seed 7 twice: different datagrams arrived (%d and %d)", len(first), len(again))
	}
	if slices.Equal(first, other) {
		t.Errorf("seeds 7 and 8: the same datagrams arrived")
	}
}

// TestDuplicateReorderDelay: duplication, reordering and delay show at the
// receiver as the counters say.
func TestDuplicateReorderDelay(t *testing.T) {
	l, hs := newLab(t, "a", "b")
	a, b := hs[0], hs[1]
	const n = 3000
	k := insertLink(t, l, b, LinkConfig{
		ToHost: Rules{Duplicate: 0.05, Reorder: 0.05, ReorderDepth: 3, UDPOnly: true},
		Seed:   3,
	})
	recv := listenUDP(t, b, netip.AddrPortFrom(b.Addr, udpPort))
	got := exchange(t, dialUDP(t, a, netip.AddrPortFrom(b.Addr, udpPort)), "dup", n, recv)[0]
	toHost, _ := k.Stats()
	var late int
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			late++
		}
	}
	uniq := slices.Compact(slices.Sorted(slices.Values(got)))
	t.Logf("received %d datagrams, %d distinct, %d out of order; to b: %s", len(got), len(uniq), late, toHost)
	if len(uniq) != n {
		t.Errorf("%d distinct datagrams of %d arrived", len(uniq), n)
	}
	if dups := uint64(len(got) - n); dups != toHost.Duplicated || dups < n/40 {
		t.Errorf("%d duplicates arrived, counter %d, want about %d", dups, toHost.Duplicated, n/20)
	}
	if late == 0 || toHost.Reordered < n/40 {
		t.Errorf("%d datagrams out of order, %d reordered, want about %d", late, toHost.Reordered, n/20)
	}

	// Delay: 20 ms each way on b's link, ±5 ms.
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	insertLink(t, l, b, LinkConfig{ToHost: Rules{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond},
		FromHost: Rules{Delay: 20 * time.Millisecond}, Seed: 4})
	var rtts []time.Duration
	for range 10 {
		rtt, err := pingRetry(a, b.Addr, 3)
		if err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, rtt)
	}
	slices.Sort(rtts)
	t.Logf("RTT with 2 × 20 ms delay (±5 ms one way): %v", rtts)
	if rtts[0] < 35*time.Millisecond || rtts[len(rtts)-1] > 100*time.Millisecond {
		t.Errorf("RTTs %v, want about 40 ms", rtts)
	}
}

// TestSenderLink: impairing the sender's link makes every receiver lose
// the same datagrams.
func TestSenderLink(t *testing.T) {
	l, hs := newLab(t, "s", "r1", "r2")
	s, r1, r2 := hs[0], hs[1], hs[2]
	k := insertLink(t, l, s, LinkConfig{FromHost: BurstyLoss(0.2, 4), Seed: 9})
	group := netip.MustParseAddr("239.7.7.8")
	c1 := listenUDP(t, r1, netip.AddrPortFrom(group, udpPort))
	c2 := listenUDP(t, r2, netip.AddrPortFrom(group, udpPort))
	got := exchange(t, dialUDP(t, s, netip.AddrPortFrom(group, udpPort)), "sender", 3000, c1, c2)
	_, fromHost := k.Stats()
	t.Logf("r1 got %d, r2 got %d of 3000; from s: %s", len(got[0]), len(got[1]), fromHost)
	if !slices.Equal(got[0], got[1]) {
		t.Errorf("receivers behind one impaired sender got different datagrams")
	}
	if share := 1 - float64(len(got[0]))/3000; share < 0.12 || share > 0.28 {
		t.Errorf("receivers lost %.3f, want about 0.2", share)
	}
}

// TestTCPUnderLoss: TCP completes a transfer, intact, with 20 % of all
// frames lost both ways (ARP and ACKs included), also in bursts and with
// duplication and reordering.
func TestTCPUnderLoss(t *testing.T) {
	bursty := BurstyLoss(0.2, 4)
	bursty.Duplicate, bursty.Reorder, bursty.ReorderDepth = 0.05, 0.05, 4
	tests := []struct {
		name  string
		rules Rules
	}{
		{"random", Rules{Loss: 0.2}},
		{"bursty, duplicated, reordered", bursty},
	}
	l, hs := newLab(t, "a", "b")
	a, b := hs[0], hs[1]
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := insertLink(t, l, b, LinkConfig{ToHost: tt.rules, FromHost: tt.rules, Seed: 5 + uint64(i)})
			start := time.Now()
			if err := tcpTransfer(t, a, b, 4<<20, 90*time.Second); err != nil {
				t.Fatal(err)
			}
			toHost, fromHost := k.Stats()
			t.Logf("4 MiB over TCP in %s; to b: %s; from b: %s", time.Since(start).Round(time.Millisecond), toHost, fromHost)
			if toHost.Dropped == 0 || fromHost.Dropped == 0 {
				t.Errorf("no frame dropped: the transfer did not cross the switch")
			}
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// tcpTransfer sends size random bytes by TCP from host from to host to and
// checks that they arrive whole.
func tcpTransfer(t *testing.T, from, to *lab.Host, size int, timeout time.Duration) error {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(to.Addr, 0).String())
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		h := sha256.New()
		n, err := io.Copy(h, conn)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		done <- r
	}()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(data)
	var d net.Dialer
	var conn net.Conn
	if err := from.Do(func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp4", ln.Addr().String())
		return err
	}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write(data); err != nil {
		conn.Close()
		return fmt.Errorf("write: %w (%w)", err, ctx.Err())
	}
	if err := conn.Close(); err != nil {
		return err
	}
	r := <-done
	if r.err != nil {
		return fmt.Errorf("read: %w (%v)", r.err, ctx.Err())
	}
	if r.n != int64(size) || r.sum != sha256.Sum256(data) {
		return fmt.Errorf("received %d bytes of %d, SHA-256 match %v", r.n, size, r.sum == sha256.Sum256(data))
	}
	return nil
}

// TestInsertTap impairs a tap's link, with the test standing in for the VM
// on the tap's file descriptor.
func TestInsertTap(t *testing.T) {
	l, hs := newLab(t, "a")
	a := hs[0]
	tap, err := l.AddTap("vm")
	if err != nil {
		t.Fatal(err)
	}
	var f *os.File
	if err := l.SwitchDo(func() error {
		var err error
		f, err = openTap(tap)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := InsertTap(l, tap, LinkConfig{FromHost: Rules{Loss: 0.5, UDPOnly: true}, Seed: 11, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Close(); err != nil {
			t.Error(err)
		}
	})

	// VM → a: broadcasts written on the tap, half of them lost.
	const n = 400
	recv := listenUDP(t, a, netip.AddrPortFrom(netip.IPv4Unspecified(), udpPort))
	b4 := a.Addr.As4()
	b4[3] = 200 // an unused address of the subnet: the VM's
	src := netip.AddrFrom4(b4)
	done := make(chan []int, 1)
	go func() {
		seqs, err := receiveSeq(recv, []byte("tap"), time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- seqs
	}()
	for i := range n {
		if _, err := f.Write(udpBroadcast(src, udpPort, append([]byte("tap"), byte(i>>24), byte(i>>16), byte(i>>8), byte(i)))); err != nil {
			t.Fatalf("write to the tap: %v", err)
		}
		if i%10 == 9 {
			time.Sleep(time.Millisecond)
		}
	}
	got := <-done
	_, fromVM := k.Stats()
	t.Logf("a got %d of %d broadcasts from the tap; from the tap: %s", len(got), n, fromVM)
	if len(got) < n/2-60 || len(got) > n/2+60 || fromVM.Dropped != uint64(n-len(got)) {
		t.Errorf("a got %d of %d with 50 %% loss, %d dropped", len(got), n, fromVM.Dropped)
	}

	// a → VM: broadcasts reach the tap unharmed.
	send := dialUDP(t, a, netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), udpPort+1))
	if err := a.Do(func() error { return setBroadcast(send) }); err != nil {
		t.Fatal(err)
	}
	if err := sendN(t.Context(), send, []byte("to vm"), 100); err != nil {
		t.Fatal(err)
	}
	var seen int
	buf := make([]byte, 65536)
	for {
		if err := f.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		m, err := f.Read(buf)
		if err != nil {
			break
		}
		if bytes.Contains(buf[:m], []byte("to vm")) {
			seen++
		}
	}
	if seen != 100 {
		t.Errorf("the tap got %d of 100 broadcasts from a", seen)
	}
}
