package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/fec"
	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// Receiver timing.
const (
	tick      = 10 * time.Millisecond  // housekeeping period (NACK scan, silence check)
	nackDelay = 5 * time.Millisecond   // grace for reordering before a missing fragment is asked for
	nackRetry = 200 * time.Millisecond // ask again if a repair has not arrived by then
	// maxChunkFailures is how often one chunk may fail its SHA-256 before
	// the client gives up: it would mean the server's image is corrupt.
	maxChunkFailures = 5
	readBatch        = 64
	packetBuffer     = 9216 // jumbo frames fit
)

// Chunk states on the client.
const (
	chunkMissing uint8 = iota // no or some fragments
	chunkQueued               // complete, with the writer
	chunkWritten              // verified and on disk
)

type chunkState struct {
	state    uint8
	failures uint8
	due      time.Time // when its missing fragments may first be asked for
	nacked   time.Time // when they were last asked for
	progress time.Time // when a fragment or parity shard last arrived
	retries  uint8     // NACKs since the last progress
	asked    bool      // asked for at least once (for the loss count)
}

// assembly collects the fragments of one chunk.
type assembly struct {
	buf    []byte
	have   []uint64 // bitmap of fragments received (or rebuilt)
	count  int
	frags  int
	layout fec.Layout
	// Per stripe: fragments held, and parity shards received (by index)
	// while the stripe is incomplete.
	stripeHave []int
	parity     map[int]map[int][]byte
}

func newAssembly(buf []byte, frags, payload int) *assembly {
	l := fec.NewLayout(frags, payload)
	return &assembly{buf: buf, have: make([]uint64, (frags+63)/64), frags: frags, layout: l, stripeHave: make([]int, l.Stripes)}
}

func (a *assembly) has(f int) bool { return a.have[f/64]&(1<<(f%64)) != 0 }
func (a *assembly) set(f int)      { a.have[f/64] |= 1 << (f % 64) }

type writeJob struct {
	chunk int
	wire  []byte // nil for a zero chunk
	buf   []byte // to return to the pool
}

type writeResult struct {
	chunk int
	buf   []byte
	err   error // a write error: fatal
	bad   bool  // SHA-256 mismatch: fetch again
}

// receiver turns the data stream into verified chunks on disk. Everything
// but the writer runs on the goroutine that calls run.
type receiver struct {
	check   *checker // reads written chunks back; nil when verifying at the end or not at all
	codec   *fec.Codec
	s       *session
	w       *imaging.Writer
	log     *slog.Logger
	m       *imaging.Manifest
	conn    *ipv4.PacketConn
	payload int
	window  int

	chunks   []chunkState
	asm      map[int]*assembly
	lowWater int // lowest chunk not yet written
	admitted int // chunks below this were considered for zero-filling
	sendPos  int // chunks below this were sent once in full
	finished bool
	started  bool
	written  int
	bytes    int64
	free     [][]byte
	bufSize  int

	writeQ  chan writeJob
	results chan writeResult

	stats Stats
	now   time.Time // when the packet being handled arrived
	// The stream's sequence numbers, to count what was lost.
	seqSeen  bool
	seqHigh  uint32
	expected uint64

	coalesce time.Duration // pause after a small batch (coalesceFor)

	mu       sync.Mutex // guards snap and stats copy
	snap     protocol.Progress
	statsOut Stats
}

// Pausing after a small batch (see run) lets datagrams gather so that
// one recvmmsg takes many: at 100 Mbit/s a 2 ms pause turns 8,700 wake-ups
// a second into 500, which is what lets 16 receivers share 2 cores. The
// pause is kept short enough that a quarter of the socket's receive buffer
// holds what a 1 Gbit/s link brings meanwhile, so a small buffer (no
// SO_RCVBUFFORCE) gets a short pause.
const (
	maxCoalesce   = 2 * time.Millisecond
	minCoalesce   = 100 * time.Microsecond
	coalesceBytes = 125e6 // bytes per second of the fastest stream assumed
)

// coalesceFor returns the pause after a small batch for a socket whose
// receive buffer holds rcvbuf bytes.
func coalesceFor(rcvbuf int) time.Duration {
	d := time.Duration(float64(rcvbuf) / 4 / coalesceBytes * float64(time.Second))
	return min(max(d, minCoalesce), maxCoalesce)
}

func newReceiver(s *session, w *imaging.Writer, log *slog.Logger) *receiver {
	m := s.manifest
	window := min(s.cfg.BufferChunks, len(m.Chunks))
	bufSize := 0
	for _, c := range m.Chunks {
		bufSize = max(bufSize, int(c.WireSize))
	}
	rcvbuf, err := mcast.ReceiveBuffer(s.data)
	if err != nil {
		log.Debug("cannot read the receive buffer's size", "err", err)
	}
	return &receiver{
		s: s, w: w, log: log, m: m, conn: ipv4.NewPacketConn(s.data), codec: fec.NewCodec(),
		coalesce: coalesceFor(rcvbuf),
		payload:  int(s.accept.PayloadSize), window: window,
		chunks: make([]chunkState, len(m.Chunks)), asm: map[int]*assembly{},
		bufSize: bufSize,
		writeQ:  make(chan writeJob, window),
		results: make(chan writeResult, window),
	}
}

// resume marks chunks an earlier session already wrote and verified.
func (r *receiver) resume(written []bool) {
	for i, w := range written {
		if w && i < len(r.chunks) {
			r.chunks[i].state = chunkWritten
			r.written++
			_, n := r.m.ChunkRange(i)
			r.bytes += int64(n)
		}
	}
	for r.lowWater < len(r.chunks) && r.chunks[r.lowWater].state == chunkWritten {
		r.lowWater++
	}
	r.admitted = r.lowWater
}

// writtenChunks reports which chunks are on disk and verified.
func (r *receiver) writtenChunks() []bool {
	out := make([]bool, len(r.chunks))
	for i, c := range r.chunks {
		out[i] = c.state == chunkWritten
	}
	return out
}

func (r *receiver) progress() protocol.Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

func (r *receiver) setPhase(p uint8) {
	r.mu.Lock()
	r.snap.Phase = p
	r.mu.Unlock()
}

func (r *receiver) statsSnapshot() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statsOut
}

func (r *receiver) publish(board *statusBoard) {
	r.mu.Lock()
	r.snap.LowWater = uint32(r.lowWater)
	r.snap.Written = uint32(r.written)
	r.snap.BytesWritten = uint64(r.bytes)
	r.snap.Received = r.stats.Received
	r.snap.Lost = r.stats.Lost
	r.snap.Heard = r.stats.Heard
	r.snap.Expected = max(r.expected, r.stats.Heard)
	if r.started && r.snap.Phase == protocol.PhaseWaiting {
		r.snap.Phase = protocol.PhaseReceiving
	}
	r.statsOut = r.stats
	r.mu.Unlock()
	board.update(func(st *Status) {
		if r.started && st.Phase == PhaseWaiting {
			st.Phase, st.Message = PhaseReceiving, ""
		}
		st.BytesWritten, st.Received, st.Lost = r.bytes, r.stats.Received, r.stats.Lost
	})
}

// run receives until every chunk is on disk, the server ends the session
// for us, or something fails.
func (r *receiver) run(ctx context.Context, events <-chan serverEvent, hbFailed <-chan error, poke chan<- struct{}, board *statusBoard) error {
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.writer(wctx)
	}()
	defer func() {
		stopWriter()
		close(r.writeQ)
		wg.Wait()
	}()

	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, packetBuffer)}
	}
	lastHeard := time.Now()
	lastScan := time.Time{}
	lastPoke := 0
	r.admit()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.drainResults(); err != nil {
			return err
		}
		r.admit()
		if r.written == len(r.chunks) {
			r.publish(board)
			return nil
		}
		select {
		case ev := <-events:
			if err := r.serverSaid(ev); err != nil {
				return err
			}
			lastHeard = time.Now()
		case err := <-hbFailed:
			return fmt.Errorf("%w: %v", ErrServerGone, err)
		default:
		}

		r.s.data.SetReadDeadline(time.Now().Add(tick))
		n, err := r.conn.ReadBatch(msgs, 0)
		if err != nil && !isTimeout(err) {
			return fmt.Errorf("receive data: %w", err)
		}
		now := time.Now()
		for i := 0; i < n; i++ {
			if r.handle(msgs[i].Buffers[0][:msgs[i].N], now) {
				lastHeard = now
			}
		}
		if n > 0 && n < len(msgs)/4 {
			// A trickle: let datagrams gather in the socket buffer (32 MiB
			// holds far more than this pause brings) and take them in one
			// call, instead of waking for every one or two.
			time.Sleep(r.coalesce)
		}
		if now.Sub(lastScan) >= tick {
			lastScan = now
			if err := r.scan(now); err != nil {
				return err
			}
			if silent := now.Sub(lastHeard); silent > r.s.cfg.ServerTimeout {
				return fmt.Errorf("%w: nothing heard from %s for %s", ErrServerGone, r.s.server.control.Addr(), silent.Round(time.Second))
			}
			r.publish(board)
			if r.lowWater-lastPoke >= max(1, r.window/8) {
				lastPoke = r.lowWater
				select {
				case poke <- struct{}{}:
				default:
				}
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// serverSaid handles a control message or the control connection's end.
func (r *receiver) serverSaid(ev serverEvent) error {
	if ev.err != nil {
		return fmt.Errorf("%w: control connection: %v", ErrServerGone, ev.err)
	}
	switch m := ev.msg.(type) {
	case *protocol.Start:
		r.started = true
		r.log.Info("session started", "clients", m.Clients, "rate_bps", m.Rate)
	case *protocol.Close:
		return fmt.Errorf("the server ended the session for this client: %s", m.Reason)
	case *protocol.Redirect:
		return r.redirect(m)
	}
	return nil
}

// redirect moves to another data address: the server fell back from
// multicast to broadcast.
func (r *receiver) redirect(m *protocol.Redirect) error {
	r.log.Warn("the server moves the data stream", "to", m.Group, "port", m.Port, "why", m.Why)
	conn, err := mcast.ListenData(context.Background(), r.s.ifi, m.Group, int(m.Port), dataRecvBuffer)
	if err != nil {
		return fmt.Errorf("follow the stream to %s: %w", m.Group, err)
	}
	r.s.data.Close()
	r.s.data = conn
	r.conn = ipv4.NewPacketConn(conn)
	return nil
}

// handle takes one packet; it reports whether it came from our session.
func (r *receiver) handle(pkt []byte, now time.Time) bool {
	r.now = now
	// Another session's packets (same group and port) are told apart by
	// the session ID before any cryptography is spent on them.
	if len(pkt) >= protocol.HeaderSize && binary.BigEndian.Uint64(pkt[8:]) != r.s.ctl.session {
		r.stats.Foreign++
		return false
	}
	h, body, err := r.s.dataSeal.Open(pkt)
	switch {
	case errors.Is(err, protocol.ErrForged) || errors.Is(err, protocol.ErrUnsealed) || errors.Is(err, protocol.ErrSealed):
		r.stats.Forged++
		return false
	case errors.Is(err, protocol.ErrReplayed):
		r.stats.Replayed++
		return false
	case err != nil:
		r.stats.BadPackets++
		return false
	case h.Session != r.s.ctl.session:
		r.stats.Foreign++
		return false
	}
	r.stats.Heard++
	switch h.Type {
	case protocol.TypeData:
		var d protocol.Data
		if err := protocol.DecodeBody(h, body, &d); err != nil {
			r.stats.BadPackets++
			return true
		}
		r.started = true
		r.countSeq(d.Seq)
		r.advance(int(d.SendPos), now)
		r.data(&d, h.Flags&protocol.FlagRepair != 0)
	case protocol.TypeParity:
		var p protocol.Parity
		if err := protocol.DecodeBody(h, body, &p); err != nil {
			r.stats.BadPackets++
			return true
		}
		r.started = true
		r.countSeq(p.Seq)
		r.advance(int(p.SendPos), now)
		r.parity(&p)
	case protocol.TypeBeacon:
		var b protocol.Beacon
		if err := protocol.DecodeBody(h, body, &b); err != nil {
			r.stats.BadPackets++
			return true
		}
		if b.State != protocol.BeaconWaiting {
			r.started = true
		}
		r.countSeq(b.Seq)
		r.advance(int(b.SendPos), now)
		if b.State == protocol.BeaconFinished {
			r.finished = true
			r.advance(len(r.chunks), now)
		}
	}
	return true
}

// countSeq follows the stream's sequence numbers: every number past the
// highest seen so far is a packet the server sent.
func (r *receiver) countSeq(seq uint32) {
	if !r.seqSeen {
		r.seqSeen, r.seqHigh, r.expected = true, seq, 1
		return
	}
	if d := int32(seq - r.seqHigh); d > 0 {
		r.expected += uint64(d)
		r.seqHigh = seq
	}
}

// advance moves the known sender position; chunks it passes become due for
// NACKs after a short grace.
func (r *receiver) advance(pos int, now time.Time) {
	pos = min(pos, len(r.chunks))
	for c := max(r.sendPos, r.lowWater); c < pos; c++ {
		if r.chunks[c].due.IsZero() {
			r.chunks[c].due = now.Add(nackDelay)
		}
	}
	r.sendPos = max(r.sendPos, pos)
}

// data stores one fragment.
func (r *receiver) data(d *protocol.Data, repair bool) {
	c := int(d.Chunk)
	if c >= len(r.chunks) {
		r.stats.BadPackets++
		return
	}
	info := r.m.Chunks[c]
	frags := (int(info.WireSize) + r.payload - 1) / r.payload
	if info.Encoding == imaging.EncodingZero || int(d.FragCount) != frags {
		r.stats.BadPackets++
		return
	}
	if r.chunks[c].state != chunkMissing || c < r.lowWater {
		r.stats.Duplicates++
		return
	}
	if c >= r.lowWater+r.window {
		// The sender ran past our window; it will repair this later.
		return
	}
	f := int(d.Frag)
	want := r.payload
	if f == frags-1 {
		want = int(info.WireSize) - f*r.payload
	}
	if len(d.Payload) != want {
		r.stats.BadPackets++
		return
	}
	a := r.assembly(c, frags)
	if a.has(f) {
		r.stats.Duplicates++
		return
	}
	copy(a.buf[f*r.payload:], d.Payload)
	a.set(f)
	a.count++
	r.chunks[c].progress = r.now
	s, _ := a.layout.Stripe(f)
	a.stripeHave[s]++
	if !repair {
		r.stats.Received++
	}
	r.rebuild(c, a, s)
	r.complete(c, a)
}

// assembly returns chunk c's assembly, starting one if needed.
func (r *receiver) assembly(c, frags int) *assembly {
	a := r.asm[c]
	if a == nil {
		a = newAssembly(r.getBuf()[:r.m.Chunks[c].WireSize], frags, r.payload)
		r.asm[c] = a
	}
	return a
}

// complete hands a chunk with every fragment to the writer.
func (r *receiver) complete(c int, a *assembly) {
	if a.count == a.frags {
		delete(r.asm, c)
		r.chunks[c].state = chunkQueued
		r.writeQ <- writeJob{chunk: c, wire: a.buf, buf: a.buf}
	}
}

// parity stores a repair shard and rebuilds its stripe when it can.
func (r *receiver) parity(p *protocol.Parity) {
	c := int(p.Chunk)
	if c >= len(r.chunks) || r.m.Chunks[c].Encoding == imaging.EncodingZero || int(p.Index) >= fec.MaxParity || len(p.Payload) != r.payload {
		r.stats.BadPackets++
		return
	}
	if r.chunks[c].state != chunkMissing || c < r.lowWater || c >= r.lowWater+r.window {
		r.stats.Duplicates++
		return
	}
	frags := (int(r.m.Chunks[c].WireSize) + r.payload - 1) / r.payload
	a := r.assembly(c, frags)
	s := int(p.Stripe)
	if s >= a.layout.Stripes {
		r.stats.BadPackets++
		return
	}
	if a.stripeHave[s] >= a.layout.DataShards(s) {
		r.stats.Duplicates++ // the stripe is whole already
		return
	}
	if a.parity == nil {
		a.parity = map[int]map[int][]byte{}
	}
	if a.parity[s] == nil {
		a.parity[s] = map[int][]byte{}
	}
	if _, dup := a.parity[s][int(p.Index)]; dup {
		r.stats.Duplicates++
		return
	}
	a.parity[s][int(p.Index)] = append([]byte(nil), p.Payload...)
	r.chunks[c].progress = r.now
	r.stats.Parity++
	r.rebuild(c, a, s)
	r.complete(c, a)
}

// rebuild fills stripe s of chunk c from its parity once enough shards are
// there.
func (r *receiver) rebuild(c int, a *assembly, s int) {
	k := a.layout.DataShards(s)
	if a.stripeHave[s] >= k || a.stripeHave[s]+len(a.parity[s]) < k {
		return
	}
	rebuilt, err := r.codec.Rebuild(a.layout, a.buf, s, a.has, a.parity[s])
	if err != nil {
		r.log.Warn("rebuilding a stripe failed", "chunk", c, "stripe", s, "err", err)
		delete(a.parity, s)
		return
	}
	for _, f := range rebuilt {
		a.set(f)
		a.count++
	}
	a.stripeHave[s] += len(rebuilt)
	r.stats.Rebuilt += uint64(len(rebuilt))
	delete(a.parity, s)
}

func (r *receiver) getBuf() []byte {
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free = r.free[:n-1]
		return b
	}
	return make([]byte, r.bufSize)
}

// admit queues zero chunks that entered the window: they need no data.
func (r *receiver) admit() {
	end := min(len(r.chunks), r.lowWater+r.window)
	for ; r.admitted < end; r.admitted++ {
		c := r.admitted
		if r.m.Chunks[c].Encoding == imaging.EncodingZero && r.chunks[c].state == chunkMissing {
			r.chunks[c].state = chunkQueued
			r.writeQ <- writeJob{chunk: c}
		}
	}
}

// drainResults takes the writer's results without waiting.
func (r *receiver) drainResults() error {
	for {
		select {
		case res := <-r.results:
			if err := r.result(res); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (r *receiver) result(res writeResult) error {
	if res.buf != nil {
		r.free = append(r.free, res.buf[:cap(res.buf)])
	}
	cs := &r.chunks[res.chunk]
	switch {
	case res.err != nil:
		return res.err
	case res.bad:
		r.stats.BadChunks++
		cs.failures++
		if cs.failures >= maxChunkFailures {
			return fmt.Errorf("chunk %d failed its SHA-256 check %d times: the server's image may be corrupt", res.chunk, cs.failures)
		}
		r.log.Warn("chunk failed its SHA-256 check; fetching it again", "chunk", res.chunk)
		cs.state, cs.nacked, cs.due = chunkMissing, time.Time{}, time.Now()
		return nil
	}
	cs.state = chunkWritten
	r.written++
	_, n := r.m.ChunkRange(res.chunk)
	r.bytes += int64(n)
	for r.lowWater < len(r.chunks) && r.chunks[r.lowWater].state == chunkWritten {
		r.lowWater++
	}
	return nil
}

// scan asks for the missing fragments of chunks the sender has passed.
func (r *receiver) scan(now time.Time) error {
	var ranges []protocol.NackRange
	var stripes []protocol.StripeNeed
	end := min(r.sendPos, r.lowWater+r.window, len(r.chunks))
	for c := r.lowWater; c < end && len(ranges) < protocol.MaxNackRanges-64; c++ {
		cs := &r.chunks[c]
		if cs.state != chunkMissing || r.m.Chunks[c].Encoding == imaging.EncodingZero {
			continue
		}
		if cs.due.IsZero() || now.Before(cs.due) {
			continue
		}
		if !cs.nacked.IsZero() {
			// Ask again only when repairs stopped coming, and wait longer
			// each time nothing came: the server may be busy with a
			// backlog of repairs that are on their way.
			last := cs.nacked
			if cs.progress.After(last) {
				last = cs.progress
			}
			if now.Sub(last) < nackRetry<<min(cs.retries, 3) {
				continue
			}
			if cs.progress.After(cs.nacked) {
				cs.retries = 0
			} else {
				cs.retries++
			}
		}
		before := len(ranges)
		ranges = r.missing(c, ranges)
		stripes = r.stripeNeeds(c, stripes)
		if !cs.asked {
			cs.asked = true
			for _, nr := range ranges[before:] {
				r.stats.Lost += uint64(nr.Count)
			}
		}
		cs.nacked = now
	}
	if len(ranges) == 0 {
		return nil
	}
	r.stats.Nacks++
	if err := r.s.ctl.send(&protocol.Nack{Ranges: ranges, Stripes: stripes}); err != nil {
		return fmt.Errorf("%w: %v", ErrServerGone, err)
	}
	return nil
}

// stripeNeeds appends, for each stripe of chunk c that parity can rebuild,
// how many more parity shards it needs. A stripe that lacks more than
// half the parity a stripe can have is left to fragment repair.
func (r *receiver) stripeNeeds(c int, needs []protocol.StripeNeed) []protocol.StripeNeed {
	a := r.asm[c]
	if a == nil {
		return needs // everything lost: fragments are cheaper than parity
	}
	for s := 0; s < a.layout.Stripes; s++ {
		need := a.layout.DataShards(s) - a.stripeHave[s] - len(a.parity[s])
		if need > 0 && need <= fec.MaxParity/2 {
			needs = append(needs, protocol.StripeNeed{Chunk: uint32(c), Stripe: uint16(s), Need: uint16(need)})
		}
	}
	return needs
}

// missing appends the ranges of fragments chunk c lacks.
func (r *receiver) missing(c int, ranges []protocol.NackRange) []protocol.NackRange {
	frags := (int(r.m.Chunks[c].WireSize) + r.payload - 1) / r.payload
	a := r.asm[c]
	if a == nil {
		return append(ranges, protocol.NackRange{Chunk: uint32(c), First: 0, Count: uint16(frags)})
	}
	for f := 0; f < frags; {
		if a.has(f) {
			f++
			continue
		}
		start := f
		for f < frags && !a.has(f) {
			f++
		}
		ranges = append(ranges, protocol.NackRange{Chunk: uint32(c), First: uint16(start), Count: uint16(f - start)})
	}
	return ranges
}

// writer verifies chunks and writes them, on its own goroutine so the
// network never waits for the disk.
func (r *receiver) writer(ctx context.Context) {
	dec := imaging.NewDecoder()
	defer dec.Close()
	for job := range r.writeQ {
		if ctx.Err() != nil {
			continue // drain so the receiver never blocks
		}
		res := writeResult{chunk: job.chunk, buf: job.buf}
		if job.wire == nil {
			if err := r.w.ZeroChunk(job.chunk); err != nil {
				res.err = fmt.Errorf("zero chunk %d: %w", job.chunk, err)
			} else if r.check != nil && job.chunk >= r.w.HeadChunks() {
				r.check.add(job.chunk)
			}
		} else {
			// Decode checks the SHA-256 before a byte reaches the disk.
			data, err := dec.Decode(r.m, job.chunk, job.wire)
			if err != nil {
				res.bad = true
			} else if err := r.w.WriteChunk(job.chunk, data); err != nil {
				res.err = fmt.Errorf("chunk %d: %w", job.chunk, err)
			} else {
				if job.chunk == r.s.cfg.CorruptChunk-1 && job.chunk >= r.w.HeadChunks() {
					corruptChunk(r.s.target, r.m, job.chunk, r.log)
				}
				if r.check != nil && job.chunk >= r.w.HeadChunks() {
					r.check.add(job.chunk)
				}
			}
		}
		select {
		case r.results <- res:
		case <-ctx.Done():
		}
	}
}
