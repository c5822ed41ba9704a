package mcast

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestBroadcast(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"10.77.0.5/24", "10.77.0.255"},
		{"192.168.1.130/25", "192.168.1.255"},
		{"172.16.9.9/16", "172.16.255.255"},
		{"10.0.0.1/32", "10.0.0.1"},
	}
	for _, tt := range tests {
		i := Interface{Addr: netip.MustParsePrefix(tt.prefix)}
		if got := i.Broadcast().String(); got != tt.want {
			t.Errorf("Broadcast(%s) = %s, want %s", tt.prefix, got, tt.want)
		}
	}
}

func TestPickUnknownInterface(t *testing.T) {
	_, err := Pick("no-such-if0")
	if err == nil {
		t.Fatal("picked an interface that does not exist")
	}
	if errors.Is(err, ErrNoInterface) {
		t.Errorf("a missing interface is reported as ErrNoInterface: %v", err)
	}
	if got := err.Error(); got == "" || !strings.Contains(got, "no-such-if0") {
		t.Errorf("error %q does not name the interface", got)
	}
	// Loopback has an IPv4 address, so it can be picked by name.
	if i, err := Pick("lo"); err != nil || !i.Addr.Addr().IsLoopback() {
		t.Errorf("Pick(lo) = %v, %v", i, err)
	}
}
