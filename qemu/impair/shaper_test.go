package impair

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"
	"time"
)

// t0 is the fake clock's origin.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// numbered returns a fake frame carrying sequence number i.
func numbered(i int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(i)) }

func number(f []byte) int { return int(binary.BigEndian.Uint32(f)) }

// fates runs n eligible frames through a shaper and returns, per frame,
// whether it was dropped.
func fates(r Rules, seed uint64, n int) []bool {
	s := newShaper(r, seed, streamAtoB)
	out := make([]bool, n)
	for i := range out {
		out[i] = s.admit(true).drop
	}
	return out
}

// lossStats returns the share of frames dropped and the mean length of the
// runs of consecutive drops.
func lossStats(dropped []bool) (share, meanRun float64) {
	var lost, runs int
	for i, d := range dropped {
		if d {
			lost++
			if i == 0 || !dropped[i-1] {
				runs++
			}
		}
	}
	if runs == 0 {
		return 0, 0
	}
	return float64(lost) / float64(len(dropped)), float64(lost) / float64(runs)
}

func TestLossRatesAndBursts(t *testing.T) {
	const n = 200_000
	tests := []struct {
		name           string
		rules          Rules
		share          float64 // expected share dropped
		tol            float64 // accepted deviation of the share
		minRun, maxRun float64 // accepted mean run length of drops
	}{
		{"no loss", Rules{}, 0, 0, 0, 0},
		{"random 5%", Rules{Loss: 0.05}, 0.05, 0.004, 1, 1.1},
		// Independent drops: runs are geometric, mean 1/(1-p) = 1.25.
		{"random 20%", Rules{Loss: 0.2}, 0.2, 0.006, 1.2, 1.3},
		{"bursty 20% in bursts of 5", BurstyLoss(0.2, 5), 0.2, 0.02, 4.5, 5.5},
		{"bursty 5% in bursts of 10", BurstyLoss(0.05, 10), 0.05, 0.01, 9, 11},
		// Bad state loses half: runs shorter than bursts but still > 1.
		{"bursty partial", Rules{BurstEnter: 0.02, BurstLeave: 0.1, BurstLoss: 0.5, Loss: 0.01},
			Rules{BurstEnter: 0.02, BurstLeave: 0.1, BurstLoss: 0.5, Loss: 0.01}.MeanLoss(), 0.015, 1.6, 2.4},
		{"all", Rules{Loss: 1}, 1, 0, n, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			share, run := lossStats(fates(tt.rules, 42, n))
			t.Logf("%s: dropped %.4f (want %.4f ± %.4f), mean run %.3f", tt.rules, share, tt.share, tt.tol, run)
			if math.Abs(share-tt.share) > tt.tol {
				t.Errorf("dropped share %.4f, want %.4f ± %.4f", share, tt.share, tt.tol)
			}
			if run < tt.minRun || run > tt.maxRun {
				t.Errorf("mean run of drops %.3f, want %.2f..%.2f", run, tt.minRun, tt.maxRun)
			}
		})
	}
}

func TestBurstyLoss(t *testing.T) {
	for _, tt := range []struct{ loss, burst float64 }{{0.2, 5}, {0.05, 3}, {0.5, 1}, {0.01, 20}} {
		r := BurstyLoss(tt.loss, tt.burst)
		if err := r.Validate(); err != nil {
			t.Errorf("BurstyLoss(%v, %v) = %+v: %v", tt.loss, tt.burst, r, err)
		}
		if got := r.MeanLoss(); math.Abs(got-tt.loss) > 1e-9 {
			t.Errorf("BurstyLoss(%v, %v).MeanLoss() = %v", tt.loss, tt.burst, got)
		}
		if got := 1 / r.BurstLeave; math.Abs(got-tt.burst) > 1e-9 {
			t.Errorf("BurstyLoss(%v, %v): mean burst %v", tt.loss, tt.burst, got)
		}
	}
	if r := BurstyLoss(0, 5); !r.IsZero() {
		t.Errorf("BurstyLoss(0, 5) = %+v, want zero rules", r)
	}
}

func TestDeterminism(t *testing.T) {
	rules := Rules{
		Loss: 0.05, BurstEnter: 0.05, BurstLeave: 0.3, BurstLoss: 0.9,
		Duplicate: 0.05, Reorder: 0.05, Delay: time.Millisecond, Jitter: time.Millisecond,
	}
	record := func(seed, stream uint64) []decision {
		s := newShaper(rules, seed, stream)
		var ds []decision
		for i := range 5000 {
			// Every third frame is exempt: it takes no draw.
			ds = append(ds, s.admit(i%3 != 0))
		}
		return ds
	}
	a, b := record(7, streamAtoB), record(7, streamAtoB)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, same frames: different decisions")
	}
	if slices.Equal(a, record(8, streamAtoB)) {
		t.Error("seeds 7 and 8 gave the same decisions")
	}
	if slices.Equal(a, record(7, streamBtoA)) {
		t.Error("the two directions draw the same decisions from one seed")
	}
}

// run pushes n numbered frames, one every step, through a shaper, then
// drains it, and returns the frame numbers in the order they left.
func run(t *testing.T, s *shaper, n int, step time.Duration) []int {
	t.Helper()
	var out [][]byte
	now := t0
	for i := range n {
		s.push(now, numbered(i), true)
		out = s.due(now, out)
		now = now.Add(step)
	}
	out = s.due(now, out)
	for range 10000 {
		next, ok := s.next()
		if !ok {
			break
		}
		if next.Before(now) {
			t.Fatalf("next() = %v, before the time already reached %v", next, now)
		}
		now = next
		out = s.due(now, out)
	}
	if s.waiting() != 0 {
		t.Fatalf("%d frames still wait after draining", s.waiting())
	}
	var nums []int
	for _, f := range out {
		nums = append(nums, number(f))
	}
	return nums
}

func TestDuplicate(t *testing.T) {
	const n = 10000
	s := newShaper(Rules{Duplicate: 0.1}, 1, streamAtoB)
	got := run(t, s, n, time.Microsecond)
	if len(got) != n+int(s.c.Duplicated) {
		t.Fatalf("%d frames out of %d with %d duplicated", len(got), n, s.c.Duplicated)
	}
	if d := float64(s.c.Duplicated) / n; math.Abs(d-0.1) > 0.015 {
		t.Errorf("duplicated share %.3f, want 0.1 ± 0.015", d)
	}
	// Copies follow their original, and order is kept.
	if !slices.IsSorted(got) {
		t.Errorf("duplication reordered frames")
	}
	if dups := len(got) - len(slices.Compact(slices.Clone(got))); uint64(dups) != s.c.Duplicated {
		t.Errorf("%d frames appear twice, counter says %d", dups, s.c.Duplicated)
	}
}

func TestReorder(t *testing.T) {
	const n = 10000
	for _, depth := range []int{1, 3, 8} {
		s := newShaper(Rules{Reorder: 0.05, ReorderDepth: depth}, 3, streamAtoB)
		got := run(t, s, n, time.Microsecond)
		if len(got) != n {
			t.Fatalf("depth %d: %d frames out of %d", depth, len(got), n)
		}
		if !slices.Equal(slices.Sorted(slices.Values(got)), run(t, newShaper(Rules{}, 3, streamAtoB), n, time.Microsecond)) {
			t.Fatalf("depth %d: output is not a permutation of the input", depth)
		}
		if slices.IsSorted(got) {
			t.Fatalf("depth %d: reordering kept the order", depth)
		}
		// A held frame leaves right after the depth-th frame that overtook
		// it; count the frames that arrived early.
		var late int
		for i, v := range got {
			if i > 0 && v < got[i-1] {
				late++
			}
		}
		share := float64(s.c.Reordered) / n
		t.Logf("depth %d: %d reordered (%.3f), %d late arrivals", depth, s.c.Reordered, share, late)
		if math.Abs(share-0.05) > 0.01 {
			t.Errorf("depth %d: reordered share %.3f, want 0.05 ± 0.01", depth, share)
		}
		if late == 0 || uint64(late) > s.c.Reordered {
			t.Errorf("depth %d: %d frames arrived after a later one, %d reordered", depth, late, s.c.Reordered)
		}
	}
}

func TestReorderDisplacement(t *testing.T) {
	// With every 50th frame or so held and depth 4, a held frame leaves
	// exactly 4 places late, unless held frames overlap.
	s := newShaper(Rules{Reorder: 0.02, ReorderDepth: 4}, 11, streamAtoB)
	got := run(t, s, 2000, time.Microsecond)
	exact := 0
	for pos, v := range got {
		if pos-v == 4 {
			exact++
		}
	}
	if exact == 0 || exact > int(s.c.Reordered) {
		t.Errorf("%d frames left 4 places late, %d reordered", exact, s.c.Reordered)
	}
}

func TestReorderWait(t *testing.T) {
	// A held frame that nothing overtakes leaves after ReorderWait, and is
	// not counted as reordered.
	s := newShaper(Rules{Reorder: 1, ReorderWait: 5 * time.Millisecond}, 1, streamAtoB)
	s.push(t0, numbered(1), true)
	if out := s.due(t0.Add(4*time.Millisecond), nil); len(out) != 0 {
		t.Fatalf("held frame left after 4 ms, before its 5 ms wait")
	}
	if next, ok := s.next(); !ok || !next.Equal(t0.Add(5*time.Millisecond)) {
		t.Errorf("next() = %v, %v; want t0+5ms", next, ok)
	}
	if out := s.due(t0.Add(5*time.Millisecond), nil); len(out) != 1 {
		t.Fatalf("held frame did not leave after its wait: %d frames", len(out))
	}
	if s.c.Reordered != 0 {
		t.Errorf("Reordered = %d for a frame nothing overtook", s.c.Reordered)
	}
}

func TestDelayAndJitter(t *testing.T) {
	const (
		delay  = 10 * time.Millisecond
		jitter = 4 * time.Millisecond
	)
	s := newShaper(Rules{Delay: delay, Jitter: jitter}, 5, streamAtoB)
	var (
		minD, maxD = time.Hour, time.Duration(0)
		sum        time.Duration
		reordered  bool
	)
	const n = 1000
	for i := range n {
		// Frames 1 ms apart, one at a time, so each one's delay is seen.
		now := t0.Add(time.Duration(i) * time.Hour)
		s.push(now, numbered(i), true)
		next, ok := s.next()
		if !ok {
			t.Fatal("no frame waits after a push with a delay")
		}
		d := next.Sub(now)
		minD, maxD, sum = min(minD, d), max(maxD, d), sum+d
		if out := s.due(next.Add(-time.Nanosecond), nil); len(out) != 0 {
			t.Fatal("frame left before its delay")
		}
		if out := s.due(next, nil); len(out) != 1 {
			t.Fatal("frame did not leave at its delay")
		}
	}
	mean := sum / n
	t.Logf("delay min %s mean %s max %s", minD, mean, maxD)
	if minD < delay-jitter || maxD > delay+jitter || maxD-minD < jitter {
		t.Errorf("delays from %s to %s, want spread over %s ± %s", minD, maxD, delay, jitter)
	}
	if mean < delay-time.Millisecond/2 || mean > delay+time.Millisecond/2 {
		t.Errorf("mean delay %s, want about %s", mean, delay)
	}
	if s.c.Delayed != n {
		t.Errorf("Delayed = %d, want %d", s.c.Delayed, n)
	}
	// Closely spaced frames with jitter larger than their spacing overtake
	// each other.
	got := run(t, newShaper(Rules{Delay: delay, Jitter: jitter}, 5, streamAtoB), 1000, 100*time.Microsecond)
	reordered = !slices.IsSorted(got)
	if !reordered || len(got) != 1000 {
		t.Errorf("jitter larger than the frame spacing: reordered %v, %d frames", reordered, len(got))
	}
}

func TestExemptFrames(t *testing.T) {
	// Frames the rules do not apply to pass even with total loss, and they
	// overtake frames held back.
	s := newShaper(Rules{Loss: 1}, 1, streamAtoB)
	for i := range 100 {
		s.push(t0, numbered(i), false)
	}
	if out := s.due(t0, nil); len(out) != 100 {
		t.Errorf("%d of 100 exempt frames passed total loss", len(out))
	}
	if s.c.Exempt != 100 || s.c.Dropped != 0 {
		t.Errorf("counters %+v, want 100 exempt, 0 dropped", s.c)
	}
	s = newShaper(Rules{Reorder: 1, ReorderDepth: 2}, 1, streamAtoB)
	s.push(t0, numbered(0), true)
	s.push(t0, numbered(1), false)
	s.push(t0, numbered(2), false)
	var got []int
	for _, f := range s.due(t0, nil) {
		got = append(got, number(f))
	}
	if !slices.Equal(got, []int{1, 2, 0}) {
		t.Errorf("order %v, want [1 2 0]", got)
	}
}

func TestQueueLimit(t *testing.T) {
	s := newShaper(Rules{Delay: time.Second}, 1, streamAtoB)
	for i := range maxQueued + 10 {
		s.push(t0, numbered(i), true)
	}
	if s.waiting() != maxQueued || s.c.Overruns != 10 {
		t.Errorf("%d waiting, %d overruns; want %d and 10", s.waiting(), s.c.Overruns, maxQueued)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		rules Rules
		ok    bool
	}{
		{"zero", Rules{}, true},
		{"full", Rules{Loss: 0.1, BurstEnter: 0.1, BurstLeave: 0.5, BurstLoss: 1, Duplicate: 0.1, Reorder: 0.1,
			ReorderDepth: 3, ReorderWait: time.Millisecond, Delay: time.Millisecond, Jitter: time.Millisecond, UDPOnly: true}, true},
		{"loss above 1", Rules{Loss: 1.5}, false},
		{"negative duplicate", Rules{Duplicate: -0.1}, false},
		{"NaN reorder", Rules{Reorder: math.NaN()}, false},
		{"endless burst", Rules{BurstEnter: 0.1, BurstLoss: 1}, false},
		{"negative depth", Rules{ReorderDepth: -1}, false},
		{"negative delay", Rules{Delay: -time.Millisecond}, false},
		{"negative jitter", Rules{Jitter: -time.Millisecond}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.rules.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestIsUDP(t *testing.T) {
	eth := func(et uint16, payload ...byte) []byte {
		f := make([]byte, 12, 64)
		f = binary.BigEndian.AppendUint16(f, et)
		return append(f, payload...)
	}
	ipv4 := func(proto byte) []byte {
		h := make([]byte, 20)
		h[0], h[9] = 0x45, proto
		return h
	}
	ipv6 := func(next byte, ext ...byte) []byte {
		h := make([]byte, 40)
		h[0], h[6] = 0x60, next
		return append(h, ext...)
	}
	vlan := func(inner uint16, payload ...byte) []byte {
		f := eth(etherTypeVLAN, 0, 1)
		f = binary.BigEndian.AppendUint16(f, inner)
		return append(f, payload...)
	}
	tests := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"IPv4 UDP", eth(etherTypeIPv4, ipv4(17)...), true},
		{"IPv4 TCP", eth(etherTypeIPv4, ipv4(6)...), false},
		{"IPv4 ICMP", eth(etherTypeIPv4, ipv4(1)...), false},
		{"ARP", eth(0x0806, make([]byte, 28)...), false},
		{"VLAN IPv4 UDP", vlan(etherTypeIPv4, ipv4(17)...), true},
		{"IPv6 UDP", eth(etherTypeIPv6, ipv6(17)...), true},
		{"IPv6 ICMPv6", eth(etherTypeIPv6, ipv6(58)...), false},
		{"IPv6 hop-by-hop then UDP", eth(etherTypeIPv6, ipv6(0, 17, 0, 0, 0, 0, 0, 0, 0)...), true},
		{"IPv6 fragment then UDP", eth(etherTypeIPv6, ipv6(44, 17, 0, 0, 0, 0, 0, 0, 0)...), true},
		{"IPv6 truncated extension", eth(etherTypeIPv6, ipv6(0, 17, 0)...), false},
		{"truncated IPv4", eth(etherTypeIPv4, 0x45, 0, 0), false},
		{"runt", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isUDP(tt.frame); got != tt.want {
				t.Errorf("isUDP = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzIsUDP(f *testing.F) {
	f.Add([]byte{})
	f.Add(append(make([]byte, 12), 0x86, 0xdd, 0x60))
	f.Fuzz(func(t *testing.T, b []byte) { isUDP(b) })
}
