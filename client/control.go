package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// controlWriteTimeout bounds one write on the control connection.
const controlWriteTimeout = 5 * time.Second

// maxControlBody bounds what the client accepts from the server in one
// message (the manifest is the big one).
const maxControlBody = 128 << 20

// dataRecvBuffer is the data socket's receive buffer: it absorbs bursts
// while the receiver is descheduled.
const dataRecvBuffer = 32 << 20

// control is the client's end of the TCP control connection.
type control struct {
	conn     net.Conn
	r        *bufio.Reader
	session  uint64
	toServer *protocol.Seal // nil without a key
	toClient *protocol.Seal
	mu       sync.Mutex // serializes writes; guards broken
	broken   error      // the write that failed; the stream is unusable
}

// send writes one message. After a failed write, which may have left part
// of a packet on the stream, the connection is closed and every later send
// fails at once: the client reconnects instead.
func (c *control) send(m protocol.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	c.conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	if err := protocol.WriteMessage(c.conn, c.session, c.toServer, m); err != nil {
		c.broken = fmt.Errorf("send %s to server: %w", m.Type(), err)
		c.conn.Close()
		return c.broken
	}
	return nil
}

// recv reads the server's next message. Once joined, messages of another
// session are an error.
func (c *control) recv() (protocol.Header, protocol.Message, error) {
	h, m, err := protocol.ReadMessage(c.r, maxControlBody, c.toClient)
	if err != nil {
		return h, nil, err
	}
	if c.session != 0 && h.Session != c.session {
		return h, nil, fmt.Errorf("control message for session %x, joined %x", h.Session, c.session)
	}
	return h, m, nil
}

// session is one joined session: control connection, manifest, data socket.
type session struct {
	cfg      *Config
	ctl      *control
	data     *net.UDPConn
	accept   protocol.Accept
	manifest *imaging.Manifest
	target   *imaging.Target
	server   found
	dataSeal *protocol.Seal // nil without a key
	ifi      mcast.Interface
	resumed  *resumeState // what an earlier session left on disk, or nil
	kept     *resumeState // what is on disk when the server went away
}

// join connects to the server, asks to join and receives the manifest.
func join(ctx context.Context, cfg *Config, ifi mcast.Interface, target *imaging.Target, srv found, resume *resumeState) (*session, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp4", srv.control.String())
	if err != nil {
		return nil, retryable{fmt.Errorf("join %q at %s: %w", cfg.Session, srv.control, err)}
	}
	mcast.TuneControl(conn)
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	ctl := &control{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), session: srv.offer.SessionID}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, m, err := ctl.recv()
	if err != nil {
		return nil, retryable{fmt.Errorf("join %q at %s: %w", cfg.Session, srv.control, err)}
	}
	ch, isChallenge := m.(*protocol.Challenge)
	if !isChallenge {
		return nil, fmt.Errorf("join %q: the server opened with %s, not a challenge", cfg.Session, m.Type())
	}
	var keys *protocol.SessionKeys
	if cfg.Key != nil {
		keys = cfg.Key.Session(cfg.Session, srv.offer.SessionID, srv.offer.Encrypted)
		ctl.toClient, ctl.toServer = keys.Conn(ch.Nonce)
	}
	j := &protocol.Join{
		Name: cfg.Session, MAC: ifi.MAC, Hostname: hostname(), Disk: cfg.Disk,
		DiskSize: uint64(target.Size()), BufferChunks: uint32(cfg.BufferChunks),
	}
	if resume != nil {
		j.ImageSHA256, j.Have = resume.imageSHA256, resume.ranges()
		if resume.sessionID == srv.offer.SessionID {
			j.RejoinSession, j.RejoinClient = resume.sessionID, resume.clientID
		}
	}
	if err := ctl.send(j); err != nil {
		return nil, retryable{fmt.Errorf("join %q: %w", cfg.Session, err)}
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := protocol.ReadPacket(ctl.r, maxControlBody)
	if err != nil {
		return nil, retryable{fmt.Errorf("join %q: no answer from %s: %w", cfg.Session, srv.control, err)}
	}
	// A refusal about keys comes unsealed: the two sides have no common key.
	if _, m, err := protocol.Parse(b); err == nil {
		if r, ok := m.(*protocol.Refuse); ok && r.Code == protocol.RefuseKey {
			return nil, &RefusedError{Code: r.Code, Reason: r.Reason}
		}
	}
	h, m, err := ctl.toClient.OpenMessage(b)
	if err != nil {
		return nil, fmt.Errorf("join %q: answer from %s: %w", cfg.Session, srv.control, err)
	}
	if h.Session != srv.offer.SessionID {
		return nil, fmt.Errorf("join %q: answer for session %x, offered %x", cfg.Session, h.Session, srv.offer.SessionID)
	}
	var acc *protocol.Accept
	switch a := m.(type) {
	case *protocol.Refuse:
		return nil, &RefusedError{Code: a.Code, Reason: a.Reason}
	case *protocol.Accept:
		acc = a
	default:
		return nil, fmt.Errorf("join %q: server answered with %s", cfg.Session, m.Type())
	}
	_, m, err = ctl.recv()
	if err != nil {
		return nil, retryable{fmt.Errorf("join %q: read manifest: %w", cfg.Session, err)}
	}
	mm, isManifest := m.(*protocol.Manifest)
	if !isManifest {
		return nil, fmt.Errorf("join %q: expected the manifest, got %s", cfg.Session, m.Type())
	}
	manifest := new(imaging.Manifest)
	if err := manifest.UnmarshalBinary(mm.Data); err != nil {
		return nil, fmt.Errorf("join %q: %w", cfg.Session, err)
	}
	if err := target.CheckFits(manifest.ImageSize); err != nil {
		return nil, err
	}
	if resume != nil && (resume.imageSHA256 != manifest.ImageSHA256 || len(resume.written) != len(manifest.Chunks)) {
		cfg.Logger.Warn("the server now serves another image; starting over", "session", cfg.Session)
		resume = nil
	}
	payload := int(acc.PayloadSize)
	for i, c := range manifest.Chunks {
		if (int(c.WireSize)+payload-1)/payload > 0xffff {
			return nil, fmt.Errorf("join %q: chunk %d needs more than 65535 packets", cfg.Session, i)
		}
	}
	data, err := mcast.ListenData(ctx, ifi, acc.Group, int(acc.DataPort), dataRecvBuffer)
	if err != nil {
		return nil, fmt.Errorf("join %q: %w", cfg.Session, err)
	}
	conn.SetReadDeadline(time.Time{})
	ok = true
	cfg.Logger.Info("joined", "session", cfg.Session, "server", srv.control, "client_id", acc.ClientID,
		"group", acc.Group, "port", acc.DataPort, "image_bytes", manifest.ImageSize, "chunks", len(manifest.Chunks))
	s := &session{cfg: cfg, ctl: ctl, data: data, accept: *acc, manifest: manifest, target: target, server: srv, resumed: resume, ifi: ifi}
	if keys != nil {
		s.dataSeal = keys.Data()
	}
	return s, nil
}

func (s *session) close() {
	s.ctl.conn.Close()
	s.data.Close()
}

// serverEvent is something the server said (or the connection's end).
type serverEvent struct {
	msg protocol.Message
	err error
}

// readControl forwards the server's control messages until the connection
// ends.
func (s *session) readControl(events chan<- serverEvent) {
	for {
		_, m, err := s.ctl.recv()
		if err != nil {
			events <- serverEvent{err: err}
			return
		}
		events <- serverEvent{msg: m}
	}
}

// heartbeat sends Progress every interval and whenever poked, until ctx
// ends.
func (s *session) heartbeat(ctx context.Context, progress func() protocol.Progress, poke <-chan struct{}, failed chan<- error) {
	t := time.NewTicker(time.Duration(s.accept.HeartbeatMillis) * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-poke:
		}
		p := progress()
		if err := s.ctl.send(&p); err != nil {
			select {
			case failed <- err:
			default:
			}
			return
		}
	}
}

// run receives, writes, verifies and reports.
func (s *session) run(ctx context.Context, board *statusBoard) (*Result, error) {
	log := s.cfg.Logger
	m := s.manifest
	res := &Result{Session: s.cfg.Session, Server: s.server.control, ClientID: s.accept.ClientID, BadChunk: -1}
	// The writer marks the disk as not imaged before anything else is
	// written; a resumed session keeps the writer of the first try.
	w := s.writer()
	if w == nil {
		var err error
		w, err = imaging.NewWriter(s.target, m, imaging.WriterOptions{SkipZeros: s.cfg.SkipZeros, Grow: s.cfg.Grow, Logger: log})
		if err == nil {
			err = w.Begin()
		}
		if err != nil {
			s.ctl.send(&protocol.Report{Error: err.Error(), BadChunk: protocol.NoChunk})
			return res, err
		}
	}
	board.update(func(st *Status) {
		st.Phase, st.ImageBytes = PhaseWaiting, m.ImageSize
		st.Message = fmt.Sprintf("joined as client %d; waiting for the server to start", s.accept.ClientID)
	})

	events := make(chan serverEvent, 16)
	go s.readControl(events)

	rcv := newReceiver(s, w, log)
	var check *checker
	if !s.cfg.NoVerify && !s.cfg.VerifyFull {
		check = startChecker(ctx, s.target, m, log)
		rcv.check = check
		if s.resumed != nil {
			// Check again what the first try wrote.
			for i, written := range s.resumed.written {
				if written && i >= w.HeadChunks() {
					check.add(i)
				}
			}
		}
	}
	if s.resumed != nil {
		rcv.resume(s.resumed.written)
		log.Info("resuming", "chunks_on_disk", s.resumed.count(), "chunks", len(m.Chunks))
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	poke := make(chan struct{}, 1)
	hbFailed := make(chan error, 1)
	go s.heartbeat(hbCtx, rcv.progress, poke, hbFailed)

	start := time.Now()
	board.start = start
	err := rcv.run(ctx, events, hbFailed, poke, board)
	res.Stats = rcv.statsSnapshot()
	if check != nil && err != nil {
		check.finish()
	}
	if errors.Is(err, ErrServerGone) {
		// Keep everything for a rejoin or a resume; the control connection
		// is no use for a report.
		s.kept = &resumeState{imageSHA256: m.ImageSHA256, written: rcv.writtenChunks(), writer: w,
			sessionID: s.ctl.session, clientID: s.accept.ClientID}
		return res, err
	}
	defer w.Close()
	if err != nil {
		stopHB()
		s.ctl.send(&protocol.Report{Error: err.Error(), BadChunk: protocol.NoChunk, ElapsedMillis: uint64(time.Since(start).Milliseconds())})
		return res, err
	}

	// The first MiB goes on the disk last, then the partition table is
	// fixed up and re-read.
	if err := w.Finish(ctx); err != nil {
		err = fmt.Errorf("finish the disk: %w", err)
		s.ctl.send(&protocol.Report{Error: err.Error(), BadChunk: protocol.NoChunk, ElapsedMillis: uint64(time.Since(start).Milliseconds())})
		return res, err
	}
	if c := s.cfg.CorruptChunk - 1; c >= 0 && c < w.HeadChunks() {
		corruptChunk(s.target, m, c, log) // a head chunk is on the disk only now
	}
	rep, err := s.verify(ctx, w, rcv, check, board, res)
	res.Elapsed = time.Since(start)
	rep.ElapsedMillis = uint64(res.Elapsed.Milliseconds())
	rcv.setPhase(protocol.PhaseDone)
	stopHB()
	if serr := s.ctl.send(rep); serr != nil && err == nil {
		err = fmt.Errorf("disk verified, but the report did not reach the server: %w", serr)
	}
	if err != nil {
		return res, err
	}
	// Wait briefly for the server's goodbye so it has our report.
	waitClose(events, 5*time.Second)
	log.Info("disk done", "verified", rep.Verified, "sha256", fmt.Sprintf("%x", res.SHA256), "elapsed", res.Elapsed.Round(time.Millisecond))
	return res, nil
}

// writer returns the writer a resumed session inherited, if any.
func (s *session) writer() *imaging.Writer {
	if s.resumed != nil {
		return s.resumed.writer
	}
	return nil
}

// verify finishes reading the disk back (unless told not to) and builds
// the report.
func (s *session) verify(ctx context.Context, w *imaging.Writer, rcv *receiver, check *checker, board *statusBoard, res *Result) (*protocol.Report, error) {
	m := s.manifest
	rep := &protocol.Report{BadChunk: protocol.NoChunk}
	if s.cfg.NoVerify {
		s.cfg.Logger.Warn("not reading the disk back (--verify=off)")
		rep.OK, res.OK = true, true
		rep.Bytes, res.Bytes = uint64(m.ImageSize), m.ImageSize
		return rep, nil
	}
	if check != nil {
		return s.verifyChunks(ctx, w, rcv, check, board, res)
	}
	board.update(func(st *Status) { st.Phase, st.Message = PhaseVerifying, "reading the disk back" })
	rcv.setPhase(protocol.PhaseVerifying)
	s.cfg.Logger.Info("all chunks written; reading back", "bytes", m.ImageSize)
	rb, err := w.Verify(ctx, func(done int64) { board.update(func(st *Status) { st.BytesRead = done }) })
	res.Bytes, res.SHA256, res.BadChunk = rb.Bytes, rb.SHA256, rb.BadChunk
	rep.Bytes, rep.SHA256, rep.Verified = uint64(rb.Bytes), rb.SHA256, true
	res.Verified = true
	if rb.BadChunk >= 0 {
		rep.BadChunk = uint32(rb.BadChunk)
	}
	switch {
	case rb.BadChunk >= 0:
		off, _ := m.ChunkRange(rb.BadChunk)
		err = fmt.Errorf("read back: chunk %d (offset %d) on the disk differs from the image; disk SHA-256 %x, image %x",
			rb.BadChunk, off, rb.SHA256, m.ImageSHA256)
	case err != nil:
		err = fmt.Errorf("read back: %w", err)
	case rb.SHA256 != m.ImageSHA256:
		err = fmt.Errorf("read back: disk SHA-256 %x differs from the image's %x", rb.SHA256, m.ImageSHA256)
	}
	if err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	rep.OK, res.OK = true, true
	return rep, nil
}

// corruptChunk flips one byte of chunk i on the disk (fault injection for
// tests; see Config.CorruptChunk).
func corruptChunk(t *imaging.Target, m *imaging.Manifest, i int, log *slog.Logger) {
	if i < 0 || i >= len(m.Chunks) {
		return
	}
	off, n := m.ChunkRange(i)
	off += int64(n / 2)
	f, err := os.OpenFile(t.Path(), os.O_RDWR, 0)
	if err != nil {
		log.Error("fault injection failed", "err", err)
		return
	}
	defer f.Close()
	var b [1]byte
	f.ReadAt(b[:], off)
	b[0] ^= 0xff
	f.WriteAt(b[:], off)
	f.Sync()
	log.Warn("fault injection: flipped a byte on the disk", "chunk", i, "offset", off)
}

func waitClose(events <-chan serverEvent, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		select {
		case ev := <-events:
			if ev.err != nil {
				return
			}
			if _, ok := ev.msg.(*protocol.Close); ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// verifyChunks completes the read-back done during the transfer: it waits
// for the chunks still being checked, then checks the head the writer wrote
// last. Every chunk of the disk then matched its SHA-256 in the manifest,
// so the disk holds the image, whose SHA-256 the report carries.
func (s *session) verifyChunks(ctx context.Context, w *imaging.Writer, rcv *receiver, check *checker, board *statusBoard, res *Result) (*protocol.Report, error) {
	m := s.manifest
	rep := &protocol.Report{BadChunk: protocol.NoChunk}
	board.update(func(st *Status) { st.Phase, st.Message = PhaseVerifying, "reading the last chunks back" })
	rcv.setPhase(protocol.PhaseVerifying)
	bad, err := check.finish()
	if err == nil && bad < 0 {
		c := imaging.NewChunkChecker(s.target, m)
		bad, err = w.VerifyHead(ctx, c)
		c.Close()
	}
	board.update(func(st *Status) { st.BytesRead = m.ImageSize })
	res.BadChunk = bad
	switch {
	case err != nil:
		err = fmt.Errorf("read back: %w", err)
	case bad >= 0:
		off, _ := m.ChunkRange(bad)
		rep.BadChunk = uint32(bad)
		err = fmt.Errorf("read back: chunk %d (offset %d) on the disk differs from the image", bad, off)
	}
	if err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	rep.Bytes, rep.SHA256, rep.Verified = uint64(m.ImageSize), m.ImageSHA256, true
	res.Bytes, res.SHA256, res.Verified = m.ImageSize, m.ImageSHA256, true
	rep.OK, res.OK = true, true
	return rep, nil
}
