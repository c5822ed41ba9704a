package server

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/shoal-lab/shoal/internal/mcast"
)

func testDHCPServer(t *testing.T, rng string) *DHCPServer {
	t.Helper()
	ifi := mcast.Interface{Name: "eth0", Index: 2, MAC: net.HardwareAddr{2, 0, 10, 77, 0, 1}, Addr: netip.MustParsePrefix("10.77.0.1/24")}
	s, err := newDHCPServer(DHCPConfig{Range: rng, Router: netip.MustParseAddr("10.77.0.254")}, ifi)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mac(n byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, n} }

// dora runs discover, offer, request, ack for a client against s.
func dora(t *testing.T, s *DHCPServer, hw net.HardwareAddr) (offer, ack *dhcpv4.DHCPv4) {
	t.Helper()
	disc, err := dhcpv4.NewDiscovery(hw)
	if err != nil {
		t.Fatal(err)
	}
	offer, dest := s.handle(disc)
	if offer == nil {
		return nil, nil
	}
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !dest.IP.Equal(net.IPv4bcast) || dest.Port != 68 {
		t.Fatalf("answer to discover: %s to %v", offer.MessageType(), dest)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack, _ = s.handle(req)
	if ack == nil {
		t.Fatal("no answer to request")
	}
	return offer, ack
}

func TestDHCPLeases(t *testing.T) {
	s := testDHCPServer(t, "10.77.0.100-10.77.0.102")
	_, ack := dora(t, s, mac(1))
	if ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("got %s, want ACK", ack.MessageType())
	}
	if got := ip4(ack.YourIPAddr); got != netip.MustParseAddr("10.77.0.100") {
		t.Errorf("first lease %v", got)
	}
	if ones, _ := ack.SubnetMask().Size(); ones != 24 {
		t.Errorf("mask /%d", ones)
	}
	if r := ack.Router(); len(r) != 1 || !r[0].Equal(net.ParseIP("10.77.0.254")) {
		t.Errorf("router %v", r)
	}
	if sid := ack.ServerIdentifier(); !sid.Equal(net.ParseIP("10.77.0.1")) {
		t.Errorf("server id %v", sid)
	}
	if lt := ack.IPAddressLeaseTime(0); lt != DefaultLeaseTime {
		t.Errorf("lease time %v", lt)
	}

	// The same client gets the same address again; another gets the next.
	if _, again := dora(t, s, mac(1)); ip4(again.YourIPAddr) != netip.MustParseAddr("10.77.0.100") {
		t.Errorf("same client got %v", again.YourIPAddr)
	}
	_, ack2 := dora(t, s, mac(2))
	if got := ip4(ack2.YourIPAddr); got != netip.MustParseAddr("10.77.0.101") {
		t.Errorf("second client got %v", got)
	}
	_, ack3 := dora(t, s, mac(3))
	if got := ip4(ack3.YourIPAddr); got != netip.MustParseAddr("10.77.0.102") {
		t.Errorf("third client got %v", got)
	}
	// The range is full: a fourth gets no offer.
	if offer, _ := dora(t, s, mac(4)); offer != nil {
		t.Errorf("fourth client got an offer of %v from a full range", offer.YourIPAddr)
	}
	// Once the second's lease expires, the fourth gets its address.
	s.now = func() time.Time { return time.Now().Add(2 * DefaultLeaseTime) }
	if _, ack4 := dora(t, s, mac(4)); ack4 == nil || ip4(ack4.YourIPAddr) != netip.MustParseAddr("10.77.0.100") {
		t.Errorf("after expiry the fourth client got %v", ack4)
	}
	if n := len(s.Leases()); n != 3 { // the first client's expired lease went to the fourth
		t.Errorf("%d leases, want 3", n)
	}
}

func TestDHCPRequests(t *testing.T) {
	tests := []struct {
		name      string
		requested string // option 50
		serverID  string // option 54
		want      dhcpv4.MessageType
	}{
		{name: "init-reboot with an address in range", requested: "10.77.0.150", want: dhcpv4.MessageTypeAck},
		{name: "init-reboot with an address of another subnet", requested: "192.168.1.7", want: dhcpv4.MessageTypeNak},
		{name: "selecting another server", requested: "10.77.0.150", serverID: "10.77.0.9"},
		{name: "selecting us with an address outside the range", requested: "10.77.0.20", serverID: "10.77.0.1", want: dhcpv4.MessageTypeNak},
		{name: "init-reboot with an address of this subnet outside the range", requested: "10.77.0.20"},
		{name: "the server's own address", requested: "10.77.0.1", serverID: "10.77.0.1", want: dhcpv4.MessageTypeNak},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testDHCPServer(t, "10.77.0.100-10.77.0.200")
			mods := []dhcpv4.Modifier{
				dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(tt.requested))),
			}
			if tt.serverID != "" {
				mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(tt.serverID))))
			}
			req, err := dhcpv4.New(append(mods, dhcpv4.WithHwAddr(mac(9)))...)
			if err != nil {
				t.Fatal(err)
			}
			resp, _ := s.handle(req)
			switch {
			case tt.want == dhcpv4.MessageTypeNone && resp != nil:
				t.Errorf("answered %s, want silence", resp.MessageType())
			case tt.want != dhcpv4.MessageTypeNone && (resp == nil || resp.MessageType() != tt.want):
				t.Errorf("answered %v, want %s", resp, tt.want)
			}
		})
	}
}

func TestDHCPDeclineAndRelease(t *testing.T) {
	s := testDHCPServer(t, "10.77.0.100-10.77.0.101")
	_, ack := dora(t, s, mac(1))
	decl, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac(1)),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack.YourIPAddr)))
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.handle(decl); resp != nil {
		t.Fatalf("answered a decline with %s", resp.MessageType())
	}
	// The declined address is not offered again.
	if _, again := dora(t, s, mac(1)); ip4(again.YourIPAddr) != netip.MustParseAddr("10.77.0.101") {
		t.Errorf("after decline got %v", again.YourIPAddr)
	}
	rel, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(mac(1)),
		dhcpv4.WithClientIP(net.ParseIP("10.77.0.101")))
	if err != nil {
		t.Fatal(err)
	}
	s.handle(rel)
	if n := len(s.Leases()); n != 0 {
		t.Errorf("%d leases after release", n)
	}
}

func TestParseDHCPRange(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		size int
	}{
		{"10.77.0.100-10.77.0.200", true, 101},
		{" 10.0.0.5 - 10.0.0.5 ", true, 1},
		{"10.0.0.9-10.0.0.1", false, 0},
		{"10.0.0.1", false, 0},
		{"::1-::2", false, 0},
		{"a-b", false, 0},
	}
	for _, tt := range tests {
		first, last, err := ParseDHCPRange(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseDHCPRange(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok {
			n := 1
			for a := first; a != last; a = a.Next() {
				n++
			}
			if n != tt.size {
				t.Errorf("ParseDHCPRange(%q) holds %d addresses, want %d", tt.in, n, tt.size)
			}
		}
	}
}

func TestNewDHCPServerRangeOutsideSubnet(t *testing.T) {
	ifi := mcast.Interface{Name: "eth0", Addr: netip.MustParsePrefix("10.77.0.1/24")}
	if _, err := newDHCPServer(DHCPConfig{Range: "10.78.0.1-10.78.0.9"}, ifi); err == nil {
		t.Error("a range outside the subnet was accepted")
	}
}
