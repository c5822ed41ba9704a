package lab

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
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// requireLab skips the test when the machine cannot run a lab, or fails it
// when SHOAL_REQUIRE_LAB=1 (make test, CI), so the lab tests never skip
// silently there.
func requireLab(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("SHOAL_REQUIRE_LAB=1 but: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("SHOAL_LAB_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// newLab makes a lab with the named hosts. At cleanup it closes the lab and
// checks that none of its namespaces remain and that the root namespace
// gained no interface and no shoal_lab nftables table.
func newLab(t *testing.T, cfg Config, hosts ...string) (*Lab, []*Host) {
	t.Helper()
	requireLab(t)
	before := rootLinks(t)
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := labNamespaces(t, l); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
		after := rootLinks(t)
		if added := slices.DeleteFunc(after, func(s string) bool { return slices.Contains(before, s) }); len(added) > 0 {
			t.Errorf("root namespace gained interfaces: %v", added)
		}
		if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err == nil && bytes.Contains(out, []byte(filterTable)) {
			t.Errorf("root namespace has an nftables table %s:\n%s", filterTable, out)
		}
	})
	var hs []*Host
	for _, name := range hosts {
		h, err := l.AddHost(name)
		if err != nil {
			t.Fatalf("AddHost(%q): %v", name, err)
		}
		hs = append(hs, h)
	}
	return l, hs
}

// rootLinks lists the interface names of the root namespace (the test
// process's own).
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -o link show: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		names = append(names, name)
	}
	return names
}

// netnsList returns the names `ip netns list` shows.
func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// labNamespaces returns the listed namespaces that belong to l.
func labNamespaces(t *testing.T, l *Lab) []string {
	t.Helper()
	base := strings.TrimSuffix(l.SwitchNS(), switchRole)
	return slices.DeleteFunc(netnsList(t), func(s string) bool { return !strings.HasPrefix(s, base) })
}

// ping sends one ICMP echo request from one host to an address and waits
// for the reply, with a Go raw socket (no ping binary needed).
func ping(from *Host, to netip.Addr) error {
	var c *icmp.PacketConn
	if err := from.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	id, data := rand.IntN(0xffff), []byte("shoal lab ping")
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return fmt.Errorf("send echo to %s: %w", to, err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", to, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if ok && echo.ID == id && bytes.Equal(echo.Data, data) && peer.String() == to.String() {
			return nil
		}
	}
}

// listenUDP opens a UDP socket on addr inside host h; if addr is a
// multicast group, the socket joins it on h's interface.
func listenUDP(t *testing.T, h *Host, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		if err != nil {
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

// dialUDP opens a UDP socket inside host h connected to dst. It is used
// outside Do: the socket stays in h's namespace.
func dialUDP(t *testing.T, h *Host, dst netip.AddrPort) *net.UDPConn {
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

// receive counts the datagrams c gets that start with tag, until quiet has
// passed without any, or want have arrived. It returns the count and the
// source of the last one.
func receive(c *net.UDPConn, tag []byte, want int, quiet time.Duration) (int, netip.AddrPort, error) {
	buf := make([]byte, 2048)
	var got int
	var from netip.AddrPort
	for got < want {
		if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			return got, from, err
		}
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got, from, nil
		}
		if err != nil {
			return got, from, err
		}
		if bytes.HasPrefix(buf[:n], tag) {
			got++
			from = src
		}
	}
	return got, from, nil
}

// sendN sends n datagrams "tag + sequence number" on c, pausing now and
// then so that the receiver's socket buffer never overflows.
func sendN(ctx context.Context, c *net.UDPConn, tag []byte, n int) error {
	for i := range n {
		msg := binary.BigEndian.AppendUint32(slices.Clone(tag), uint32(i))
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if i%20 == 19 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}
