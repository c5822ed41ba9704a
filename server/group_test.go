package server

import (
	"math/rand/v2"
	"testing"
)

func TestParseGroupRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		bad         bool
	}{
		{in: "239.1.2.3", first: "239.1.2.3", last: "239.1.2.3"},
		{in: "239.192.0.0/16", first: "239.192.0.0", last: "239.192.255.255"},
		{in: "239.192.7.9/16", first: "239.192.0.0", last: "239.192.255.255"},
		{in: "239.1.1.1-239.1.1.200", first: "239.1.1.1", last: "239.1.1.200"},
		{in: "239.1.1.1 - 239.1.1.2", first: "239.1.1.1", last: "239.1.1.2"},
		{in: "10.0.0.1", bad: true},
		{in: "239.1.1.9-239.1.1.1", bad: true},
		{in: "ff02::1", bad: true},
		{in: "239.1.1.1-", bad: true},
		{in: "nonsense", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g, err := ParseGroupRange(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted %q as %v", tt.in, g)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.First.String() != tt.first || g.Last.String() != tt.last {
				t.Fatalf("got %v, want %s-%s", g, tt.first, tt.last)
			}
		})
	}
}

func TestPickStaysInRangeAndAvoidsFloodedMACs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, g := range []GroupRange{DefaultGroups, mustRange(t, "239.1.0.0/16"), mustRange(t, "239.7.7.7")} {
		for range 2000 {
			a := g.Pick(r)
			if a.Less(g.First) || g.Last.Less(a) {
				t.Fatalf("%v outside %v", a, g)
			}
			b := a.As4()
			if g.First != g.Last && b[1]&0x7f == 0 && b[2] == 0 {
				t.Fatalf("%v maps to the same MAC as 224.0.0.x", a)
			}
		}
	}
	if a := DefaultGroups.Pick(r); a.As4()[1] == 255 {
		t.Fatalf("default range reached the discovery block: %v", a)
	}
}

func mustRange(t *testing.T, s string) GroupRange {
	g, err := ParseGroupRange(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
