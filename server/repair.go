package server

import (
	"sync"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/protocol"
)

// repairQueue collects the fragments clients asked for, merged per chunk:
// a fragment asked for by many clients is sent again once.
type repairQueue struct {
	mu      sync.Mutex
	pending map[uint32][]uint64 // chunk → bitmap of fragments to resend
	order   []uint32            // chunks in the order they were first asked for
}

func newRepairQueue() *repairQueue {
	return &repairQueue{pending: map[uint32][]uint64{}}
}

// add merges NACK ranges; ranges that name no real fragment are ignored.
func (q *repairQueue) add(ranges []protocol.NackRange, m *imaging.Manifest, payload int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range ranges {
		if int(r.Chunk) >= len(m.Chunks) {
			continue
		}
		frags := (int(m.Chunks[r.Chunk].WireSize) + payload - 1) / payload
		if frags == 0 || int(r.First)+int(r.Count) > frags {
			continue
		}
		bits, ok := q.pending[r.Chunk]
		if !ok {
			bits = make([]uint64, (frags+63)/64)
			q.pending[r.Chunk] = bits
			q.order = append(q.order, r.Chunk)
		}
		for f := int(r.First); f < int(r.First)+int(r.Count); f++ {
			bits[f/64] |= 1 << (f % 64)
		}
	}
}

// pop takes the oldest chunk with pending fragments. Requests for chunks at
// or past sent (not yet sent once) are dropped.
func (q *repairQueue) pop(sent int) (uint32, []uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) > 0 {
		c := q.order[0]
		q.order = q.order[1:]
		bits := q.pending[c]
		delete(q.pending, c)
		if int(c) < sent {
			return c, bits, true
		}
	}
	return 0, nil, false
}
