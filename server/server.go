package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	rand2 "math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/ctxtime"
	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// State is where the session is.
type State string

// Session states.
const (
	StateWaiting  State = "waiting"  // accepting clients
	StateSending  State = "sending"  // data flows
	StateFinished State = "finished" // every client has a result
)

// Server runs one session. Create it with New and run it with Run; it is
// not reusable after Run returns.
type Server struct {
	cfg       Config
	log       *slog.Logger
	manifest  *imaging.Manifest
	wire      []byte // the manifest's encoding, sent to every client
	sessionID uint64
	group     netip.Addr // the multicast group picked for the session
	ifi       mcast.Interface
	// dest is where the stream goes in multicast and broadcast mode: the
	// group, or the broadcast address after a fallback. Guarded by mu.
	dest    netip.Addr
	mode    Mode // guarded by mu: a fallback changes it
	payload int

	// Seals of a keyed session; all nil without a key.
	discSeal *protocol.Seal
	keys     *protocol.SessionKeys
	dataSeal *protocol.Seal

	startNow chan struct{}
	joined   chan struct{} // a client joined (for the start criteria)
	wake     chan struct{} // the sender has something new to look at

	mu       sync.Mutex // guards everything below
	state    State
	clients  []*client // in join order
	nextID   uint32
	lastJoin time.Time
	started  time.Time
	finished time.Time
	counters Counters

	repairs *repairQueue
	// need marks the chunks some client lacks; set when sending begins.
	need []bool
}

// Counters are the sender's totals.
type Counters struct {
	DataPackets   uint64 // first transmissions
	RepairPackets uint64 // retransmissions asked for by NACKs, parity included
	ParityPackets uint64 // of which Reed-Solomon parity shards
	PayloadBytes  uint64 // chunk bytes sent, repairs included
	WireBytes     uint64 // bytes of the datagrams sent (UDP payload + IP/UDP headers)
	Beacons       uint64
	NackRanges    uint64 // NACK ranges received
	SendStalls    uint64 // times the kernel's queue was full (ENOBUFS)
	Rate          int64  // current send rate in bits per second
}

// New checks the configuration and prepares a session.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := c.Source.Manifest()
	wire, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var idb [8]byte
	for binary.BigEndian.Uint64(idb[:]) == 0 {
		rand.Read(idb[:])
	}
	var seed [32]byte
	rand.Read(seed[:])
	s := &Server{
		cfg: c, log: c.Logger, manifest: m, wire: wire,
		sessionID: binary.BigEndian.Uint64(idb[:]),
		group:     c.Groups.Pick(rand2.New(rand2.NewChaCha8(seed))),
		payload:   c.payloadSize(),
		startNow:  make(chan struct{}, 1),
		joined:    make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		state:     StateWaiting,
		nextID:    1,
		repairs:   newRepairQueue(),
	}
	if c.Key != nil {
		s.discSeal = c.Key.DiscoverySeal(c.Session)
		s.keys = c.Key.Session(c.Session, s.sessionID, c.Encrypt)
		s.dataSeal = s.keys.Data()
	}
	return s, nil
}

// StartNow starts sending as soon as at least one client has joined: the
// operator's "send now".
func (s *Server) StartNow() {
	select {
	case s.startNow <- struct{}{}:
	default:
	}
}

func (s *Server) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Group is the multicast group the data is sent to.
func (s *Server) Group() netip.Addr { return s.group }

// Run serves the session until every client that joined has a result, or
// ctx ends (which aborts the session). It returns the summary in both cases;
// err is non-nil if the session could not run or was aborted.
func (s *Server) Run(ctx context.Context) (*Summary, error) {
	ifi, err := mcast.Pick(s.cfg.Interface)
	if err != nil {
		return nil, err
	}
	s.ifi = ifi
	s.mu.Lock()
	s.mode = s.cfg.Mode
	s.dest = s.group
	if s.mode == ModeBroadcast {
		s.dest = ifi.Broadcast()
	}
	s.mu.Unlock()
	disc, err := mcast.ListenDiscovery(ctx, ifi, s.cfg.DiscoveryPort, protocol.DiscoveryGroup)
	if err != nil {
		return nil, err
	}
	defer disc.Close()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp4", netip.AddrPortFrom(ifi.Addr.Addr(), uint16(s.cfg.ControlPort)).String())
	if err != nil {
		return nil, fmt.Errorf("listen for clients on %s port %d: %w", ifi, s.cfg.ControlPort, err)
	}
	defer ln.Close()
	data, err := mcast.OpenSender(ctx, ifi, s.cfg.TTL, 8<<20)
	if err != nil {
		return nil, err
	}
	defer data.Close()

	controlPort := ln.Addr().(*net.TCPAddr).Port
	s.log.Info("session open", "session", s.cfg.Session, "image", s.cfg.ImageName, "mode", s.cfg.Mode,
		"bytes", s.manifest.ImageSize, "wire_bytes", s.manifest.WireBytes(), "interface", ifi.String(),
		"group", s.group, "port", s.cfg.DataPort, "control_port", controlPort, "ttl", s.cfg.TTL)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		disc.Close()
		s.closeClients(protocol.CloseAborted, "the server stopped")
		wg.Wait()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.answerDiscovery(runCtx, disc, controlPort)
	}()
	go func() {
		defer wg.Done()
		s.acceptClients(runCtx, ln, &wg)
	}()

	snd := newSender(s, data)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.beaconWhileWaiting(runCtx, snd)
	}()
	if err := s.waitForStart(runCtx); err != nil {
		return s.summary(), fmt.Errorf("session %q: %w", s.cfg.Session, err)
	}
	snd.dests = s.destinations()

	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchClients(runCtx)
	}()
	err = snd.run(runCtx)
	s.mu.Lock()
	s.state = StateFinished
	s.finished = time.Now()
	s.mu.Unlock()
	if err != nil {
		s.failActive(fmt.Sprintf("session aborted: %v", err))
		return s.summary(), fmt.Errorf("session %q: %w", s.cfg.Session, err)
	}
	s.closeClients(protocol.CloseDone, "session finished")
	return s.summary(), nil
}

// answerDiscovery answers Discover packets until ctx ends.
func (s *Server) answerDiscovery(ctx context.Context, conn *net.UDPConn, controlPort int) {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 2048)
	var out []byte
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("discovery socket failed", "err", err)
			}
			return
		}
		answer, seal := s.discoveryAnswer(buf[:n], controlPort)
		if answer == nil {
			continue
		}
		out = seal.Append(out[:0], 0, 0, answer)
		if _, err := conn.WriteToUDPAddrPort(out, from); err != nil {
			s.log.Debug("discovery answer failed", "to", from, "err", err)
		}
	}
}

// discoveryAnswer decides what to answer to one discovery packet, and with
// which seal: an Offer for our session (sealed in a keyed session, and only
// to a client that proved the key), a NotServed hint otherwise.
func (s *Server) discoveryAnswer(pkt []byte, controlPort int) (protocol.Message, *protocol.Seal) {
	h, m, err := protocol.Unverified(pkt)
	if err != nil {
		s.log.Debug("ignoring bad discovery packet", "err", err)
		return nil, nil
	}
	d, ok := m.(*protocol.Discover)
	if !ok {
		return nil, nil
	}
	if d.Name != s.cfg.Session {
		return &protocol.NotServed{Nonce: d.Nonce, Served: s.cfg.Session}, nil
	}
	if s.discSeal != nil {
		if h.Flags&protocol.FlagAuth == 0 {
			return &protocol.NotServed{Nonce: d.Nonce, Served: s.cfg.Session, Reason: reasonNeedsKey}, nil
		}
		if _, _, err := s.discSeal.Open(append([]byte(nil), pkt...)); err != nil {
			return &protocol.NotServed{Nonce: d.Nonce, Served: s.cfg.Session, Reason: reasonWrongKey}, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &protocol.Offer{
		Nonce: d.Nonce, Name: s.cfg.Session, SessionID: s.sessionID, ControlPort: uint16(controlPort),
		ImageSize: uint64(s.manifest.ImageSize), Sending: s.state != StateWaiting,
		Clients: uint16(min(len(s.clients), 0xffff)), Encrypted: s.cfg.Encrypt,
	}, s.discSeal
}

// Reasons given to clients whose key does not fit.
const (
	reasonNeedsKey = "the session needs a key: give the client the server's key (--key-file, or shoal.key= at boot)"
	reasonWrongKey = "the client's key is not the server's key"
	reasonNoKey    = "the client has a key but this session has none: start the server with --key-file, or the client without"
)

// waitForStart returns when a start criterion is met with at least one
// client joined.
func (s *Server) waitForStart(ctx context.Context) error {
	var startAt <-chan time.Time
	if !s.cfg.StartAt.IsZero() {
		t := time.NewTimer(time.Until(s.cfg.StartAt))
		defer t.Stop()
		startAt = t.C
	}
	afterJoin := time.NewTimer(time.Hour)
	afterJoin.Stop()
	defer afterJoin.Stop()
	reason := "" // why a criterion other than the client count fired
	for {
		n := s.joinedCount()
		switch {
		case n > 0 && reason != "":
			if err := s.checkMulticast(ctx); err != nil {
				return err
			}
			return s.begin(reason, s.joinedCount())
		case s.cfg.MinClients > 0 && n >= s.cfg.MinClients:
			if err := s.checkMulticast(ctx); err != nil {
				return err
			}
			return s.begin(fmt.Sprintf("%d clients joined", n), s.joinedCount())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.joined:
			if s.cfg.WaitAfterJoin > 0 && s.joinedCount() > 0 {
				afterJoin.Reset(s.cfg.WaitAfterJoin)
			}
		case <-afterJoin.C:
			if s.joinedCount() > 0 {
				reason = fmt.Sprintf("%s after the last join", s.cfg.WaitAfterJoin)
			}
		case <-startAt:
			reason = "start time " + s.cfg.StartAt.Format("15:04:05") + " reached"
			if s.joinedCount() == 0 {
				s.log.Warn("start time reached but no client has joined; starting when the first one does")
			}
		case <-s.startNow:
			if s.joinedCount() == 0 {
				s.log.Warn("send now ignored: no client has joined yet")
				continue
			}
			reason = "operator said send now"
		}
	}
}

func (s *Server) joinedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.clients {
		if c.state == ClientJoined {
			n++
		}
	}
	return n
}

// destinations lists where data packets go: the group (or broadcast
// address), or in unicast mode every client still taking part.
func (s *Server) destinations() []*net.UDPAddr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode != ModeUnicast {
		return []*net.UDPAddr{{IP: s.dest.AsSlice(), Port: s.cfg.DataPort}}
	}
	var out []*net.UDPAddr
	for _, c := range s.activeLocked() {
		out = append(out, &net.UDPAddr{IP: c.addr.AsSlice(), Port: s.cfg.DataPort})
	}
	return out
}

// streamAddress is where a client receives the stream, for its Accept.
func (s *Server) streamAddress(peer netip.Addr) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == ModeUnicast {
		return peer
	}
	return s.dest
}

// checkMulticast falls back to broadcast when a client cannot hear the
// multicast group: a client that has heard nothing of it FallbackAfter
// after joining counts as deaf. Clients that heard the group's beacons pass
// at once.
func (s *Server) checkMulticast(ctx context.Context) error {
	if s.cfg.Mode != ModeMulticast || s.cfg.FallbackAfter < 0 {
		return nil
	}
	for {
		s.mu.Lock()
		var wait time.Duration
		var deaf []*client
		for _, c := range s.activeLocked() {
			if c.progress.Heard > 0 {
				continue
			}
			if age := time.Since(c.joined); age < s.cfg.FallbackAfter {
				// Not heard yet, but it may still: look again soon.
				wait = min(max(wait, s.cfg.FallbackAfter-age), 100*time.Millisecond)
			} else {
				deaf = append(deaf, c)
			}
		}
		s.mu.Unlock()
		if wait > 0 {
			if err := ctxtime.Sleep(ctx, wait); err != nil {
				return err
			}
			continue
		}
		if len(deaf) == 0 {
			return nil
		}
		return s.fallBack(deaf)
	}
}

// fallBack moves the stream from the multicast group to the broadcast
// address and tells every client.
func (s *Server) fallBack(deaf []*client) error {
	bcast := s.ifi.Broadcast()
	var names []string
	s.mu.Lock()
	for _, c := range deaf {
		names = append(names, fmt.Sprintf("%d (%s)", c.id, c.addr))
	}
	s.mode, s.dest = ModeBroadcast, bcast
	clients := s.activeLocked()
	s.mu.Unlock()
	why := fmt.Sprintf("client(s) %s heard nothing of multicast group %s within %s — an IGMP-snooping switch without a querier is the common cause; falling back to broadcast to %s",
		strings.Join(names, ", "), s.group, s.cfg.FallbackAfter, bcast)
	s.log.Warn("multicast fallback", "why", why)
	s.emit(Event{Kind: EventFallback, Message: why})
	for _, c := range clients {
		c.send(s, &protocol.Redirect{Group: bcast, Port: uint16(s.cfg.DataPort), Why: why})
	}
	// Give the clients a moment to move before data flows.
	time.Sleep(300 * time.Millisecond)
	return nil
}

// begin moves the session to sending and tells every client.
func (s *Server) begin(reason string, n int) error {
	s.mu.Lock()
	s.state = StateSending
	s.started = time.Now()
	clients := s.activeLocked()
	for _, c := range clients {
		c.state = ClientReceiving
		c.lastHeard = s.started // the clock for dead clients starts now
	}
	// Resuming clients may already have part of the image: send only what
	// someone lacks.
	s.need = make([]bool, len(s.manifest.Chunks))
	for i := range s.need {
		for _, c := range clients {
			if !c.has(i) {
				s.need[i] = true
				break
			}
		}
	}
	rate := s.counters.Rate
	s.mu.Unlock()
	s.log.Info("sending", "reason", reason, "clients", n, "mode", s.mode, "to", s.dest, "port", s.cfg.DataPort)
	s.emit(Event{Kind: EventStarted, Message: reason})
	for _, c := range clients {
		c.send(s, &protocol.Start{Clients: uint16(min(n, 0xffff)), Rate: uint64(rate)})
	}
	return nil
}

// activeLocked lists clients that still take part. s.mu must be held.
func (s *Server) activeLocked() []*client {
	var out []*client
	for _, c := range s.clients {
		if c.state == ClientJoined || c.state == ClientReceiving || c.state == ClientVerifying {
			out = append(out, c)
		}
	}
	return out
}

// closeClients sends Close to every client still connected and closes
// the connections.
func (s *Server) closeClients(code uint8, reason string) {
	s.mu.Lock()
	clients := append([]*client(nil), s.clients...)
	s.mu.Unlock()
	for _, c := range clients {
		c.close(s, code, reason)
	}
}

// failActive marks every client without a result as failed.
func (s *Server) failActive(reason string) {
	s.mu.Lock()
	var failed []*client
	for _, c := range s.activeLocked() {
		c.fail(reason)
		failed = append(failed, c)
	}
	s.mu.Unlock()
	for _, c := range failed {
		s.emit(Event{Kind: EventFailed, Client: c.info(), Message: reason})
	}
}

// Status is a snapshot of the session for displays and the status API.
type Status struct {
	Session    string
	State      State
	Mode       Mode
	Group      netip.Addr // where the stream goes (the broadcast address after a fallback)
	ImageBytes int64
	WireBytes  int64
	Started    time.Time
	Finished   time.Time
	Counters   Counters
	Clients    []ClientInfo
}

// Status returns a snapshot of the session.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		Session: s.cfg.Session, State: s.state, Group: s.dest, Mode: s.mode,
		ImageBytes: s.manifest.ImageSize, WireBytes: s.manifest.WireBytes(),
		Started: s.started, Finished: s.finished, Counters: s.counters,
	}
	for _, c := range s.clients {
		st.Clients = append(st.Clients, c.info())
	}
	return st
}

// summary builds the final report.
func (s *Server) summary() *Summary {
	st := s.Status()
	sum := &Summary{
		Session: s.cfg.Session, Image: s.cfg.ImageName, ImageBytes: s.manifest.ImageSize,
		ImageSHA256: s.manifest.ImageSHA256, Started: st.Started, Counters: st.Counters,
	}
	s.mu.Lock()
	sum.Finished = s.finished
	s.mu.Unlock()
	for _, c := range st.Clients {
		if c.State == ClientLeft {
			continue
		}
		sum.Clients = append(sum.Clients, c)
	}
	sort.SliceStable(sum.Clients, func(i, j int) bool { return sum.Clients[i].ID < sum.Clients[j].ID })
	return sum
}

func (s *Server) emit(ev Event) {
	ev.Time = time.Now()
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// ErrNoClients means the session ended without any client.
var ErrNoClients = errors.New("no clients")

// StartStatus describes, for people, what the session waits for before it
// starts: each configured criterion and how close it is.
func (s *Server) StartStatus() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateWaiting {
		return nil
	}
	joined := 0
	for _, c := range s.clients {
		if c.state == ClientJoined {
			joined++
		}
	}
	var out []string
	if s.cfg.MinClients > 0 {
		out = append(out, fmt.Sprintf("%d of %d clients joined", joined, s.cfg.MinClients))
	}
	if s.cfg.WaitAfterJoin > 0 {
		if joined == 0 || s.lastJoin.IsZero() {
			out = append(out, fmt.Sprintf("starts %s after the last join (no client yet)", s.cfg.WaitAfterJoin))
		} else {
			left := time.Until(s.lastJoin.Add(s.cfg.WaitAfterJoin)).Round(time.Second)
			out = append(out, fmt.Sprintf("starts in %s unless another client joins", max(left, 0)))
		}
	}
	if !s.cfg.StartAt.IsZero() {
		out = append(out, fmt.Sprintf("starts at %s (in %s)", s.cfg.StartAt.Format("15:04:05"), max(time.Until(s.cfg.StartAt), 0).Round(time.Second)))
	}
	return out
}

// DropClient drops a client by ID at the operator's request.
func (s *Server) DropClient(id uint32) error {
	s.mu.Lock()
	var c *client
	for _, cc := range s.clients {
		if cc.id == id {
			c = cc
		}
	}
	if c == nil {
		s.mu.Unlock()
		return fmt.Errorf("no client %d", id)
	}
	if c.state.Final() {
		s.mu.Unlock()
		return fmt.Errorf("client %d already %s", id, c.state)
	}
	if c.state == ClientJoined {
		c.state = ClientLeft
	} else {
		c.state = ClientDropped
	}
	c.err, c.ended = "dropped by the operator", time.Now()
	s.mu.Unlock()
	s.dropped(c)
	return nil
}
