package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// ClientState is where one client is.
type ClientState string

// Client states.
const (
	ClientJoined    ClientState = "joined"    // waiting for the start
	ClientReceiving ClientState = "receiving" // the session is sending
	ClientVerifying ClientState = "verifying" // all written, reading back
	ClientDone      ClientState = "done"      // verified good
	ClientFailed    ClientState = "failed"    // reported or caused a failure
	ClientDropped   ClientState = "dropped"   // the server gave up on it
	ClientLeft      ClientState = "left"      // disconnected before the start
)

// Final reports whether the state is a result.
func (s ClientState) Final() bool {
	return s == ClientDone || s == ClientFailed || s == ClientDropped || s == ClientLeft
}

// ClientInfo describes one client for displays and the summary.
type ClientInfo struct {
	ID         uint32
	MAC        string
	Addr       netip.Addr
	Hostname   string
	Disk       string
	DiskSize   uint64
	State      ClientState
	Joined     time.Time
	LastHeard  time.Time
	Progress   protocol.Progress
	NackRanges uint64
	// Result, set once State is final.
	OK       bool
	Verified bool // the client read its disk back
	Bytes    uint64
	SHA256   [32]byte
	Elapsed  time.Duration
	BadChunk int // -1 if none
	Error    string
	Ended    time.Time
}

// client is the server's side of one client.
type client struct {
	id   uint32
	addr netip.Addr
	join protocol.Join
	have []uint64 // chunks a resuming client already has; nil if none

	wmu      sync.Mutex     // serializes writes; guards the three below
	conn     net.Conn       // nil while the client is disconnected
	toClient *protocol.Seal // nil without a key
	closed   bool           // said goodbye: no more writes

	// guarded by Server.mu
	lostConn  string // why the control connection was lost, while it is
	state     ClientState
	joined    time.Time
	lastHeard time.Time
	progress  protocol.Progress
	nacks     uint64
	report    *protocol.Report
	err       string
	ended     time.Time
}

func (c *client) info() ClientInfo {
	ci := ClientInfo{
		ID: c.id, MAC: net.HardwareAddr(c.join.MAC).String(), Addr: c.addr, Hostname: c.join.Hostname,
		Disk: c.join.Disk, DiskSize: c.join.DiskSize, State: c.state, Joined: c.joined, LastHeard: c.lastHeard,
		Progress: c.progress, NackRanges: c.nacks, BadChunk: -1, Error: c.err, Ended: c.ended,
	}
	if r := c.report; r != nil {
		ci.Bytes, ci.SHA256, ci.Elapsed = r.Bytes, r.SHA256, time.Duration(r.ElapsedMillis)*time.Millisecond
		ci.Verified = r.Verified
		if r.BadChunk != protocol.NoChunk {
			ci.BadChunk = int(r.BadChunk)
		}
	}
	ci.OK = c.state == ClientDone
	return ci
}

// fail records a failure unless the client already has a result. The
// caller holds Server.mu.
func (c *client) fail(reason string) bool {
	if c.state.Final() {
		return false
	}
	c.state, c.err, c.ended = ClientFailed, reason, time.Now()
	return true
}

// send writes one message to the client. A failed write may have left
// part of a packet on the stream, so the connection is closed and never
// written again; the client reconnects (see rejoin).
func (c *client) send(s *Server, m protocol.Message) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed || c.conn == nil {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := protocol.WriteMessage(c.conn, s.sessionID, c.toClient, m); err != nil {
		s.log.Debug("write to client failed; closing its connection", "client", c.id, "type", m.Type(), "err", err)
		c.conn.Close()
		c.conn = nil
	}
}

// close says goodbye once and closes the connection.
func (c *client) close(s *Server, code uint8, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.conn == nil {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	protocol.WriteMessage(c.conn, s.sessionID, c.toClient, &protocol.Close{Code: code, Reason: reason})
	c.conn.Close()
}

// attach gives the client a (new) control connection.
func (c *client) attach(conn net.Conn, toClient *protocol.Seal) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.conn != nil && c.conn != conn {
		c.conn.Close()
	}
	c.conn, c.toClient = conn, toClient
}

// detach forgets conn if it is the client's current connection, and
// reports whether it was.
func (c *client) detach(conn net.Conn) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.conn != conn {
		return false
	}
	c.conn = nil
	return true
}

// acceptClients accepts control connections until ctx ends.
func (s *Server) acceptClients(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("accepting clients failed", "err", err)
			}
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveClient(ctx, conn)
		}()
	}
}

// serveClient runs one control connection: the join, then the client's
// feedback until it has a result or disappears.
func (s *Server) serveClient(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	mcast.TuneControl(conn)
	peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	r := bufio.NewReaderSize(conn, 16<<10)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The connection's keys are bound to a fresh nonce, so a recorded
	// connection cannot be replayed.
	var ch protocol.Challenge
	rand.Read(ch.Nonce[:])
	if err := protocol.WriteMessage(conn, s.sessionID, nil, &ch); err != nil {
		conn.Close()
		return
	}
	var toClient, toServer *protocol.Seal
	if s.keys != nil {
		toClient, toServer = s.keys.Conn(ch.Nonce)
	}
	_, m, err := protocol.ReadMessage(r, 64<<10, toServer)
	if err != nil {
		s.log.Warn("bad join", "from", peer, "err", err)
		reason := ""
		switch {
		case errors.Is(err, protocol.ErrUnsealed):
			reason = reasonNeedsKey
		case errors.Is(err, protocol.ErrForged):
			reason = reasonWrongKey
		case errors.Is(err, protocol.ErrSealed):
			reason = reasonNoKey
		}
		if reason != "" {
			protocol.WriteMessage(conn, s.sessionID, nil, &protocol.Refuse{Code: protocol.RefuseKey, Reason: reason})
		}
		conn.Close()
		return
	}
	j, ok := m.(*protocol.Join)
	if !ok {
		s.log.Warn("expected a join", "from", peer, "got", m.Type())
		conn.Close()
		return
	}
	c, err := s.admit(conn, peer, j, toClient)
	if err != nil {
		var ref *refusal
		if errors.As(err, &ref) {
			s.log.Warn("client refused", "from", peer, "mac", net.HardwareAddr(j.MAC).String(), "reason", ref.reason)
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			protocol.WriteMessage(conn, s.sessionID, toClient, &protocol.Refuse{Code: ref.code, Reason: ref.reason})
		}
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	for {
		_, m, err := protocol.ReadMessage(r, protocol.MaxNackRanges*8+64, toServer)
		if err != nil {
			s.lostClient(c, conn, err)
			return
		}
		s.fromClient(c, m)
	}
}

type refusal struct {
	code   uint8
	reason string
}

func (r *refusal) Error() string { return r.reason }

// admit checks a join and adds the client, or refuses it.
func (s *Server) admit(conn net.Conn, peer netip.Addr, j *protocol.Join, toClient *protocol.Seal) (*client, error) {
	size := s.manifest.ImageSize
	if j.Name != s.cfg.Session {
		return nil, &refusal{protocol.RefuseName, fmt.Sprintf("this server serves session %q, not %q", s.cfg.Session, j.Name)}
	}
	if j.DiskSize != 0 && int64(j.DiskSize) < size {
		return nil, &refusal{protocol.RefuseDiskTooSmall, fmt.Sprintf("disk %s is %s (%d bytes), the image is %s (%d bytes); use a disk at least as large as the image",
			j.Disk, imaging.HumanBytes(int64(j.DiskSize)), j.DiskSize, imaging.HumanBytes(size), size)}
	}
	if c := s.rejoin(conn, peer, j, toClient); c != nil {
		return c, nil
	}
	s.mu.Lock()
	if s.state != StateWaiting {
		s.mu.Unlock()
		return nil, &refusal{protocol.RefuseSending, fmt.Sprintf("session %q is already sending; join its next round", s.cfg.Session)}
	}
	// A machine that joins again before the start (its first try was cut
	// off) replaces its stale entry.
	var stale []*client
	for _, old := range s.clients {
		if old.state == ClientJoined && len(j.MAC) > 0 && bytes.Equal(old.join.MAC, j.MAC) {
			old.state, old.err, old.ended = ClientLeft, "joined again", time.Now()
			stale = append(stale, old)
		}
	}
	c := &client{id: s.nextID, conn: conn, addr: peer, join: *j, toClient: toClient, state: ClientJoined, joined: time.Now(), lastHeard: time.Now()}
	if len(j.Have) > 0 && j.ImageSHA256 == s.manifest.ImageSHA256 {
		c.have, c.progress.LowWater = haveBitmap(j.Have, len(s.manifest.Chunks))
	}
	s.nextID++
	s.clients = append(s.clients, c)
	s.lastJoin = c.joined
	n := len(s.activeLocked())
	s.mu.Unlock()

	for _, old := range stale {
		old.close(s, protocol.CloseDropped, "joined again")
	}
	s.welcome(c, peer)
	s.log.Info("client joined", "client", c.id, "mac", net.HardwareAddr(j.MAC).String(), "addr", peer,
		"hostname", j.Hostname, "disk", j.Disk, "disk_bytes", j.DiskSize, "clients", n)
	s.emit(Event{Kind: EventJoined, Client: s.clientInfo(c)})
	s.poke(s.joined)
	return c, nil
}

func (s *Server) clientInfo(c *client) ClientInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.info()
}

// welcome sends a joined client its place in the session and the manifest.
func (s *Server) welcome(c *client, peer netip.Addr) {
	c.send(s, &protocol.Accept{
		ClientID: c.id, Group: s.streamAddress(peer), DataPort: uint16(s.cfg.DataPort), PayloadSize: uint16(s.payload),
		HeartbeatMillis: uint32(s.cfg.Heartbeat.Milliseconds()), TimeoutMillis: uint32(s.cfg.ClientTimeout.Milliseconds()),
	})
	c.send(s, &protocol.Manifest{Data: s.wire})
}

// rejoin gives a client whose control connection broke its place back, if
// the join names this session and that client (same machine), and the
// client has no result yet. It returns nil otherwise.
func (s *Server) rejoin(conn net.Conn, peer netip.Addr, j *protocol.Join, toClient *protocol.Seal) *client {
	if j.RejoinSession != s.sessionID || j.RejoinClient == 0 {
		return nil
	}
	s.mu.Lock()
	var c *client
	for _, cc := range s.clients {
		if cc.id == j.RejoinClient && bytes.Equal(cc.join.MAC, j.MAC) && !cc.state.Final() {
			c = cc
		}
	}
	if c == nil {
		s.mu.Unlock()
		return nil
	}
	c.lastHeard, c.lostConn = time.Now(), ""
	sending := s.state == StateSending
	s.mu.Unlock()
	c.attach(conn, toClient)
	s.welcome(c, peer)
	if sending {
		c.send(s, &protocol.Start{})
	}
	s.log.Info("client rejoined", "client", c.id, "mac", net.HardwareAddr(j.MAC).String(), "addr", peer)
	s.poke(s.wake)
	return c
}

// fromClient handles one message of a joined client.
func (s *Server) fromClient(c *client, m protocol.Message) {
	now := time.Now()
	switch v := m.(type) {
	case *protocol.Progress:
		s.mu.Lock()
		c.lastHeard = now
		if v.LowWater >= c.progress.LowWater {
			c.progress = *v
		}
		if v.Phase == protocol.PhaseVerifying && c.state == ClientReceiving {
			c.state = ClientVerifying
		}
		s.mu.Unlock()
		s.poke(s.wake)
	case *protocol.Nack:
		s.mu.Lock()
		c.lastHeard = now
		c.nacks += uint64(len(v.Ranges))
		s.counters.NackRanges += uint64(len(v.Ranges))
		s.mu.Unlock()
		s.repairs.add(v, s.manifest, s.payload)
		s.poke(s.wake)
	case *protocol.Report:
		s.finishClient(c, v)
	default:
		s.log.Debug("unexpected message from client", "client", c.id, "type", m.Type())
	}
}

// finishClient records a client's report and judges it: good only if the
// client says so and its read-back hash is the image's.
func (s *Server) finishClient(c *client, r *protocol.Report) {
	s.mu.Lock()
	if c.state.Final() {
		s.mu.Unlock()
		return
	}
	c.report, c.lastHeard, c.ended = r, time.Now(), time.Now()
	switch {
	case !r.OK:
		c.state, c.err = ClientFailed, r.Error
		if c.err == "" {
			c.err = "client reported failure"
		}
	case !r.Verified:
		// The client was told not to read its disk back: good as far as
		// anyone knows, and the table says so.
		c.state = ClientDone
	case r.SHA256 != s.manifest.ImageSHA256:
		c.state, c.err = ClientFailed, fmt.Sprintf("read-back SHA-256 %x is not the image's", r.SHA256)
	case int64(r.Bytes) != s.manifest.ImageSize:
		c.state, c.err = ClientFailed, fmt.Sprintf("read back %d bytes, the image has %d", r.Bytes, s.manifest.ImageSize)
	default:
		c.state = ClientDone
	}
	info := c.info()
	s.mu.Unlock()
	kind := EventFinished
	if !info.OK {
		kind = EventFailed
		s.log.Warn("client failed", "client", c.id, "mac", info.MAC, "addr", info.Addr, "err", info.Error)
	} else {
		s.log.Info("client verified", "client", c.id, "mac", info.MAC, "addr", info.Addr, "sha256", fmt.Sprintf("%x", r.SHA256), "elapsed", info.Elapsed)
	}
	s.emit(Event{Kind: kind, Client: info, Message: info.Error})
	c.close(s, protocol.CloseDone, "report received")
	s.poke(s.wake)
}

// lostClient handles a control connection that ended.
// lostClient handles a control connection that ended. Before the start
// the client has left. While sending, it may come back (rejoin): it keeps
// its place until it has been silent for ClientTimeout.
func (s *Server) lostClient(c *client, conn net.Conn, err error) {
	if !c.detach(conn) {
		return // an old connection of a client that rejoined
	}
	conn.Close()
	reason := "control connection closed"
	if !errors.Is(err, io.EOF) {
		reason = fmt.Sprintf("control connection lost: %v", err)
	}
	s.mu.Lock()
	if c.state.Final() {
		s.mu.Unlock()
		return
	}
	if c.state != ClientJoined {
		c.lostConn = reason + " at " + time.Now().Format("15:04:05.000")
		s.mu.Unlock()
		s.log.Warn("client connection lost; keeping its place for a rejoin", "client", c.id, "addr", c.addr, "err", reason)
		return
	}
	c.state, c.err, c.ended = ClientLeft, reason, time.Now()
	info := c.info()
	s.mu.Unlock()
	s.log.Info("client left before the start", "client", c.id, "mac", info.MAC, "addr", info.Addr)
	s.emit(Event{Kind: EventLeft, Client: info, Message: reason})
	s.poke(s.wake)
}

// watchClients drops clients that fall silent.
func (s *Server) watchClients(ctx context.Context) {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var dropped []*client
		s.mu.Lock()
		for _, c := range s.activeLocked() {
			if silent := now.Sub(c.lastHeard); silent > s.cfg.ClientTimeout {
				c.state = ClientDropped
				c.err = fmt.Sprintf("no feedback for %s (last heard %s)", silent.Round(100*time.Millisecond), c.lastHeard.Format("15:04:05.000"))
				if c.lostConn != "" {
					c.err += "; " + c.lostConn + ", and it did not come back"
				}
				c.ended = now
				dropped = append(dropped, c)
			}
		}
		s.mu.Unlock()
		for _, c := range dropped {
			s.dropped(c)
		}
	}
}

// dropped reports and disconnects a client the server gave up on.
func (s *Server) dropped(c *client) {
	info := s.clientInfo(c)
	s.log.Warn("client dropped", "client", c.id, "mac", info.MAC, "addr", info.Addr, "reason", info.Error)
	s.emit(Event{Kind: EventDropped, Client: info, Message: info.Error})
	c.close(s, protocol.CloseDropped, info.Error)
	s.poke(s.wake)
}

// haveBitmap turns a resuming client's ranges into a bitmap of chunks, and
// returns the first chunk it lacks.
func haveBitmap(ranges []protocol.ChunkRange, chunks int) ([]uint64, uint32) {
	bits := make([]uint64, (chunks+63)/64)
	for _, r := range ranges {
		for c := uint64(r.First); c < uint64(r.First)+uint64(r.Count) && c < uint64(chunks); c++ {
			bits[c/64] |= 1 << (c % 64)
		}
	}
	first := uint32(0)
	for int(first) < chunks && bits[first/64]&(1<<(first%64)) != 0 {
		first++
	}
	return bits, first
}

// has reports whether the client already has chunk i.
func (c *client) has(i int) bool {
	return c.have != nil && c.have[i/64]&(1<<(i%64)) != 0
}
