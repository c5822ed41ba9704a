package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/fec"
	"github.com/shoal-lab/shoal/protocol"
)

// Sender tuning.
const (
	maxBatch         = 32                     // datagrams per sendmmsg
	idleBeaconEvery  = 50 * time.Millisecond  // beacon period while sending but idle
	waitBeaconEvery  = 250 * time.Millisecond // beacon period before the start
	ethernetOverhead = 14                     // what the link adds per frame, for the pacer
	cacheBytes       = 256 << 20              // recently sent chunks kept for repairs
	stallPause       = 300 * time.Microsecond // wait after the kernel's queue was full
)

// sender multicasts the image: first transmissions in order, repairs first,
// never more than the slowest live client's window ahead.
type sender struct {
	s     *Server
	conn  *net.UDPConn
	pc    *ipv4.PacketConn
	dests []*net.UDPAddr // where every packet goes: the group, or each client
	seq   atomic.Uint32
	next  int // next chunk to send for the first time
	m     *imaging.Manifest
	rate  *rateControl
	pace  pacer
	cache chunkCache
	codec *fec.Codec
	// nextParity is the next unsent parity shard of each stripe repaired.
	nextParity map[parityKey]int

	bufs    [][]byte   // encoded packets of the batch
	buffers [][][]byte // one Buffers slice per packet, shared by its copies
	msgs    []ipv4.Message
	n       int      // packets in the batch
	bytes   int      // wire bytes of the batch, all copies
	counts  Counters // not yet added to the server's counters

	blockedSince time.Time
	lastBeacon   time.Time
	lastDests    time.Time

	// Loss sampling for the rate control.
	lastLoss     time.Time
	lossPrevious map[uint32]lossSample
}

// lossSample is a client's counters at the last loss sample.
type lossSample struct{ heard, expected uint64 }

// sampleLoss feeds the worst client's recent loss, and the rate at which it
// received, to the rate control.

func newSender(s *Server, conn *net.UDPConn) *sender {
	snd := &sender{
		s: s, conn: conn, pc: ipv4.NewPacketConn(conn),
		m:    s.manifest,
		rate: newRateControl(s.cfg.MaxRate),
	}
	snd.cache = newChunkCache(max(4, cacheBytes/s.manifest.ChunkSize))
	snd.codec = fec.NewCodec()
	snd.nextParity = map[parityKey]int{}
	snd.bufs = make([][]byte, maxBatch)
	snd.buffers = make([][][]byte, maxBatch)
	for i := range snd.bufs {
		snd.bufs[i] = make([]byte, 0, s.cfg.MTU)
		snd.buffers[i] = [][]byte{nil}
	}
	snd.dests = s.destinations()
	s.mu.Lock()
	s.counters.Rate = snd.rate.current()
	s.mu.Unlock()
	return snd
}

// window returns how many clients are still active and the first chunk the
// slowest of them cannot take yet.
func (s *Server) window() (active int, limit int, slowest *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit = int(^uint(0) >> 1)
	for _, c := range s.activeLocked() {
		active++
		if c.state == ClientVerifying {
			continue
		}
		if l := int(c.progress.LowWater) + int(c.join.BufferChunks); l < limit {
			limit, slowest = l, c
		}
	}
	return active, limit, slowest
}

// run sends until no client is left that needs anything.
func (snd *sender) run(ctx context.Context) error {
	s := snd.s
	total := len(snd.m.Chunks)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		active, limit, slowest := s.window()
		if active == 0 {
			return nil
		}
		snd.sampleLoss()
		if s.cfg.Mode == ModeUnicast && time.Since(snd.lastDests) > 100*time.Millisecond {
			if err := snd.flush(ctx); err != nil {
				return err
			}
			snd.dests, snd.lastDests = s.destinations(), time.Now()
		}
		if chunk, bits, ok := s.repairs.pop(snd.next); ok {
			if err := snd.sendRepair(ctx, int(chunk), bits); err != nil {
				return err
			}
			continue
		}
		if snd.next < total {
			if snd.m.Chunks[snd.next].Encoding == imaging.EncodingZero || !s.need[snd.next] {
				snd.next++
				continue
			}
			if snd.next < limit {
				snd.blockedSince = time.Time{}
				if err := snd.sendChunk(ctx, snd.next); err != nil {
					return err
				}
				snd.next++
				if snd.next == total {
					if err := snd.beacon(protocol.BeaconFinished); err != nil {
						return err
					}
				}
				continue
			}
			snd.heldBack(slowest)
		}
		if err := snd.flush(ctx); err != nil {
			return err
		}
		if time.Since(snd.lastBeacon) >= idleBeaconEvery {
			state := protocol.BeaconSending
			if snd.next >= total {
				state = protocol.BeaconFinished
			}
			if err := snd.beacon(state); err != nil {
				return err
			}
		}
		timer.Reset(10 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-timer.C:
		}
	}
}

func (snd *sender) sampleLoss() {
	now := time.Now()
	interval := now.Sub(snd.lastLoss)
	if interval < lossInterval {
		return
	}
	s := snd.s
	worst, worstHeard := 0.0, uint64(0)
	s.mu.Lock()
	// The average datagram on the wire, to turn packets into bits.
	packetBits := 8 * float64(s.counters.WireBytes+1) / float64(s.counters.DataPackets+s.counters.RepairPackets+1)
	if snd.lossPrevious == nil {
		snd.lossPrevious = map[uint32]lossSample{}
	}
	for _, c := range s.activeLocked() {
		p := c.progress
		prev, seen := snd.lossPrevious[c.id]
		snd.lossPrevious[c.id] = lossSample{p.Heard, p.Expected}
		if !seen || p.Heard < prev.heard || p.Expected < prev.expected {
			continue
		}
		heard, expected := p.Heard-prev.heard, p.Expected-prev.expected
		if expected >= minLossSample && heard <= expected {
			if loss := float64(expected-heard) / float64(expected); loss > worst {
				worst, worstHeard = loss, heard
			}
		}
	}
	s.mu.Unlock()
	if !snd.lastLoss.IsZero() {
		goodput := int64(float64(worstHeard) * packetBits / interval.Seconds())
		snd.rate.lossy(worst, goodput, snd.lastLoss)
		s.log.Debug("rate", "worst_loss", worst, "its_goodput_bps", goodput, "rate_bps", snd.rate.current())
	}
	snd.lastLoss = now
}

// heldBack applies the slow-client policy while the window is closed.
func (snd *sender) heldBack(slowest *client) {
	s := snd.s
	if slowest == nil {
		return
	}
	now := time.Now()
	if snd.blockedSince.IsZero() {
		snd.blockedSince = now
		return
	}
	held := now.Sub(snd.blockedSince)
	if s.cfg.Slow != SlowDrop || held < s.cfg.SlowAfter {
		return
	}
	s.mu.Lock()
	if slowest.state.Final() {
		s.mu.Unlock()
		return
	}
	slowest.state = ClientDropped
	slowest.err = fmt.Sprintf("too slow: held the session back for %s at chunk %d of %d (--slow=drop)",
		held.Round(time.Second), slowest.progress.LowWater, len(snd.m.Chunks))
	slowest.ended = now
	s.mu.Unlock()
	snd.blockedSince = time.Time{}
	s.dropped(slowest)
}

// chunkWire returns a chunk's wire bytes, from the cache or the image.
func (snd *sender) chunkWire(i int) ([]byte, error) {
	if b := snd.cache.get(i); b != nil {
		return b, nil
	}
	b, err := snd.s.cfg.Source.ReadChunk(i, snd.cache.spare())
	if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	snd.cache.put(i, b)
	return b, nil
}

func (snd *sender) sendChunk(ctx context.Context, i int) error {
	wire, err := snd.chunkWire(i)
	if err != nil {
		return err
	}
	frags := (len(wire) + snd.s.payload - 1) / snd.s.payload
	for f := 0; f < frags; f++ {
		if err := snd.queue(ctx, i, f, frags, wire, 0); err != nil {
			return err
		}
	}
	return nil
}

// sendRepair answers what clients asked of one chunk: parity shards for
// the stripes that need them while the stripe has parity left, the asked-
// for fragments otherwise.
func (snd *sender) sendRepair(ctx context.Context, i int, req *repairRequest) error {
	wire, err := snd.chunkWire(i)
	if err != nil {
		return err
	}
	frags := (len(wire) + snd.s.payload - 1) / snd.s.payload
	layout := fec.NewLayout(frags, snd.s.payload)
	served := map[int]bool{} // stripes answered with parity
	for s, need := range req.need {
		sent, err := snd.sendParity(ctx, i, wire, layout, int(s), int(need))
		if err != nil {
			return err
		}
		if sent >= int(need) {
			served[int(s)] = true
		}
	}
	for f := 0; f < frags; f++ {
		if !req.has(f) {
			continue
		}
		if s, _ := layout.Stripe(f); served[s] {
			continue
		}
		if err := snd.queue(ctx, i, f, frags, wire, protocol.FlagRepair); err != nil {
			return err
		}
	}
	return nil
}

// sendParity sends up to need fresh parity shards of one stripe and returns
// how many it sent; a stripe's parity is computed once, when first needed.
func (snd *sender) sendParity(ctx context.Context, chunk int, wire []byte, l fec.Layout, stripe, need int) (int, error) {
	key := parityKey{chunk, stripe}
	next := snd.nextParity[key]
	n := min(need, fec.MaxParity-next)
	if n <= 0 {
		return 0, nil
	}
	shards := snd.cache.parity(chunk, stripe)
	if shards == nil {
		var err error
		if shards, err = snd.codec.Parity(l, wire, stripe); err != nil {
			return 0, err
		}
		snd.cache.putParity(chunk, stripe, shards)
	}
	for k := next; k < next+n; k++ {
		p := protocol.Parity{
			Chunk: uint32(chunk), Stripe: uint16(stripe), Index: uint16(k),
			SendPos: uint32(snd.next), Seq: snd.seq.Add(1), Payload: shards[k],
		}
		if err := snd.queueMessage(ctx, &p, protocol.FlagRepair, len(shards[k])); err != nil {
			return 0, err
		}
		snd.counts.ParityPackets += uint64(len(snd.dests))
	}
	snd.nextParity[key] = next + n
	return n, nil
}

// parityKey names one stripe of one chunk.
type parityKey struct{ chunk, stripe int }

// queue adds one data packet to the batch, sending the batch when full.
func (snd *sender) queue(ctx context.Context, chunk, frag, frags int, wire []byte, flags uint8) error {
	p := snd.s.payload
	end := min(len(wire), (frag+1)*p)
	d := protocol.Data{
		Chunk: uint32(chunk), Frag: uint16(frag), FragCount: uint16(frags),
		SendPos: uint32(snd.next), Seq: snd.seq.Add(1), Payload: wire[frag*p : end],
	}
	return snd.queueMessage(ctx, &d, flags, end-frag*p)
}

// queueMessage adds one stream packet (data or parity) carrying payload
// chunk bytes to the batch, sending the batch when full.
func (snd *sender) queueMessage(ctx context.Context, m protocol.Message, flags uint8, payload int) error {
	pkt := snd.s.dataSeal.Append(snd.bufs[snd.n][:0], snd.s.sessionID, flags, m)
	snd.bufs[snd.n] = pkt
	snd.buffers[snd.n][0] = pkt
	for _, dst := range snd.dests {
		snd.msgs = append(snd.msgs, ipv4.Message{Buffers: snd.buffers[snd.n], Addr: dst})
	}
	snd.n++
	copies := uint64(len(snd.dests))
	snd.bytes += (len(pkt) + ipUDPOverhead + ethernetOverhead) * len(snd.dests)
	if flags&protocol.FlagRepair != 0 {
		snd.counts.RepairPackets += copies
	} else {
		snd.counts.DataPackets += copies
	}
	snd.counts.PayloadBytes += uint64(payload) * copies
	snd.counts.WireBytes += uint64(len(pkt)+ipUDPOverhead) * copies
	if snd.n >= snd.batchSize() {
		return snd.flush(ctx)
	}
	return nil
}

// batchSize keeps a batch to about a millisecond of data at the current
// rate, so pacing stays smooth at low rates.
func (snd *sender) batchSize() int {
	perMs := int(snd.rate.current() / 8 / 1000 / int64(snd.s.cfg.MTU) / int64(max(1, len(snd.dests))))
	return max(1, min(maxBatch, perMs))
}

// flush paces and sends the batch, retrying when the kernel's queue is full.
func (snd *sender) flush(ctx context.Context) error {
	if snd.n == 0 {
		return nil
	}
	snd.pace.wait(ctx, snd.bytes, snd.rate.current())
	msgs := snd.msgs
	var err error
	for len(msgs) > 0 {
		var n int
		n, err = snd.pc.WriteBatch(msgs, 0)
		msgs = msgs[max(n, 0):]
		if err == nil {
			continue
		}
		if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
			snd.counts.SendStalls++
			snd.rate.stalled()
			time.Sleep(stallPause)
			if err = ctx.Err(); err != nil {
				break
			}
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) {
			// Unicast to a client that went away: its ICMP error comes back
			// here. The client table deals with it; skip that packet.
			msgs = msgs[1:]
			err = nil
			continue
		}
		err = fmt.Errorf("send to %s: %w", msgs[0].Addr, err)
		break
	}
	snd.n, snd.bytes, snd.msgs = 0, 0, snd.msgs[:0]
	snd.publish()
	return err
}

// publish adds the batch's counts to the server's counters.
func (snd *sender) publish() {
	s := snd.s
	s.mu.Lock()
	k := &s.counters
	k.DataPackets += snd.counts.DataPackets
	k.RepairPackets += snd.counts.RepairPackets
	k.ParityPackets += snd.counts.ParityPackets
	k.PayloadBytes += snd.counts.PayloadBytes
	k.WireBytes += snd.counts.WireBytes
	k.Beacons += snd.counts.Beacons
	k.SendStalls += snd.counts.SendStalls
	k.Rate = snd.rate.current()
	s.mu.Unlock()
	snd.counts = Counters{}
}

// beacon sends the sender's position and state.
func (snd *sender) beacon(state uint8) error {
	b := protocol.Beacon{SendPos: uint32(snd.next), Seq: snd.seq.Add(1), State: state, Rate: uint64(snd.rate.current())}
	snd.lastBeacon = time.Now()
	snd.counts.Beacons++
	defer snd.publish()
	return snd.s.sendBeacon(snd.conn, snd.dests, &b)
}

// sendBeacon sends one beacon to every destination.
func (s *Server) sendBeacon(conn *net.UDPConn, dests []*net.UDPAddr, b *protocol.Beacon) error {
	pkt := s.dataSeal.Marshal(s.sessionID, 0, b)
	for _, d := range dests {
		_, err := conn.WriteTo(pkt, d)
		if err != nil && !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EHOSTUNREACH) {
			return fmt.Errorf("send beacon to %s: %w", d, err)
		}
	}
	return nil
}

// beaconWhileWaiting lets joined clients hear the stream before the start,
// so the server knows whether they can (see the multicast fallback).
func (s *Server) beaconWhileWaiting(ctx context.Context, snd *sender) {
	t := time.NewTicker(waitBeaconEvery)
	defer t.Stop()
	for {
		s.mu.Lock()
		waiting := s.state == StateWaiting
		s.mu.Unlock()
		if !waiting {
			return
		}
		b := protocol.Beacon{State: protocol.BeaconWaiting, Seq: snd.seq.Add(1)}
		if err := s.sendBeacon(snd.conn, s.destinations(), &b); err != nil {
			s.log.Debug("waiting beacon failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pacer spaces batches so the average rate stays at the target.
type pacer struct {
	next time.Time
}

// maxBurst is how far behind schedule the pacer may fall and catch up.
const maxBurst = 2 * time.Millisecond

func (p *pacer) wait(ctx context.Context, bytes int, bitsPerSecond int64) {
	if bitsPerSecond <= 0 {
		return
	}
	now := time.Now()
	if p.next.Before(now.Add(-maxBurst)) {
		p.next = now.Add(-maxBurst)
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(bytes*8) / float64(bitsPerSecond) * float64(time.Second)))
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// chunkCache keeps recently sent chunks, and the parity of their stripes,
// for repairs; oldest out first.
type chunkCache struct {
	limit int
	data  map[int][]byte
	par   map[parityKey][][]byte
	order []int
	free  [][]byte
}

func newChunkCache(limit int) chunkCache {
	return chunkCache{limit: limit, data: map[int][]byte{}, par: map[parityKey][][]byte{}}
}

func (c *chunkCache) parity(chunk, stripe int) [][]byte { return c.par[parityKey{chunk, stripe}] }

// putParity keeps a stripe's parity while its chunk stays in the cache.
func (c *chunkCache) putParity(chunk, stripe int, shards [][]byte) {
	if _, ok := c.data[chunk]; ok {
		c.par[parityKey{chunk, stripe}] = shards
	}
}

func (c *chunkCache) get(i int) []byte { return c.data[i] }

// spare returns an empty buffer to read a chunk into, reusing evicted ones.
func (c *chunkCache) spare() []byte {
	if n := len(c.free); n > 0 {
		b := c.free[n-1]
		c.free = c.free[:n-1]
		return b[:0]
	}
	return nil
}

func (c *chunkCache) put(i int, b []byte) {
	if len(c.order) >= c.limit {
		old := c.order[0]
		c.order = c.order[1:]
		c.free = append(c.free, c.data[old])
		delete(c.data, old)
		for k := range c.par {
			if k.chunk == old {
				delete(c.par, k)
			}
		}
	}
	c.data[i] = b
	c.order = append(c.order, i)
}
