package boot

import (
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

func TestLeaseSchedule(t *testing.T) {
	got := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		opts       []dhcpv4.Option
		renew, exp time.Duration
		failAt     time.Duration // a renewal that fails at got+failAt
		retry      time.Duration // is tried again at got+retry
	}{
		{"T1 from the server", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Hour), dhcpv4.OptRenewTimeValue(20 * time.Minute)},
			20 * time.Minute, time.Hour, 20 * time.Minute, 40 * time.Minute},
		{"no T1: half the lease", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Hour)},
			30 * time.Minute, time.Hour, 50 * time.Minute, 55 * time.Minute},
		{"T1 beyond the lease: half", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Hour), dhcpv4.OptRenewTimeValue(2 * time.Hour)},
			30 * time.Minute, time.Hour, 30 * time.Minute, 45 * time.Minute},
		{"expired: once per renewal period", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Hour)},
			30 * time.Minute, time.Hour, 2 * time.Hour, 2*time.Hour + 30*time.Minute},
		{"near the end: never busy", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Hour)},
			30 * time.Minute, time.Hour, time.Hour - time.Second, time.Hour - time.Second + minRenewWait},
		{"a lease of 1 s", []dhcpv4.Option{dhcpv4.OptIPAddressLeaseTime(time.Second)},
			500 * time.Millisecond, time.Second, 2 * time.Second, 2*time.Second + minRenewWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tt.opts {
				ack.UpdateOption(o)
			}
			s := scheduleOf(&nclient4.Lease{ACK: ack, CreationTime: got})
			if s.renew != got.Add(tt.renew) || s.expires != got.Add(tt.exp) {
				t.Errorf("renew at +%s, expires +%s; want +%s, +%s", s.renew.Sub(got), s.expires.Sub(got), tt.renew, tt.exp)
			}
			if next := s.nextTry(got.Add(tt.failAt)); next != got.Add(tt.retry) {
				t.Errorf("after a failure at +%s: next at +%s, want +%s", tt.failAt, next.Sub(got), tt.retry)
			}
		})
	}
}
