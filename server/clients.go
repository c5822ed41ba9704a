package server

import (
	"bufio"
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
	id       uint32
	conn     net.Conn
	addr     netip.Addr
	join     protocol.Join
	toClient *protocol.Seal // nil without a key
	have     []uint64       // chunks a resuming client already has; nil if none
	wmu      sync.Mutex     // serializes writes to conn
	closed   bool           // guarded by wmu

	// guarded by Server.mu
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

// send writes one message to the client; errors only log, since the
// reader notices a dead connection.
func (c *client) send(s *Server, m protocol.Message) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := protocol.WriteMessage(c.conn, s.sessionID, c.toClient, m); err != nil {
		s.log.Debug("write to client failed", "client", c.id, "type", m.Type(), "err", err)
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
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	protocol.WriteMessage(c.conn, s.sessionID, c.toClient, &protocol.Close{Code: code, Reason: reason})
	c.conn.Close()
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
			s.lostClient(c, err)
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
	s.mu.Lock()
	if s.state != StateWaiting {
		s.mu.Unlock()
		return nil, &refusal{protocol.RefuseSending, fmt.Sprintf("session %q is already sending; join its next round", s.cfg.Session)}
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

	c.send(s, &protocol.Accept{
		ClientID: c.id, Group: s.streamAddress(peer), DataPort: uint16(s.cfg.DataPort), PayloadSize: uint16(s.payload),
		HeartbeatMillis: uint32(s.cfg.Heartbeat.Milliseconds()), TimeoutMillis: uint32(s.cfg.ClientTimeout.Milliseconds()),
	})
	c.send(s, &protocol.Manifest{Data: s.wire})
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
func (s *Server) lostClient(c *client, err error) {
	s.mu.Lock()
	if c.state.Final() {
		s.mu.Unlock()
		return
	}
	reason := "control connection closed"
	if !errors.Is(err, io.EOF) {
		reason = fmt.Sprintf("control connection lost: %v", err)
	}
	var kind EventKind
	if c.state == ClientJoined {
		c.state, c.err, c.ended = ClientLeft, reason, time.Now()
		kind = EventLeft
	} else {
		c.fail(reason)
		kind = EventFailed
	}
	info := c.info()
	s.mu.Unlock()
	if kind == EventLeft {
		s.log.Info("client left before the start", "client", c.id, "mac", info.MAC, "addr", info.Addr)
	} else {
		s.log.Warn("client failed", "client", c.id, "mac", info.MAC, "addr", info.Addr, "err", reason)
	}
	s.emit(Event{Kind: kind, Client: info, Message: reason})
	c.close(s, protocol.CloseDropped, reason)
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
