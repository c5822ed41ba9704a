package e2e

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/shoal-lab/shoal/boot"
	"github.com/shoal-lab/shoal/qemu/lab"
	"github.com/shoal-lab/shoal/server"
)

// requireLab skips without a lab, or fails when SHOAL_REQUIRE_LAB=1.
func requireLab(t *testing.T) {
	t.Helper()
	if err := lab.Available(); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("SHOAL_REQUIRE_LAB=1 but: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// dhcpLab makes a lab with a server host running server.DHCPServer and the
// named client hosts with no address, and returns them.
func dhcpLab(t *testing.T, clients ...string) (*server.DHCPServer, []*lab.Host) {
	t.Helper()
	return dhcpLabLease(t, 0, clients...)
}

// dhcpLabLease is dhcpLab with the server's lease time (0: its default).
func dhcpLabLease(t *testing.T, leaseTime time.Duration, clients ...string) (*server.DHCPServer, []*lab.Host) {
	t.Helper()
	requireLab(t)
	l, err := lab.New(t.Context(), lab.Config{Subnet: labSubnet, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srvHost, err := l.AddHost("srv")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []*lab.Host
	for _, name := range clients {
		h, err := l.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		// A DHCP client starts with no address and no routes.
		if _, err := h.Run(t.Context(), "ip", "addr", "flush", "dev", h.Iface); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	var d *server.DHCPServer
	if err := srvHost.Do(func() error {
		var err error
		d, err = server.NewDHCPServer(server.DHCPConfig{Interface: srvHost.Iface, Range: dhcpRange, LeaseTime: leaseTime, Logger: testLogger(t)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.Serve(t.Context()); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		d.Close() // idempotent
		wg.Wait()
	})
	return d, hosts
}

// TestDHCPServerLeasesToNclient4 runs the server against insomniacslk's
// nclient4 over real sockets: two clients get two addresses of the range,
// with the server's subnet and identity.
func TestDHCPServerLeasesToNclient4(t *testing.T) {
	d, hosts := dhcpLab(t, "c1", "c2")
	first, last, _ := server.ParseDHCPRange(dhcpRange)
	got := map[netip.Addr]bool{}
	for _, h := range hosts {
		var c *nclient4.Client
		if err := h.Do(func() error {
			var err error
			c, err = nclient4.New(h.Iface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		lease, err := c.Request(ctx)
		cancel()
		c.Close()
		if err != nil {
			t.Fatalf("%s: Request: %v", h.Name, err)
		}
		a, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
		if a.Less(first) || last.Less(a) || got[a] {
			t.Errorf("%s got %v (range %s, already given: %v)", h.Name, a, dhcpRange, got)
		}
		got[a] = true
		if ones, _ := lease.ACK.SubnetMask().Size(); ones != 24 {
			t.Errorf("%s: mask /%d", h.Name, ones)
		}
		if sid := lease.ACK.ServerIdentifier().String(); sid != d.Addr().Addr().String() {
			t.Errorf("%s: server identifier %s, want %s", h.Name, sid, d.Addr().Addr())
		}
		if lt := lease.ACK.IPAddressLeaseTime(0); lt != server.DefaultLeaseTime {
			t.Errorf("%s: lease time %s", h.Name, lt)
		}
	}
	if n := len(d.Leases()); n != 2 {
		t.Errorf("server holds %d leases, want 2", n)
	}
}

// TestBringUp runs the boot package's network bring-up in a lab namespace:
// it finds the link, asks DHCP and configures the address, the default
// route and the multicast route with netlink.
func TestBringUp(t *testing.T) {
	_, hosts := dhcpLab(t, "client")
	h := hosts[0]
	var info boot.NetInfo
	if err := h.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		info, err = boot.BringUp(ctx, boot.NetConfig{Logger: testLogger(t), Say: func(s string) { t.Log(s) }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("network: %s", info)
	if info.Iface != h.Iface || !info.DHCPServer.IsValid() || info.Addr.Bits() != 24 {
		t.Errorf("BringUp = %+v", info)
	}
	addrs, err := h.Run(t.Context(), "ip", "-4", "addr", "show", "dev", h.Iface)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(addrs, info.Addr.String()) || !strings.Contains(addrs, "brd 10.77.0.255") {
		t.Errorf("eth0 lacks %s with its broadcast address:\n%s", info.Addr, addrs)
	}
	routes, err := h.Run(t.Context(), "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default dev eth0", "224.0.0.0/4 dev eth0"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
}

// TestKeepLease renews a short lease from the real server over real
// sockets, then keeps the address when the server is gone and the lease
// runs out, and says so.
func TestKeepLease(t *testing.T) {
	const leaseTime = 4 * time.Second
	d, hosts := dhcpLabLease(t, leaseTime, "client")
	h := hosts[0]
	var (
		mu   sync.Mutex
		said []string
	)
	say := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		said = append(said, s)
		t.Log("console: " + s)
	}
	var info boot.NetInfo
	var leased time.Time
	keep := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		boot.KeepLease(ctx, info, testLogger(t), say)
		return nil
	}
	if err := h.Do(func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var err error
		info, err = boot.BringUp(ctx, boot.NetConfig{Logger: testLogger(t)})
		leased = time.Now()
		if err != nil {
			return err
		}
		return keep(3 * leaseTime)
	}); err != nil {
		t.Fatal(err)
	}
	ls := d.Leases()
	if len(ls) != 1 || ls[0].Addr != info.Addr.Addr() {
		t.Fatalf("server leases %+v, want one for %s", ls, info.Addr)
	}
	// Renewed at T1 (2 s) again and again: the lease now runs well past
	// the first one's end.
	if end := ls[0].Expires; !end.After(leased.Add(2 * leaseTime)) {
		t.Errorf("lease expires %s after it was taken: not renewed (want > %s)", end.Sub(leased), 2*leaseTime)
	}
	if len(said) != 0 {
		t.Errorf("console said %q while the server renewed", said)
	}

	// The DHCP server goes away: the lease runs out, the address stays.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// (A renewal gives up after about 6 s: a try of 2 s, then one of 4 s.)
	if err := h.Do(func() error { return keep(3 * leaseTime) }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(said) != 1 || !strings.Contains(said[0], "expired") || !strings.Contains(said[0], "keeping the address") {
		t.Errorf("console said %q, want one line about the expired lease", said)
	}
	addrs, err := h.Run(t.Context(), "ip", "-4", "addr", "show", "dev", h.Iface)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(addrs, info.Addr.String()) {
		t.Errorf("the address %s is gone after the lease ran out:\n%s", info.Addr, addrs)
	}
}

// TestBringUpStatic configures a static address without DHCP.
func TestBringUpStatic(t *testing.T) {
	_, hosts := dhcpLab(t, "client")
	h := hosts[0]
	want := netip.MustParsePrefix("10.77.0.42/24")
	if err := h.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := boot.BringUp(ctx, boot.NetConfig{Iface: "eth0", Static: want, Gateway: netip.MustParseAddr("10.77.0.1")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	routes, err := h.Run(t.Context(), "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(routes, "default via 10.77.0.1 dev eth0") {
		t.Errorf("routes:\n%s", routes)
	}
}
