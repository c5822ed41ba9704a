package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// found is a server that answered our discovery.
type found struct {
	offer   protocol.Offer
	control netip.AddrPort // where to join
}

// discoveryBackoff is the wait between discovery rounds; the last value
// repeats.
var discoveryBackoff = [...]time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second}

// complainEvery is how often the client says plainly that nobody answers.
const complainEvery = 5 * time.Second

// discover asks for the session until a server answers or ctx ends, saying
// plainly while nobody does.
func discover(ctx context.Context, cfg *Config, ifi mcast.Interface, board *statusBoard) (found, error) {
	conn, err := mcast.DialDiscovery(ctx, ifi, cfg.DiscoveryTTL)
	if err != nil {
		return found{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	var targets []netip.AddrPort
	how := ""
	port := uint16(cfg.DiscoveryPort)
	if cfg.Server.IsValid() {
		targets = []netip.AddrPort{netip.AddrPortFrom(cfg.Server, port)}
		how = "asking " + cfg.Server.String() + " directly"
	} else {
		targets = []netip.AddrPort{
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), port),
			netip.AddrPortFrom(ifi.Broadcast(), port),
			netip.AddrPortFrom(protocol.DiscoveryGroup, port),
		}
		how = fmt.Sprintf("asking on %s by broadcast and multicast %s, port %d", ifi.Name, protocol.DiscoveryGroup, port)
	}

	var nonceBytes [8]byte
	rand.Read(nonceBytes[:])
	nonce := binary.BigEndian.Uint64(nonceBytes[:])
	var seal *protocol.Seal
	if cfg.Key != nil {
		seal = cfg.Key.DiscoverySeal(cfg.Session)
	}
	pkt := seal.Marshal(0, 0, &protocol.Discover{Nonce: nonce, Name: cfg.Session, MAC: ifi.MAC})

	heard := map[string]string{} // other sessions heard: name → server
	start := time.Now()
	lastComplaint := start
	buf := make([]byte, 2048)
	for round := 0; ; round++ {
		for _, t := range targets {
			if _, err := conn.WriteToUDPAddrPort(pkt, t); err != nil {
				cfg.Logger.Debug("discovery send failed", "to", t, "err", err)
			}
		}
		wait := discoveryBackoff[min(round, len(discoveryBackoff)-1)]
		deadline := time.Now().Add(wait)
		conn.SetReadDeadline(deadline)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return found{}, fmt.Errorf("discover session %q: %w", cfg.Session, ctx.Err())
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return found{}, fmt.Errorf("discover session %q: %w", cfg.Session, err)
			}
			// A NotServed hint is never sealed; an Offer must be when we
			// have a key.
			_, m, err := protocol.Unverified(buf[:n])
			if err != nil {
				cfg.Logger.Debug("ignoring bad discovery answer", "from", from, "err", err)
				continue
			}
			switch a := m.(type) {
			case *protocol.Offer:
				if a.Nonce != nonce || a.Name != cfg.Session {
					continue
				}
				if _, _, err := seal.Open(buf[:n]); err != nil {
					msg := fmt.Sprintf("ignoring the offer of %s for session %q: %v", from.Addr(), cfg.Session, offerError(err))
					board.update(func(s *Status) { s.Message = msg })
					if time.Since(lastComplaint) >= complainEvery {
						cfg.Logger.Warn(msg)
						lastComplaint = time.Now()
					}
					continue
				}
				if a.Sending {
					msg := fmt.Sprintf("session %q on %s is already sending; waiting for its next round", cfg.Session, from.Addr())
					board.update(func(s *Status) { s.Message = msg })
					if time.Since(lastComplaint) >= complainEvery {
						cfg.Logger.Warn(msg)
						lastComplaint = time.Now()
					}
					continue
				}
				cfg.Logger.Info("server answers", "session", a.Name, "server", from.Addr(), "image_bytes", a.ImageSize, "clients", a.Clients)
				return found{offer: *a, control: netip.AddrPortFrom(from.Addr().Unmap(), a.ControlPort)}, nil
			case *protocol.NotServed:
				if a.Nonce != nonce {
					continue
				}
				if a.Served == cfg.Session && a.Reason != "" {
					// Our session, but the server would not offer it.
					msg := fmt.Sprintf("server %s serves session %q but refuses this client: %s", from.Addr(), cfg.Session, a.Reason)
					board.update(func(s *Status) { s.Message = msg })
					if time.Since(lastComplaint) >= complainEvery {
						cfg.Logger.Warn(msg)
						lastComplaint = time.Now()
					}
					continue
				}
				heard[a.Served] = from.Addr().Unmap().String()
			}
		}
		if time.Since(lastComplaint) >= complainEvery {
			lastComplaint = time.Now()
			msg := noAnswerMessage(cfg.Session, how, time.Since(start), heard)
			cfg.Logger.Warn(msg)
			board.update(func(s *Status) { s.Message = msg })
		}
	}
}

// noAnswerMessage says, for a person, that no server serves the session.
func noAnswerMessage(session, how string, waited time.Duration, heard map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "no server answers session %q yet (%s, %s so far); still trying", session, how, waited.Round(time.Second))
	if len(heard) > 0 {
		names := make([]string, 0, len(heard))
		for n, srv := range heard {
			names = append(names, fmt.Sprintf("%q at %s", n, srv))
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "; servers heard serve other sessions: %s — is the session name right?", strings.Join(names, ", "))
	} else {
		b.WriteString("; is the server running, and is the session name right?")
	}
	return b.String()
}

// offerError explains why an offer was not accepted.
func offerError(err error) string {
	switch {
	case errors.Is(err, protocol.ErrUnsealed):
		return "the server has no key but this client has one (start the server with the same --key-file)"
	case errors.Is(err, protocol.ErrSealed):
		return "the server uses a key and this client has none (give --key-file, or shoal.key= at boot)"
	case errors.Is(err, protocol.ErrForged):
		return "its key is not this client's key"
	}
	return err.Error()
}
