// Package fec makes Reed-Solomon repair shards for the fragments of one
// chunk, and rebuilds lost fragments from them.
//
// A chunk's fragments are dealt into stripes round-robin (fragment f is in
// stripe f mod S), so a burst of consecutive losses spreads over stripes.
// Each stripe of K data shards can have up to MaxParity parity shards; any
// K of the K+MaxParity shards rebuild the stripe. One parity shard thus
// repairs a different lost fragment at every client: the server sends as
// many as the worst client lacks, not the sum of all losses.
package fec

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Limits of a stripe.
const (
	MaxStripeData = 64 // data shards per stripe
	MaxParity     = 32 // parity shards per stripe
)

// Layout is how one chunk's fragments map to stripes.
type Layout struct {
	Frags   int // fragments in the chunk
	Stripes int
	Payload int // bytes per fragment (the last one may be shorter on the wire)
}

// NewLayout lays out a chunk of frags fragments of payload bytes.
func NewLayout(frags, payload int) Layout {
	return Layout{Frags: frags, Stripes: max(1, (frags+MaxStripeData-1)/MaxStripeData), Payload: payload}
}

// Stripe returns the stripe of fragment f and its index in that stripe.
func (l Layout) Stripe(f int) (stripe, idx int) { return f % l.Stripes, f / l.Stripes }

// Fragment returns the fragment at index idx of stripe s.
func (l Layout) Fragment(s, idx int) int { return idx*l.Stripes + s }

// DataShards is the number of fragments in stripe s.
func (l Layout) DataShards(s int) int {
	if s >= l.Frags {
		return 0
	}
	return (l.Frags - s + l.Stripes - 1) / l.Stripes
}

// ErrTooFew means a stripe lacks shards to be rebuilt.
var ErrTooFew = errors.New("too few shards to rebuild the stripe")

// Codec encodes and rebuilds stripes. It is safe for concurrent use.
type Codec struct {
	mu  sync.Mutex
	enc map[int]reedsolomon.Encoder // by data shard count
}

// NewCodec returns a Codec.
func NewCodec() *Codec { return &Codec{enc: map[int]reedsolomon.Encoder{}} }

func (c *Codec) encoder(k int) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.enc[k]; e != nil {
		return e, nil
	}
	e, err := reedsolomon.New(k, MaxParity)
	if err != nil {
		return nil, fmt.Errorf("reed-solomon %d+%d: %w", k, MaxParity, err)
	}
	c.enc[k] = e
	return e, nil
}

// shard returns fragment f of wire as a full-size shard (the last fragment
// padded with zeros).
func (l Layout) shard(wire []byte, f int) []byte {
	start := f * l.Payload
	end := min(len(wire), start+l.Payload)
	if end-start == l.Payload {
		return wire[start:end]
	}
	s := make([]byte, l.Payload)
	copy(s, wire[start:end])
	return s
}

// Parity computes the MaxParity parity shards of stripe s of a chunk's wire
// bytes.
func (c *Codec) Parity(l Layout, wire []byte, s int) ([][]byte, error) {
	k := l.DataShards(s)
	if k == 0 {
		return nil, fmt.Errorf("stripe %d of %d fragments is empty", s, l.Frags)
	}
	e, err := c.encoder(k)
	if err != nil {
		return nil, err
	}
	shards := make([][]byte, k+MaxParity)
	for i := 0; i < k; i++ {
		shards[i] = l.shard(wire, l.Fragment(s, i))
	}
	for i := k; i < len(shards); i++ {
		shards[i] = make([]byte, l.Payload)
	}
	if err := e.Encode(shards); err != nil {
		return nil, fmt.Errorf("encode stripe %d: %w", s, err)
	}
	return shards[k:], nil
}

// Rebuild fills the missing fragments of stripe s into wire (a chunk's wire
// bytes, len(wire) its full length) from the fragments present (have
// reports them) and parity shards by index. It returns the fragments it
// rebuilt.
func (c *Codec) Rebuild(l Layout, wire []byte, s int, have func(f int) bool, parity map[int][]byte) ([]int, error) {
	k := l.DataShards(s)
	e, err := c.encoder(k)
	if err != nil {
		return nil, err
	}
	shards := make([][]byte, k+MaxParity)
	present, missing := 0, []int(nil)
	for i := 0; i < k; i++ {
		f := l.Fragment(s, i)
		if have(f) {
			shards[i] = l.shard(wire, f)
			present++
		} else {
			missing = append(missing, f)
		}
	}
	for idx, p := range parity {
		if idx >= 0 && idx < MaxParity && len(p) == l.Payload {
			shards[k+idx] = p
			present++
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if present < k {
		return nil, fmt.Errorf("stripe %d: %d of %d shards: %w", s, present, k, ErrTooFew)
	}
	if err := e.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("rebuild stripe %d: %w", s, err)
	}
	for _, f := range missing {
		_, i := l.Stripe(f)
		start := f * l.Payload
		copy(wire[start:min(len(wire), start+l.Payload)], shards[i])
	}
	return missing, nil
}
