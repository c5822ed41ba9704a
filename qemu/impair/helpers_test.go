package impair

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// requireLab skips the test when the machine cannot run a lab, or fails it
// when SHOAL_REQUIRE_LAB=1 (make test, CI).
func requireLab(t *testing.T) {
	t.Helper()
	if err := lab.Available(); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("the virtual lab is required (SHOAL_REQUIRE_LAB=1) but unavailable: %v", err)
		}
		t.Skipf("virtual lab unavailable (run as root, or set SHOAL_REQUIRE_LAB=1 to make this fail): %v", err)
	}
}

// testLogger logs to the test's output; SHOAL_LAB_DEBUG=1 adds debug lines.
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("SHOAL_LAB_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// newLab makes a lab with the named hosts, closed when the test ends.
func newLab(t *testing.T, names ...string) (*lab.Lab, []*lab.Host) {
	t.Helper()
	requireLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	var hs []*lab.Host
	for _, n := range names {
		h, err := l.AddHost(n)
		if err != nil {
			t.Fatalf("add host %s: %v", n, err)
		}
		hs = append(hs, h)
	}
	return l, hs
}

// insertLink puts an impairment switch on h's link and closes it (before the
// lab) when the test ends, logging its counters.
func insertLink(t *testing.T, l *lab.Lab, h *lab.Host, cfg LinkConfig) *Link {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	k, err := Insert(l, h, cfg)
	if err != nil {
		t.Fatalf("insert on %s: %v", h.Name, err)
	}
	t.Cleanup(func() {
		if err := k.Close(); err != nil {
			t.Errorf("close link of %s: %v", h.Name, err)
		}
	})
	return k
}

// ping sends one ICMP echo request from a host and waits for the reply; it
// returns the round-trip time.
func ping(from *lab.Host, to netip.Addr, timeout time.Duration) (time.Duration, error) {
	var c *icmp.PacketConn
	if err := from.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	id, data := rand.IntN(0xffff), []byte("shoal impair ping")
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return 0, fmt.Errorf("send echo to %s: %w", to, err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no echo reply from %s: %w", to, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if ok && echo.ID == id && bytes.Equal(echo.Data, data) && peer.String() == to.String() {
			return time.Since(start), nil
		}
	}
}

// pingRetry pings until a reply comes (ARP and the first echo may be lost
// to impairments), up to tries times.
func pingRetry(from *lab.Host, to netip.Addr, tries int) (time.Duration, error) {
	var err error
	for range tries {
		var rtt time.Duration
		if rtt, err = ping(from, to, time.Second); err == nil {
			return rtt, nil
		}
	}
	return 0, err
}

// listenUDP opens a UDP socket on addr inside host h, joining addr's group
// if it is a multicast address.
func listenUDP(t *testing.T, h *lab.Host, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		if err := c.SetReadBuffer(8 << 20); err != nil {
			return err
		}
		if !addr.Addr().IsMulticast() {
			return nil
		}
		ifi, err := net.InterfaceByName(h.Iface)
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: addr.Addr().AsSlice()})
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialUDP opens a UDP socket inside host h connected to dst.
func dialUDP(t *testing.T, h *lab.Host, dst netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendN sends datagrams "tag + sequence number" 0..n-1 on c, pausing now
// and then so that no queue overflows.
func sendN(ctx context.Context, c *net.UDPConn, tag []byte, n int) error {
	for i := range n {
		msg := binary.BigEndian.AppendUint32(bytes.Clone(tag), uint32(i))
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if i%10 == 9 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// receiveSeq returns the sequence numbers of the datagrams starting with
// tag that c receives, in arrival order, until quiet passes without one.
func receiveSeq(c *net.UDPConn, tag []byte, quiet time.Duration) ([]int, error) {
	buf := make([]byte, 2048)
	var seqs []int
	for {
		if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			return seqs, err
		}
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return seqs, nil
		}
		if err != nil {
			return seqs, err
		}
		if n == len(tag)+4 && bytes.HasPrefix(buf[:n], tag) {
			seqs = append(seqs, int(binary.BigEndian.Uint32(buf[len(tag):n])))
		}
	}
}

// exchange sends n tagged datagrams from c to the receivers and returns the
// sequence numbers each one got.
func exchange(t *testing.T, c *net.UDPConn, tag string, n int, receivers ...*net.UDPConn) [][]int {
	t.Helper()
	type result struct {
		seqs []int
		err  error
	}
	results := make([]chan result, len(receivers))
	for i, r := range receivers {
		results[i] = make(chan result, 1)
		go func() {
			seqs, err := receiveSeq(r, []byte(tag), time.Second)
			results[i] <- result{seqs, err}
		}()
	}
	if err := sendN(t.Context(), c, []byte(tag), n); err != nil {
		t.Fatal(err)
	}
	out := make([][]int, len(receivers))
	for i := range receivers {
		r := <-results[i]
		if r.err != nil {
			t.Fatal(r.err)
		}
		out[i] = r.seqs
	}
	return out
}
