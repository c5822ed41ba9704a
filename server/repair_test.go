package server

import (
	"testing"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/protocol"
)

func TestRepairQueueMergesAndValidates(t *testing.T) {
	const payload = 1000
	m := &imaging.Manifest{ImageSize: 3 * 4096, ChunkSize: 4096, Chunks: []imaging.ChunkInfo{
		{Encoding: imaging.EncodingRaw, WireSize: 4096}, // 5 fragments
		{Encoding: imaging.EncodingZero},                // nothing to repair
		{Encoding: imaging.EncodingRaw, WireSize: 4096},
	}}
	q := newRepairQueue()
	q.add(&protocol.Nack{Ranges: []protocol.NackRange{
		{Chunk: 2, First: 0, Count: 2},
		{Chunk: 0, First: 1, Count: 1},
		{Chunk: 2, First: 1, Count: 3}, // overlaps: merged
		{Chunk: 0, First: 4, Count: 1},
		{Chunk: 0, First: 4, Count: 2}, // past the last fragment: ignored
		{Chunk: 1, First: 0, Count: 1}, // zero chunk: ignored
		{Chunk: 9, First: 0, Count: 1}, // no such chunk: ignored
	}, Stripes: []protocol.StripeNeed{
		{Chunk: 2, Stripe: 0, Need: 2},
		{Chunk: 2, Stripe: 0, Need: 4}, // the neediest client counts
		{Chunk: 2, Stripe: 0, Need: 1},
		{Chunk: 1, Stripe: 0, Need: 1}, // zero chunk: ignored
	}}, m, payload)

	c, req, ok := q.pop(3)
	if !ok || c != 2 || req.frags[0] != 0b1111 || req.need[0] != 4 {
		t.Fatalf("first pop = %d %+v %v, want chunk 2 fragments 0-3 and 4 parity shards for stripe 0", c, req, ok)
	}
	c, req, ok = q.pop(3)
	if !ok || c != 0 || req.frags[0] != 0b10010 || len(req.need) != 0 {
		t.Fatalf("second pop = %d %+v %v, want chunk 0 fragments 1 and 4", c, req, ok)
	}
	if _, _, ok := q.pop(3); ok {
		t.Fatal("queue not empty")
	}

	// Requests for chunks not sent yet are dropped.
	q.add(&protocol.Nack{Ranges: []protocol.NackRange{{Chunk: 2, First: 0, Count: 1}}}, m, payload)
	if _, _, ok := q.pop(2); ok {
		t.Fatal("popped a repair of a chunk not sent yet")
	}
	if _, _, ok := q.pop(3); ok {
		t.Fatal("the dropped request came back")
	}
}
