package boot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/shoal-lab/shoal/internal/ctxtime"
	"github.com/vishvananda/netlink"
)

// NetConfig says how to bring the network up. The zero value of each
// optional field means the documented default.
type NetConfig struct {
	// Iface is the interface to use; empty: the first one with a link.
	Iface string
	// Static, if valid, is configured instead of asking DHCP, with Gateway
	// as the default router if valid.
	Static  netip.Prefix
	Gateway netip.Addr
	// LinkTimeout bounds the wait for an interface with a link (30 s).
	LinkTimeout time.Duration
	// DHCPTimeout bounds one DHCP exchange on one interface (20 s).
	DHCPTimeout time.Duration
	// Logger receives details; nil discards them.
	Logger *slog.Logger
	// Say, if set, gets one-line messages for the console.
	Say func(string)
}

// NetInfo is the configured network.
type NetInfo struct {
	Iface      string
	MAC        net.HardwareAddr
	Addr       netip.Prefix // address and subnet
	Router     netip.Addr   // invalid if none
	DHCPServer netip.Addr   // invalid with a static address
	LeaseTime  time.Duration

	lease *nclient4.Lease // what KeepLease renews; nil with a static address
}

func (n NetInfo) String() string {
	s := fmt.Sprintf("%s %s", n.Iface, n.Addr)
	if n.Router.IsValid() {
		s += " router " + n.Router.String()
	}
	if n.DHCPServer.IsValid() {
		s += fmt.Sprintf(" (DHCP from %s, lease %s)", n.DHCPServer, n.LeaseTime)
	}
	return s
}

// ErrNoLink means no network interface got a link in time.
var ErrNoLink = errors.New("no network interface has a link")

// ErrNoLease means no DHCP server answered.
var ErrNoLease = errors.New("no DHCP lease")

// multicastNet is where the session's multicast traffic goes.
var multicastNet = netip.MustParsePrefix("224.0.0.0/4")

// BringUp sets the Ethernet interfaces up, waits for a link, and configures
// an address (by DHCP unless cfg.Static is set), a default route and a
// route for multicast on the first interface that gets one.
func BringUp(ctx context.Context, cfg NetConfig) (NetInfo, error) {
	if cfg.LinkTimeout == 0 {
		cfg.LinkTimeout = 30 * time.Second
	}
	if cfg.DHCPTimeout == 0 {
		cfg.DHCPTimeout = 20 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	say := cfg.Say
	if say == nil {
		say = func(string) {}
	}

	up, err := waitForLink(ctx, cfg, log, say)
	if err != nil {
		return NetInfo{}, err
	}
	if cfg.Static.IsValid() {
		l := up[0]
		info := NetInfo{Iface: l.Attrs().Name, MAC: l.Attrs().HardwareAddr, Addr: cfg.Static, Router: cfg.Gateway}
		if err := configure(l, info); err != nil {
			return NetInfo{}, err
		}
		return info, nil
	}

	// insomniacslk/dhcp draws transaction IDs through u-root's uio/rand,
	// which spins on a non-blocking getrandom until the kernel's pool is
	// ready: under emulation without a hardware RNG that can take minutes.
	// Let it read /dev/urandom instead, and give the kernel's pool its
	// jitter seeding by one blocking read first (see notes/boot.md).
	os.Setenv("UROOT_NOHWRNG", "1")
	seedEntropy(ctx, log, say)

	var errs []error
	for _, l := range up {
		name := l.Attrs().Name
		say(fmt.Sprintf("asking DHCP on %s (%s)", name, l.Attrs().HardwareAddr))
		info, err := dhcp(ctx, l, cfg.DHCPTimeout, log)
		if err != nil {
			log.Warn("DHCP failed", "iface", name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if err := configure(l, info); err != nil {
			return NetInfo{}, err
		}
		return info, nil
	}
	return NetInfo{}, fmt.Errorf("%w: %w", ErrNoLease, errors.Join(errs...))
}

// seedEntropy makes sure the kernel's random pool is initialized: a
// blocking getrandom lets the kernel seed it from CPU jitter in about a
// second where it would otherwise wait for interrupts.
func seedEntropy(ctx context.Context, log *slog.Logger, say func(string)) {
	done := make(chan struct{})
	go func() {
		var b [16]byte
		_, _ = rand.Read(b[:])
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		say("waiting for the kernel's random number generator")
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	log.Debug("random pool ready")
}

// ethernetLinks lists the Ethernet interfaces: physical NICs (and veths,
// for tests in namespaces), sorted by name.
func ethernetLinks() ([]netlink.Link, error) {
	all, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []netlink.Link
	for _, l := range all {
		a := l.Attrs()
		if a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
			continue
		}
		if t := l.Type(); t != "device" && t != "veth" {
			continue
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attrs().Name < out[j].Attrs().Name })
	return out, nil
}

// hasCarrier tells whether a freshly listed link is up with a carrier
// (IFF_RUNNING; netlink, so it holds in any network namespace, unlike
// /sys/class/net).
func hasCarrier(l netlink.Link) bool {
	return l.Attrs().Flags&net.FlagRunning != 0
}

// waitForLink sets every Ethernet interface up (or only cfg.Iface) and
// waits until at least one has a carrier; it returns those that do, the
// named one alone if cfg.Iface is set. Interfaces whose driver loads late
// are picked up while waiting.
func waitForLink(ctx context.Context, cfg NetConfig, log *slog.Logger, say func(string)) ([]netlink.Link, error) {
	deadline := time.Now().Add(cfg.LinkTimeout)
	setUp := map[string]bool{}
	said := false
	for {
		links, err := ethernetLinks()
		if err != nil {
			return nil, err
		}
		var withLink []netlink.Link
		var names []string
		for _, l := range links {
			name := l.Attrs().Name
			if cfg.Iface != "" && name != cfg.Iface {
				continue
			}
			names = append(names, name)
			if !setUp[name] {
				if err := netlink.LinkSetUp(l); err != nil {
					log.Warn("could not set interface up", "iface", name, "err", err)
				}
				setUp[name] = true
			}
			if hasCarrier(l) {
				withLink = append(withLink, l)
			}
		}
		if len(withLink) > 0 {
			return withLink, nil
		}
		if !said && len(names) > 0 {
			say(fmt.Sprintf("waiting for a network link on %s", strings.Join(names, ", ")))
			said = true
		}
		if time.Now().After(deadline) {
			switch {
			case cfg.Iface != "" && len(names) == 0:
				return nil, fmt.Errorf("%w: interface %s (shoal.iface) does not exist; interfaces: %s", ErrNoLink, cfg.Iface, linkNames(links))
			case len(names) == 0:
				return nil, fmt.Errorf("%w: no Ethernet interface at all (is the network card's driver in the image?)", ErrNoLink)
			default:
				return nil, fmt.Errorf("%w after %s: %s have no cable or no switch port up", ErrNoLink, cfg.LinkTimeout, strings.Join(names, ", "))
			}
		}
		if err := ctxtime.Sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, fmt.Errorf("wait for a network link: %w", err)
		}
	}
}

func linkNames(links []netlink.Link) string {
	if len(links) == 0 {
		return "none"
	}
	names := make([]string, len(links))
	for i, l := range links {
		names[i] = l.Attrs().Name
	}
	return strings.Join(names, ", ")
}

// dhcp runs one DHCP exchange (discover, offer, request, ack) on l.
func dhcp(ctx context.Context, l netlink.Link, timeout time.Duration, log *slog.Logger) (NetInfo, error) {
	name := l.Attrs().Name
	c, err := nclient4.New(name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3),
		nclient4.WithLogger(dhcpLogger{log.With("iface", name)}))
	if err != nil {
		return NetInfo{}, fmt.Errorf("open DHCP client: %w", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lease, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("shoal")))
	if err != nil {
		return NetInfo{}, err
	}
	info, err := leaseInfo(name, l.Attrs().HardwareAddr, lease.ACK)
	info.lease = lease
	return info, err
}

// leaseInfo reads the address, subnet and router from a DHCP ACK.
func leaseInfo(iface string, mac net.HardwareAddr, ack *dhcpv4.DHCPv4) (NetInfo, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return NetInfo{}, fmt.Errorf("DHCP ACK without an address")
	}
	bits := 24 // class C when the server sends no mask
	if m := ack.SubnetMask(); m != nil {
		if ones, size := m.Size(); size == 32 && ones > 0 {
			bits = ones
		}
	} else if ip.As4()[0] < 128 {
		bits = 8
	} else if ip.As4()[0] < 192 {
		bits = 16
	}
	info := NetInfo{Iface: iface, MAC: mac, Addr: netip.PrefixFrom(ip, bits), LeaseTime: ack.IPAddressLeaseTime(0)}
	if rs := ack.Router(); len(rs) > 0 {
		if r, ok := netip.AddrFromSlice(rs[0].To4()); ok && !r.IsUnspecified() {
			info.Router = r
		}
	}
	if s, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		info.DHCPServer = s
	}
	return info, nil
}

// configure puts info's address on l, a default route (through the router,
// or straight onto the link when there is none, so the LAN's broadcasts
// and the server's unicast work), and a link route for multicast.
func configure(l netlink.Link, info NetInfo) error {
	name := l.Attrs().Name
	a := info.Addr
	ipn := &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}
	bcast := a.Masked().Addr().As4()
	for b := a.Bits(); b < 32; b++ {
		bcast[b/8] |= 0x80 >> (b % 8)
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipn, Broadcast: net.IP(bcast[:])}); err != nil {
		return fmt.Errorf("configure %s on %s: %w", a, name, err)
	}
	idx := l.Attrs().Index
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	route := &netlink.Route{LinkIndex: idx, Dst: def, Scope: netlink.SCOPE_LINK}
	if info.Router.IsValid() {
		route = &netlink.Route{LinkIndex: idx, Dst: def, Gw: info.Router.AsSlice()}
	}
	if err := netlink.RouteReplace(route); err != nil && info.Router.IsValid() {
		// A router the lease names but that cannot be reached: the LAN
		// still works without it, and the session is on the LAN.
		route = &netlink.Route{LinkIndex: idx, Dst: def, Scope: netlink.SCOPE_LINK}
		if err2 := netlink.RouteReplace(route); err2 != nil {
			return fmt.Errorf("default route on %s via %s: %w", name, info.Router, err)
		}
	} else if err != nil {
		return fmt.Errorf("default route on %s: %w", name, err)
	}
	mc := &net.IPNet{IP: multicastNet.Addr().AsSlice(), Mask: net.CIDRMask(multicastNet.Bits(), 32)}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: mc, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("multicast route on %s: %w", name, err)
	}
	return nil
}

// dhcpLogger passes nclient4's log to slog at debug level.
type dhcpLogger struct{ log *slog.Logger }

func (d dhcpLogger) Printf(format string, v ...any) {
	d.log.Debug("dhcp: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (d dhcpLogger) PrintMessage(prefix string, m *dhcpv4.DHCPv4) {
	d.log.Debug("dhcp: "+prefix, "msg", m.Summary())
}
