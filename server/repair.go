package server

import (
	"sync"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/protocol"
)

// repairQueue collects what clients asked for, merged per chunk: a
// fragment asked for by many clients is sent again once, and a stripe gets
// as many parity shards as the neediest client lacks.
type repairQueue struct {
	mu      sync.Mutex
	pending map[uint32]*repairRequest
	order   []uint32 // chunks in the order they were first asked for
}

// repairRequest is what is asked of one chunk.
type repairRequest struct {
	frags []uint64          // bitmap of fragments to resend
	need  map[uint16]uint16 // stripe → parity shards still needed (the maximum over clients)
}

func (r *repairRequest) has(f int) bool { return r.frags[f/64]&(1<<(f%64)) != 0 }

func newRepairQueue() *repairQueue {
	return &repairQueue{pending: map[uint32]*repairRequest{}}
}

func (q *repairQueue) request(chunk uint32, frags int) *repairRequest {
	r, ok := q.pending[chunk]
	if !ok {
		r = &repairRequest{frags: make([]uint64, (frags+63)/64), need: map[uint16]uint16{}}
		q.pending[chunk] = r
		q.order = append(q.order, chunk)
	}
	return r
}

// add merges a NACK; whatever names no real fragment or stripe is ignored.
func (q *repairQueue) add(n *protocol.Nack, m *imaging.Manifest, payload int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	frags := func(chunk uint32) int {
		if int(chunk) >= len(m.Chunks) {
			return 0
		}
		return (int(m.Chunks[chunk].WireSize) + payload - 1) / payload
	}
	for _, r := range n.Ranges {
		nf := frags(r.Chunk)
		if nf == 0 || int(r.First)+int(r.Count) > nf {
			continue
		}
		req := q.request(r.Chunk, nf)
		for f := int(r.First); f < int(r.First)+int(r.Count); f++ {
			req.frags[f/64] |= 1 << (f % 64)
		}
	}
	for _, s := range n.Stripes {
		nf := frags(s.Chunk)
		if nf == 0 || int(s.Stripe) >= nf {
			continue
		}
		req := q.request(s.Chunk, nf)
		req.need[s.Stripe] = max(req.need[s.Stripe], s.Need)
	}
}

// pop takes the oldest chunk with a pending request. Requests for chunks at
// or past sent (not yet sent once) are dropped.
func (q *repairQueue) pop(sent int) (uint32, *repairRequest, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) > 0 {
		c := q.order[0]
		q.order = q.order[1:]
		req := q.pending[c]
		delete(q.pending, c)
		if int(c) < sent {
			return c, req, true
		}
	}
	return 0, nil, false
}
