package impair

import (
	"container/heap"
	"math/rand/v2"
	"time"
)

// maxQueued bounds the frames one direction keeps waiting (delayed or held
// back); a frame beyond it is lost and counted as an overrun.
const maxQueued = 1 << 16

// Counters count what one direction of a switch did.
type Counters struct {
	Received   uint64 // frames read from the input interface
	Exempt     uint64 // frames the rules do not apply to (not UDP, with UDPOnly); forwarded unharmed
	Forwarded  uint64 // frames written to the output interface, copies included
	Dropped    uint64 // frames dropped by the loss rules
	Duplicated uint64 // extra copies made by the duplication rule
	Reordered  uint64 // frames held back and overtaken by at least one later frame
	Delayed    uint64 // frames given a delay above zero
	// Overruns counts frames lost because the switch could not keep up:
	// the kernel's socket buffer or the delay queue was full. This is loss
	// the rules did not choose.
	Overruns uint64
	// SendErrors counts frames the output interface refused (link down, no
	// buffer space): lost as well.
	SendErrors uint64
}

// decision is the fate of one frame.
type decision struct {
	drop   bool
	copies int           // 1, or 2 when duplicated
	hold   bool          // held back for reordering
	delay  time.Duration // before the frame may leave
}

// shaper applies one direction's rules: it decides the fate of each frame
// from its pseudo-random generator, and holds the frames that must wait. It
// knows nothing of sockets or of the real clock, so tests drive it with a
// fake frame stream and fake times. It is not safe for concurrent use.
type shaper struct {
	rules Rules
	rng   *rand.Rand
	bad   bool   // Gilbert-Elliott state
	seq   uint64 // orders frames released at the same time
	queue frameHeap
	held  []*heldFrame
	c     Counters
}

// heldFrame is a frame held back for reordering.
type heldFrame struct {
	frame     []byte
	copies    int
	at        time.Time // when it could leave if not held
	deadline  time.Time // when it leaves anyway
	left      int       // frames still to overtake it
	overtaken int
}

// newShaper returns a shaper for rules whose decisions follow the PCG
// generator seeded with (seed, stream).
func newShaper(rules Rules, seed, stream uint64) *shaper {
	return &shaper{rules: rules, rng: rand.New(rand.NewPCG(seed, stream))}
}

// decide draws the fate of the next frame the rules apply to. It always
// takes five draws from the generator, whatever the rules, so that frame n's
// fate depends only on the seed, n and the Gilbert-Elliott state.
func (s *shaper) decide() decision {
	r := &s.rules
	var u [5]float64
	for i := range u {
		u[i] = s.rng.Float64()
	}
	if r.BurstEnter > 0 {
		if s.bad {
			s.bad = u[0] >= r.BurstLeave
		} else {
			s.bad = u[0] < r.BurstEnter
		}
	}
	loss := r.Loss
	if s.bad {
		loss = r.BurstLoss
	}
	d := decision{copies: 1}
	if u[1] < loss {
		d.drop = true
		return d
	}
	if u[2] < r.Duplicate {
		d.copies = 2
	}
	d.hold = u[3] < r.Reorder
	d.delay = r.Delay
	if r.Jitter > 0 {
		d.delay += time.Duration((2*u[4] - 1) * float64(r.Jitter))
	}
	d.delay = max(d.delay, 0)
	return d
}

// admit counts one arriving frame and decides its fate; a frame the rules
// do not apply to (eligible false) leaves at once, unharmed.
func (s *shaper) admit(eligible bool) decision {
	s.c.Received++
	if !eligible {
		s.c.Exempt++
		return decision{copies: 1}
	}
	d := s.decide()
	switch {
	case d.drop:
		s.c.Dropped++
		return d
	case d.copies > 1:
		s.c.Duplicated += uint64(d.copies - 1)
	}
	if d.delay > 0 {
		s.c.Delayed++
	}
	return d
}

// schedule queues a frame admitted at now with decision d; due returns it
// when its time comes. The shaper keeps frame: the caller must not reuse it.
func (s *shaper) schedule(now time.Time, frame []byte, d decision) {
	if d.drop {
		return
	}
	if s.queue.Len()+len(s.held) >= maxQueued {
		s.c.Overruns++
		return
	}
	at := now.Add(d.delay)
	if d.hold {
		s.held = append(s.held, &heldFrame{
			frame: frame, copies: d.copies, at: at, deadline: at.Add(s.rules.wait()), left: s.rules.depth(),
		})
		return
	}
	s.enqueue(at, frame, d.copies)
	s.overtake(at)
}

// push admits and schedules one frame: admit and schedule in one call.
func (s *shaper) push(now time.Time, frame []byte, eligible bool) {
	s.schedule(now, frame, s.admit(eligible))
}

// enqueue queues copies of frame to leave at time at.
func (s *shaper) enqueue(at time.Time, frame []byte, copies int) {
	for range copies {
		s.seq++
		heap.Push(&s.queue, queued{at: at, seq: s.seq, frame: frame})
	}
}

// overtake notes that a frame leaving at time at overtook every held frame,
// and releases, right after it, those that have been overtaken enough.
func (s *shaper) overtake(at time.Time) {
	if len(s.held) == 0 {
		return
	}
	var release []*heldFrame
	kept := s.held[:0]
	for _, h := range s.held {
		h.left--
		h.overtaken++
		if h.left <= 0 {
			release = append(release, h)
		} else {
			kept = append(kept, h)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
	for _, h := range release {
		s.c.Reordered++
		s.enqueue(later(at, h.at), h.frame, h.copies)
	}
}

// due appends to out the frames whose time has come by now, in the order
// they leave, and returns it.
func (s *shaper) due(now time.Time, out [][]byte) [][]byte {
	if len(s.held) > 0 {
		kept := s.held[:0]
		for _, h := range s.held {
			if h.deadline.After(now) {
				kept = append(kept, h)
				continue
			}
			if h.overtaken > 0 {
				s.c.Reordered++
			}
			s.enqueue(h.at, h.frame, h.copies)
		}
		clear(s.held[len(kept):])
		s.held = kept
	}
	for s.queue.Len() > 0 && !s.queue[0].at.After(now) {
		out = append(out, heap.Pop(&s.queue).(queued).frame)
	}
	return out
}

// next returns when the next frame is due, or false if none waits.
func (s *shaper) next() (time.Time, bool) {
	var t time.Time
	ok := false
	if s.queue.Len() > 0 {
		t, ok = s.queue[0].at, true
	}
	for _, h := range s.held {
		if !ok || h.deadline.Before(t) {
			t, ok = h.deadline, true
		}
	}
	return t, ok
}

// waiting returns how many frames wait in the shaper, copies included.
func (s *shaper) waiting() int {
	n := s.queue.Len()
	for _, h := range s.held {
		n += h.copies
	}
	return n
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// queued is a frame waiting for its time.
type queued struct {
	at    time.Time
	seq   uint64
	frame []byte
}

// frameHeap orders queued frames by time, then by arrival.
type frameHeap []queued

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *frameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = queued{}
	*h = old[:len(old)-1]
	return x
}
