package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/shoal-lab/shoal/internal/ctxtime"
)

// minRenewWait keeps a broken or hostile lease (a lease time of seconds)
// from turning renewal into a busy loop.
const minRenewWait = 2 * time.Second

// leaseTimes are the renewal schedule of one lease, from its ACK (RFC 2131
// 4.4.5): renew at T1, expire at the lease time.
type leaseTimes struct {
	got            time.Time // when the ACK came
	renew, expires time.Time
}

func scheduleOf(l *nclient4.Lease) leaseTimes {
	total := l.ACK.IPAddressLeaseTime(0)
	t1 := l.ACK.IPAddressRenewalTime(total / 2)
	if t1 <= 0 || t1 > total {
		t1 = total / 2
	}
	return leaseTimes{got: l.CreationTime, renew: l.CreationTime.Add(t1), expires: l.CreationTime.Add(total)}
}

// nextTry is when to ask again after a failed renewal at now: halfway to
// the expiry, as RFC 2131 suggests, and once per renewal period after the
// lease has run out.
func (t leaseTimes) nextTry(now time.Time) time.Time {
	wait := t.expires.Sub(now) / 2
	if wait <= 0 {
		wait = t.renew.Sub(t.got)
	}
	return now.Add(max(wait, minRenewWait))
}

// KeepLease renews the DHCP lease of info until ctx ends, so that a
// session longer than the lease does not lose its address to another
// machine. The address stays configured whatever the DHCP server says: a
// refused or expired lease is reported on the console (say) and the
// session goes on; cutting the network mid-transfer would only lose the
// disk's progress. With a static address it returns at once.
//
// It opens its DHCP socket for each renewal only, in the calling thread's
// network namespace, and blocks: run it on its own goroutine.
func KeepLease(ctx context.Context, info NetInfo, log *slog.Logger, say func(string)) {
	if info.lease == nil || info.LeaseTime <= 0 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if say == nil {
		say = func(string) {}
	}
	lease := info.lease
	times := scheduleOf(lease)
	next := times.renew
	warnedExpiry := false
	for {
		if err := ctxtime.Sleep(ctx, time.Until(next)); err != nil {
			return
		}
		renewed, err := renew(ctx, info.Iface, lease)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		var nak *nclient4.ErrNak
		switch {
		case err == nil && !renewed.ACK.YourIPAddr.Equal(lease.ACK.YourIPAddr):
			say(fmt.Sprintf("DHCP server %s renewed with another address (%s, not %s): keeping %s for this session",
				info.DHCPServer, renewed.ACK.YourIPAddr, lease.ACK.YourIPAddr, info.Addr.Addr()))
			lease, times = renewed, scheduleOf(renewed)
			next = times.renew
		case err == nil:
			lease, times, warnedExpiry = renewed, scheduleOf(renewed), false
			next = times.renew
			log.Info("DHCP lease renewed", "iface", info.Iface, "addr", info.Addr.Addr(), "for", times.expires.Sub(times.got))
		case errors.As(err, &nak):
			say(fmt.Sprintf("DHCP server %s refused to renew %s (NAK): the session keeps the address; check the DHCP server's range and leases",
				info.DHCPServer, info.Addr.Addr()))
			next = times.nextTry(now)
		default:
			log.Warn("DHCP renewal failed", "iface", info.Iface, "err", err, "lease expires", times.expires.Format(time.TimeOnly))
			if now.After(times.expires) && !warnedExpiry {
				say(fmt.Sprintf("DHCP lease of %s expired at %s and the DHCP server does not answer: keeping the address for this session (another machine could be given it)",
					info.Addr.Addr(), times.expires.Format(time.TimeOnly)))
				warnedExpiry = true
			}
			next = times.nextTry(now)
		}
	}
}

// renew asks the lease's server to extend it, on a DHCP socket opened for
// this one exchange.
func renew(ctx context.Context, iface string, lease *nclient4.Lease) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2)) // 2 s, then 4 s
	if err != nil {
		return nil, fmt.Errorf("open DHCP client on %s: %w", iface, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.Renew(ctx, lease, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("shoal")))
}
