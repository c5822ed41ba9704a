package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestHostSetup(t *testing.T) {
	const v6off = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
	rootBefore, _ := os.ReadFile(v6off)
	l, hs := newLab(t, Config{Subnet: netip.MustParsePrefix("10.77.0.0/24")}, "a", "b", "c")
	ctx := t.Context()
	for i, h := range hs {
		t.Run(h.Name, func(t *testing.T) {
			wantAddr := netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)})
			if h.Addr != wantAddr || h.Prefix != netip.PrefixFrom(wantAddr, 24) || h.Iface != "eth0" {
				t.Errorf("host = %s %s %s, want %s/24 on eth0", h.Addr, h.Prefix, h.Iface, wantAddr)
			}
			if o, ok := parseNSName(h.NS); !ok || o.pid != os.Getpid() {
				t.Errorf("namespace %q does not name this process as owner", h.NS)
			}
			routes, err := h.Run(ctx, "ip", "-4", "route", "show")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"default dev eth0", "224.0.0.0/4 dev eth0", "10.77.0.0/24 dev eth0"} {
				if !strings.Contains(routes, want) {
					t.Errorf("routes lack %q:\n%s", want, routes)
				}
			}
			err = h.Do(func() error {
				ifi, err := net.InterfaceByName("eth0")
				if err != nil {
					return err
				}
				if ifi.HardwareAddr.String() != h.MAC.String() {
					return fmt.Errorf("eth0 MAC %s, want %s", ifi.HardwareAddr, h.MAC)
				}
				if ifi.Flags&net.FlagUp == 0 {
					return errors.New("eth0 is down")
				}
				lo, err := net.InterfaceByName("lo")
				if err != nil {
					return err
				}
				if lo.Flags&net.FlagUp == 0 {
					return errors.New("lo is down")
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	if got := l.Hosts(); !slices.Equal(got, hs) {
		t.Errorf("Hosts() = %v, want %v", got, hs)
	}

	// The switch: every port on the bridge, IPv6 off there but not in the
	// root namespace.
	out, err := l.SwitchCommand(ctx, "ip", "-o", "link", "show", "master", l.Bridge()).CombinedOutput()
	if err != nil {
		t.Fatalf("list bridge ports: %v: %s", err, out)
	}
	if n := strings.Count(string(out), "state UP"); n != len(hs) {
		t.Errorf("bridge has %d ports up, want %d:\n%s", n, len(hs), out)
	}
	if rootBefore == nil {
		return // no IPv6 in this kernel
	}
	sw, err := l.SwitchCommand(ctx, "cat", v6off).Output()
	if err != nil || strings.TrimSpace(string(sw)) != "1" {
		t.Errorf("switch disable_ipv6 = %q, %v; want 1", sw, err)
	}
	if rootAfter, _ := os.ReadFile(v6off); string(rootAfter) != string(rootBefore) {
		t.Errorf("root namespace disable_ipv6 changed from %q to %q", rootBefore, rootAfter)
	}
}

func TestReachability(t *testing.T) {
	_, hs := newLab(t, Config{}, "a", "b", "c")
	_, havePing := exec.LookPath("ping")
	tests := []struct {
		name     string
		from, to int
	}{
		{"a to b", 0, 1},
		{"b to a", 1, 0},
		{"a to c", 0, 2},
		{"c to b", 2, 1},
		{"a to itself", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, to := hs[tt.from], hs[tt.to]
			if err := ping(from, to.Addr); err != nil {
				t.Errorf("ICMP echo %s -> %s: %v", from.Name, to.Addr, err)
			}
			if havePing == nil {
				if out, err := from.Run(t.Context(), "ping", "-c1", "-W1", to.Addr.String()); err != nil {
					t.Errorf("ping: %v\n%s", err, out)
				}
			}
			// A UDP round trip between Go sockets opened in the namespaces.
			srv := listenUDP(t, to, netip.AddrPortFrom(to.Addr, 0))
			cli := dialUDP(t, from, srv.LocalAddr().(*net.UDPAddr).AddrPort())
			go func() {
				buf := make([]byte, 64)
				srv.SetReadDeadline(time.Now().Add(3 * time.Second))
				n, src, err := srv.ReadFromUDPAddrPort(buf)
				if err == nil {
					srv.WriteToUDPAddrPort(buf[:n], src)
				}
			}()
			if _, err := cli.Write([]byte("echo")); err != nil {
				t.Fatal(err)
			}
			cli.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 64)
			n, err := cli.Read(buf)
			if err != nil || string(buf[:n]) != "echo" {
				t.Errorf("UDP echo %s -> %s: %q, %v", from.Name, to.Name, buf[:n], err)
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	l, hs := newLab(t, Config{}, "a")
	h := hs[0]
	tests := []struct {
		name string
		err  error
	}{
		{"empty host name", func() error { _, err := l.AddHost(""); return err }()},
		{"long host name", func() error { _, err := l.AddHost("abcdefghijklm"); return err }()},
		{"host name with space", func() error { _, err := l.AddHost("a b"); return err }()},
		{"duplicate host", func() error { _, err := l.AddHost("a"); return err }()},
		{"reserved host name", func() error { _, err := l.AddHost("sw"); return err }()},
		{"bad tap name", func() error { _, err := l.AddTap("a/b"); return err }()},
		{"negative loss", h.SetLoss(-1)},
		{"loss over 100", h.SetLoss(101)},
		{"negative rate", h.SetRate(-5)},
		{"invalid block prefix", h.BlockUDPDest(netip.Prefix{})},
	}
	for _, tt := range tests {
		if tt.err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if _, err := New(t.Context(), Config{Subnet: netip.MustParsePrefix("fd00::/64")}); err == nil {
		t.Errorf("New with an IPv6 subnet: no error")
	}
	if got := len(l.Hosts()); got != 1 {
		t.Errorf("lab has %d hosts after bad calls, want 1", got)
	}
	if got := len(labNamespaces(t, l)); got != 2 {
		t.Errorf("lab has %d namespaces after bad calls, want 2", got)
	}
}

// TestAddHostFailureCleansUp makes AddHost fail half-way (after it made the
// host namespace, at the veth) and checks that it leaves nothing behind.
func TestAddHostFailureCleansUp(t *testing.T) {
	l, _ := newLab(t, Config{}, "a")
	ctx := t.Context()
	// The next veth will be "shv2-b": take that name in the switch.
	clash := ifname("shv", 2, "b")
	if out, err := l.SwitchCommand(ctx, "ip", "link", "add", clash, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("add blocking device: %v: %s", err, out)
	}
	if _, err := l.AddHost("b"); err == nil {
		t.Fatal("AddHost succeeded despite the name clash")
	} else {
		t.Logf("AddHost failed as planned: %v", err)
	}
	if ns := nsName(l.owner, l.seq, "b"); slices.Contains(netnsList(t), ns) {
		t.Errorf("namespace %s left after a failed AddHost", ns)
	}
	if n := len(l.Hosts()); n != 1 {
		t.Errorf("%d hosts after a failed AddHost, want 1", n)
	}
	// What AddHost did not make, it must not delete.
	if out, err := l.SwitchCommand(ctx, "ip", "link", "show", "dev", clash).CombinedOutput(); err != nil {
		t.Errorf("the clashing device was deleted: %v: %s", err, out)
	}
	h, err := l.AddHost("b")
	if err != nil {
		t.Fatalf("AddHost after the failure: %v", err)
	}
	if want := l.Subnet().Addr().Next().Next(); h.Addr != want {
		t.Errorf("second host address %s, want %s", h.Addr, want)
	}
	if err := ping(h, l.Hosts()[0].Addr); err != nil {
		t.Errorf("ping after recovery: %v", err)
	}
}

func TestTapAndSwitchCommand(t *testing.T) {
	l, _ := newLab(t, Config{}, "a")
	tests := []struct{ name, want string }{
		{"vm1", "sht2-vm1"},
		{"abcdefghijkl", "sht3-abcdefghij"},
	}
	for _, tt := range tests {
		tap, err := l.AddTap(tt.name)
		if err != nil {
			t.Fatalf("AddTap(%q): %v", tt.name, err)
		}
		if tap != tt.want || len(tap) > maxIfname {
			t.Errorf("AddTap(%q) = %q, want %q", tt.name, tap, tt.want)
		}
		out, err := l.SwitchCommand(t.Context(), "ip", "-d", "-o", "link", "show", "dev", tap).CombinedOutput()
		if err != nil {
			t.Fatalf("show tap: %v: %s", err, out)
		}
		for _, want := range []string{"master " + l.Bridge(), "tun type tap", "<NO-CARRIER,BROADCAST,MULTICAST,UP>"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("tap %s lacks %q:\n%s", tap, want, out)
			}
		}
	}
	if got := l.Taps(); len(got) != len(tests) {
		t.Errorf("Taps() = %v", got)
	}
}

func TestClose(t *testing.T) {
	l, hs := newLab(t, Config{}, "a", "b")
	if _, err := l.AddTap("vm"); err != nil {
		t.Fatal(err)
	}
	names := labNamespaces(t, l)
	if len(names) != 3 {
		t.Fatalf("lab namespaces %v, want 3", names)
	}
	// Processes still running in the namespaces must not stop Close.
	var cmds []*exec.Cmd
	for _, cmd := range []*exec.Cmd{
		hs[0].Command(t.Context(), "sleep", "1000"),
		hs[1].Command(t.Context(), "sh", "-c", "sleep 1000 & sleep 1000"),
		l.SwitchCommand(t.Context(), "sleep", "1000"),
	} {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	// Let ip netns exec enter the namespaces.
	time.Sleep(200 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, cmd := range cmds {
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("%v: Wait = %v, want killed by SIGKILL", cmd.Args, err)
		}
	}
	list := netnsList(t)
	for _, ns := range names {
		if slices.Contains(list, ns) {
			t.Errorf("namespace %s still listed after Close", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddHost("c"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close = %v, want ErrClosed", err)
	}
	if _, err := l.AddTap("c"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddTap after Close = %v, want ErrClosed", err)
	}
}

// TestParallelLabs runs several labs at once in one process: their names
// must not collide and each must work on its own.
func TestParallelLabs(t *testing.T) {
	requireLab(t)
	const n = 3
	labs := make([]*Lab, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// The same subnet everywhere: labs are isolated.
			l, err := New(t.Context(), Config{Subnet: netip.MustParsePrefix("10.88.0.0/24"), Logger: testLogger(t)})
			if err != nil {
				errs[i] = err
				return
			}
			labs[i] = l
			a, err := l.AddHost("a")
			if err != nil {
				errs[i] = err
				return
			}
			b, err := l.AddHost("b")
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = ping(a, b.Addr)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, l := range labs {
			if l != nil {
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("lab %d: %v", i, err)
		}
	}
	seen := map[string]bool{}
	for _, l := range labs {
		if l == nil {
			continue
		}
		if seen[l.SwitchNS()] {
			t.Errorf("two labs share switch namespace %s", l.SwitchNS())
		}
		seen[l.SwitchNS()] = true
	}
}
