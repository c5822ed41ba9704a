package fec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		frags, stripes int
	}{{1, 1}, {64, 1}, {65, 2}, {733, 12}, {128, 2}}
	for _, tt := range tests {
		l := NewLayout(tt.frags, 1432)
		if l.Stripes != tt.stripes {
			t.Errorf("NewLayout(%d).Stripes = %d, want %d", tt.frags, l.Stripes, tt.stripes)
		}
		seen := map[int]bool{}
		total := 0
		for s := 0; s < l.Stripes; s++ {
			k := l.DataShards(s)
			if k > MaxStripeData {
				t.Errorf("%d frags: stripe %d has %d shards", tt.frags, s, k)
			}
			total += k
			for i := 0; i < k; i++ {
				f := l.Fragment(s, i)
				if gs, gi := l.Stripe(f); gs != s || gi != i || seen[f] || f >= tt.frags {
					t.Fatalf("%d frags: fragment %d maps badly", tt.frags, f)
				}
				seen[f] = true
			}
		}
		if total != tt.frags {
			t.Errorf("%d frags: stripes hold %d", tt.frags, total)
		}
	}
}

// TestRebuild loses different fragments at different "clients" and
// rebuilds each from the same parity shards.
func TestRebuild(t *testing.T) {
	const payload = 100
	r := rand.New(rand.NewPCG(5, 6))
	wire := make([]byte, 733*payload-37) // the last fragment is short
	for i := range wire {
		wire[i] = byte(r.Uint32())
	}
	frags := (len(wire) + payload - 1) / payload
	l := NewLayout(frags, payload)
	c := NewCodec()
	parity := map[int][][]byte{}
	for s := 0; s < l.Stripes; s++ {
		p, err := c.Parity(l, wire, s)
		if err != nil {
			t.Fatal(err)
		}
		parity[s] = p
	}
	for client := range 5 {
		got := make([]byte, len(wire))
		lost := map[int]bool{}
		for f := 0; f < frags; f++ {
			if r.IntN(10) == 0 || f == frags-1 { // 10 % loss, and always the short last one
				lost[f] = true
				continue
			}
			copy(got[f*payload:], wire[f*payload:min(len(wire), (f+1)*payload)])
		}
		for s := 0; s < l.Stripes; s++ {
			missing := 0
			for i := 0; i < l.DataShards(s); i++ {
				if lost[l.Fragment(s, i)] {
					missing++
				}
			}
			// The server sends as many parity shards as this stripe lacks.
			use := map[int][]byte{}
			for i := 0; i < missing; i++ {
				use[i] = parity[s][i]
			}
			rebuilt, err := c.Rebuild(l, got, s, func(f int) bool { return !lost[f] }, use)
			if err != nil {
				t.Fatalf("client %d stripe %d: %v", client, s, err)
			}
			if len(rebuilt) != missing {
				t.Fatalf("client %d stripe %d: rebuilt %d of %d", client, s, len(rebuilt), missing)
			}
		}
		if !bytes.Equal(got, wire) {
			t.Fatalf("client %d: rebuilt chunk differs", client)
		}
	}
}

func TestRebuildTooFew(t *testing.T) {
	l := NewLayout(10, 8)
	wire := make([]byte, 80)
	c := NewCodec()
	_, err := c.Rebuild(l, wire, 0, func(f int) bool { return f > 2 }, map[int][]byte{0: make([]byte, 8)})
	if !errors.Is(err, ErrTooFew) {
		t.Fatalf("err = %v, want ErrTooFew", err)
	}
}
