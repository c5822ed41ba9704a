package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/shoal-lab/shoal/internal/mcast"
)

// DHCPConfig configures a DHCPServer. The zero value of each optional field
// means the documented default.
type DHCPConfig struct {
	// Interface to serve on; empty picks the default route's interface.
	// The server's address and subnet come from it.
	Interface string
	// Range is the pool of addresses to lease, "A-B" (e.g.
	// "10.77.0.100-10.77.0.200"), inside the interface's subnet. Required.
	Range string
	// LeaseTime is how long a lease lasts (1 h).
	LeaseTime time.Duration
	// Router is the default router handed out; zero: the interface's
	// default gateway if it has one, else none (clients route the LAN
	// directly).
	Router netip.Addr
	// Logger receives a line per lease (info) and per packet (debug); nil
	// discards them.
	Logger *slog.Logger
	// Boot, if set, is asked for boot options (PXE: the boot file) to add
	// to each offer and ack; typ is the reply being built. It returns nil
	// for a client that gets an address only.
	Boot func(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) []dhcpv4.Modifier
}

// DefaultLeaseTime is the lease time when none is configured.
const DefaultLeaseTime = time.Hour

// offerHold is how long an offered address is kept for the client that
// was offered it.
const offerHold = time.Minute

// declineHold is how long an address a client declined (it found it in
// use) is not offered again.
const declineHold = 10 * time.Minute

// DHCPLease is one address handed out.
type DHCPLease struct {
	MAC      net.HardwareAddr
	Addr     netip.Addr
	Expires  time.Time
	Hostname string
	Offered  bool // offered but not yet requested
}

// DHCPServer is a small DHCP server for a lab that has none: it leases
// addresses from a range, in memory, with the subnet mask, broadcast
// address and router of the serving interface. It answers on one interface
// only. Create it with NewDHCPServer, run Serve, and Close it.
type DHCPServer struct {
	log       *slog.Logger
	conn      net.PacketConn
	iface     mcast.Interface
	first     netip.Addr
	last      netip.Addr
	leaseTime time.Duration
	router    netip.Addr
	boot      func(*dhcpv4.DHCPv4, dhcpv4.MessageType) []dhcpv4.Modifier

	closeOnce sync.Once
	closed    chan struct{}
	served    sync.WaitGroup

	mu       sync.Mutex // guards the lease tables
	byMAC    map[string]*DHCPLease
	byAddr   map[netip.Addr]*DHCPLease
	declined map[netip.Addr]time.Time
	now      func() time.Time
}

// ParseDHCPRange parses "A-B", two IPv4 addresses with A ≤ B.
func ParseDHCPRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return first, last, fmt.Errorf("DHCP range %q: want FIRST-LAST, e.g. 10.77.0.100-10.77.0.200", s)
	}
	if first, err = netip.ParseAddr(strings.TrimSpace(a)); err == nil {
		last, err = netip.ParseAddr(strings.TrimSpace(b))
	}
	if err != nil || !first.Is4() || !last.Is4() {
		return first, last, fmt.Errorf("DHCP range %q: want two IPv4 addresses FIRST-LAST", s)
	}
	if last.Less(first) {
		return first, last, fmt.Errorf("DHCP range %q: the first address is after the last", s)
	}
	return first, last, nil
}

// NewDHCPServer checks the configuration and opens the DHCP port (UDP 67)
// on the interface.
func NewDHCPServer(cfg DHCPConfig) (*DHCPServer, error) {
	ifi, err := mcast.Pick(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	s, err := newDHCPServer(cfg, ifi)
	if err != nil {
		return nil, err
	}
	conn, err := server4.NewIPv4UDPConn(ifi.Name, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", ifi.Name, dhcpv4.ServerPort, err)
	}
	s.conn = conn
	return s, nil
}

// newDHCPServer builds a server for ifi without a socket.
func newDHCPServer(cfg DHCPConfig, ifi mcast.Interface) (*DHCPServer, error) {
	first, last, err := ParseDHCPRange(cfg.Range)
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	subnet := ifi.Addr.Masked()
	if !subnet.Contains(first) || !subnet.Contains(last) {
		return nil, fmt.Errorf("dhcp: range %s-%s is not inside %s's subnet %s", first, last, ifi.Name, subnet)
	}
	s := &DHCPServer{
		log:       cfg.Logger,
		iface:     ifi,
		first:     first,
		last:      last,
		leaseTime: cfg.LeaseTime,
		router:    cfg.Router,
		boot:      cfg.Boot,
		closed:    make(chan struct{}),
		byMAC:     map[string]*DHCPLease{},
		byAddr:    map[netip.Addr]*DHCPLease{},
		declined:  map[netip.Addr]time.Time{},
		now:       time.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.leaseTime <= 0 {
		s.leaseTime = DefaultLeaseTime
	}
	if !s.router.IsValid() {
		if gw := interfaceGateway(ifi.Name); subnet.Contains(gw) {
			s.router = gw
		}
	}
	return s, nil
}

// Addr is the server's own address and subnet.
func (s *DHCPServer) Addr() netip.Prefix { return s.iface.Addr }

// Serve answers DHCP requests until ctx ends or Close is called; it then
// returns nil. Requests are handled one at a time, in order.
func (s *DHCPServer) Serve(ctx context.Context) error {
	s.served.Add(1)
	defer s.served.Done()
	select {
	case <-s.closed:
		return nil
	default:
	}
	s.log.Info("DHCP server ready", "interface", s.iface.Name, "addr", s.iface.Addr,
		"range", s.first.String()+"-"+s.last.String(), "router", s.router, "lease", s.leaseTime)
	return serveDHCPConn(ctx, s.conn, s.closed, s.log, func(req *dhcpv4.DHCPv4, _ *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
		return s.handle(req)
	})
}

// Close stops Serve, waits for it and closes the socket. It is idempotent.
func (s *DHCPServer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.conn != nil {
			err = s.conn.Close()
		}
	})
	s.served.Wait()
	return err
}

// Leases returns the current leases and offers.
func (s *DHCPServer) Leases() []DHCPLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DHCPLease, 0, len(s.byMAC))
	for _, l := range s.byMAC {
		out = append(out, *l)
	}
	return out
}

// handle answers one message; it returns nil when there is nothing to say.
func (s *DHCPServer) handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	mac := req.ClientHWAddr
	typ := req.MessageType()
	s.log.Debug("dhcp: request", "type", typ, "mac", mac.String(), "requested", req.RequestedIPAddress(), "ciaddr", req.ClientIPAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	switch typ {
	case dhcpv4.MessageTypeDiscover:
		addr, ok := s.allocate(mac, ip4(req.RequestedIPAddress()), now)
		if !ok {
			s.log.Warn("dhcp: no free address in the range", "mac", mac.String(), "range", s.first.String()+"-"+s.last.String())
			return nil, nil
		}
		s.bind(mac, addr, now.Add(offerHold), true, req.HostName())
		return s.reply(req, dhcpv4.MessageTypeOffer, addr)

	case dhcpv4.MessageTypeRequest:
		if sid := ip4(req.ServerIdentifier()); sid.IsValid() && sid != s.iface.Addr.Addr() {
			// The client took another server's offer.
			if l := s.byMAC[mac.String()]; l != nil && l.Offered {
				s.unbind(l)
			}
			return nil, nil
		}
		want := ip4(req.RequestedIPAddress())
		if !want.IsValid() {
			want = ip4(req.ClientIPAddr)
		}
		if want.IsValid() && s.inRange(want) && s.free(want, mac, now) {
			s.bind(mac, want, now.Add(s.leaseTime), false, req.HostName())
			s.log.Info("DHCP lease", "mac", mac.String(), "addr", want, "hostname", req.HostName(), "for", s.leaseTime)
			return s.reply(req, dhcpv4.MessageTypeAck, want)
		}
		// Ours to refuse: a request to us, or one for an address that
		// cannot be right on this subnet or is someone else's.
		if ip4(req.ServerIdentifier()).IsValid() || !want.IsValid() || !s.iface.Addr.Masked().Contains(want) || s.inRange(want) {
			s.log.Info("DHCP NAK", "mac", mac.String(), "requested", want)
			return s.reply(req, dhcpv4.MessageTypeNak, netip.Addr{})
		}
		return nil, nil

	case dhcpv4.MessageTypeDecline:
		if a := ip4(req.RequestedIPAddress()); a.IsValid() {
			s.declined[a] = now.Add(declineHold)
			if l := s.byAddr[a]; l != nil && l.MAC.String() == mac.String() {
				s.unbind(l)
			}
			s.log.Warn("DHCP decline: address in use by someone else", "mac", mac.String(), "addr", a)
		}
		return nil, nil

	case dhcpv4.MessageTypeRelease:
		if l := s.byMAC[mac.String()]; l != nil && l.Addr == ip4(req.ClientIPAddr) {
			s.unbind(l)
			s.log.Info("DHCP release", "mac", mac.String(), "addr", l.Addr)
		}
		return nil, nil

	case dhcpv4.MessageTypeInform:
		return s.reply(req, dhcpv4.MessageTypeAck, netip.Addr{})
	}
	return nil, nil
}

func ip4(ip net.IP) netip.Addr {
	if ip == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func (s *DHCPServer) inRange(a netip.Addr) bool {
	return a.Is4() && !a.Less(s.first) && !s.last.Less(a)
}

// usable tells an address of the range that may ever be leased: not the
// server's own, not the subnet's network or broadcast address.
func (s *DHCPServer) usable(a netip.Addr) bool {
	sub := s.iface.Addr.Masked()
	return a != s.iface.Addr.Addr() && a != sub.Addr() && a != broadcastOf(sub) && s.router != a
}

// free tells whether a may be given to mac now.
func (s *DHCPServer) free(a netip.Addr, mac net.HardwareAddr, now time.Time) bool {
	if !s.usable(a) {
		return false
	}
	if until, ok := s.declined[a]; ok {
		if now.Before(until) {
			return false
		}
		delete(s.declined, a)
	}
	l := s.byAddr[a]
	return l == nil || l.MAC.String() == mac.String() || now.After(l.Expires)
}

// allocate picks an address for mac: its current one, the one it asks
// for, or the first free one in the range.
func (s *DHCPServer) allocate(mac net.HardwareAddr, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if l := s.byMAC[mac.String()]; l != nil && s.free(l.Addr, mac, now) {
		return l.Addr, true
	}
	if requested.IsValid() && s.inRange(requested) && s.free(requested, mac, now) {
		return requested, true
	}
	for a := s.first; a.IsValid() && !s.last.Less(a); a = a.Next() {
		if s.free(a, mac, now) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (s *DHCPServer) bind(mac net.HardwareAddr, a netip.Addr, expires time.Time, offered bool, host string) {
	if old := s.byMAC[mac.String()]; old != nil {
		s.unbind(old)
	}
	if old := s.byAddr[a]; old != nil {
		s.unbind(old) // an expired lease of another client
	}
	l := &DHCPLease{MAC: append(net.HardwareAddr(nil), mac...), Addr: a, Expires: expires, Offered: offered, Hostname: host}
	s.byMAC[mac.String()] = l
	s.byAddr[a] = l
}

func (s *DHCPServer) unbind(l *DHCPLease) {
	delete(s.byMAC, l.MAC.String())
	if s.byAddr[l.Addr] == l {
		delete(s.byAddr, l.Addr)
	}
}

// reply builds an answer to req and where to send it (RFC 2131 4.1).
func (s *DHCPServer) reply(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, yours netip.Addr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	self := s.iface.Addr.Addr().AsSlice()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(self)),
	}
	if typ != dhcpv4.MessageTypeNak {
		sub := s.iface.Addr.Masked()
		mods = append(mods,
			dhcpv4.WithServerIP(self),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(sub.Bits(), 32))),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(broadcastOf(sub).AsSlice())),
		)
		if s.router.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(s.router.AsSlice())))
		}
	}
	if yours.IsValid() {
		mods = append(mods,
			dhcpv4.WithYourIP(yours.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.leaseTime)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(s.leaseTime/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(s.leaseTime*7/8)),
		)
		if s.boot != nil {
			mods = append(mods, s.boot(req, typ)...)
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		s.log.Warn("dhcp: build reply", "err", err)
		return nil, nil
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	switch gi, ci := ip4(req.GatewayIPAddr), ip4(req.ClientIPAddr); {
	case gi.IsValid():
		dest = &net.UDPAddr{IP: gi.AsSlice(), Port: dhcpv4.ServerPort}
	case ci.IsValid() && typ != dhcpv4.MessageTypeNak:
		dest = &net.UDPAddr{IP: ci.AsSlice(), Port: dhcpv4.ClientPort}
	}
	// Otherwise broadcast: the client has no address yet, and an ARP
	// entry for the unicast form would need a raw socket.
	return resp, dest
}

func broadcastOf(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// interfaceGateway returns the gateway of a default route through ifname,
// from the routing table of the calling thread's network namespace, or the
// zero Addr.
func interfaceGateway(ifname string) netip.Addr {
	// /proc/net is the process's namespace; thread-self is this thread's,
	// which differs when a caller switched namespaces (tests in a lab).
	f, err := os.Open("/proc/thread-self/net/route")
	if err != nil {
		return netip.Addr{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Iface Destination Gateway Flags … (hex, little-endian)
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != ifname || fields[1] != "00000000" {
			continue
		}
		b, err := hex.DecodeString(fields[2])
		if err != nil || len(b) != 4 {
			continue
		}
		gw := netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]})
		if !gw.IsUnspecified() {
			return gw
		}
	}
	return netip.Addr{}
}
