package server

import (
	"sync"
	"time"
)

// Rate limits in bits per second.
const (
	minRate = 1_000_000
	// uncappedRate stands for "no cap": the link and the clients set the
	// pace.
	uncappedRate = 100_000_000_000
	// startRate is where a session starts when the cap is higher. The rate
	// then grows by a quarter every slowStartStep until the first sign of
	// a full link (slow start), so the first burst cannot drown a slow
	// link or client.
	startRate     = 100_000_000
	slowStartStep = 50 * time.Millisecond
	// raiseStep is how often the rate grows after slow start: by 5 % while
	// well below the rate that last caused loss, by 1 % near or above it.
	raiseStep = 50 * time.Millisecond
)

// Loss-based control.
const (
	// lossInterval is how often the clients' loss is looked at; about a
	// heartbeat, so every sample holds fresh reports.
	lossInterval = 250 * time.Millisecond
	// lossBackoff is the loss at the worst client that means the sender
	// outruns a client or a link on the way: far more than a lossy link's
	// few per cent, which backing off would not cure (repairs and FEC do).
	lossBackoff = 0.25
	// lossHold is how long after a cut loss reports are ignored: they
	// describe the time before the cut.
	lossHold = 600 * time.Millisecond
	// Within lossMemory of a loss-based cut the sender knows it is at a
	// bottleneck: it climbs slowly, and smaller loss (lossBackoffNear)
	// already means it went too far.
	lossMemory      = 5 * time.Second
	lossBackoffNear = 0.10
	// minLossSample is the fewest packets a client must have been sent in
	// an interval for its loss to count.
	minLossSample = 200
)

// rateControl holds the send rate: never above the cap; lowered when the
// kernel's queue overflows (the local link is full) or when a client loses
// a large share of what is sent (the sender outruns it or a link on the
// way); raised again when neither happens, quickly while well below the
// rate that last caused loss, carefully near it.
type rateControl struct {
	mu        sync.Mutex
	cap       int64
	rate      int64
	threshold int64 // the rate that last caused loss or a full queue (0: none yet)
	slowStart bool
	lastRaise time.Time
	lastCut   time.Time
	lossCut   time.Time
	holdUntil time.Time
}

func newRateControl(maxRate int64) *rateControl {
	if maxRate <= 0 {
		maxRate = uncappedRate
	}
	return &rateControl{cap: maxRate, rate: min(maxRate, startRate), slowStart: true, lastRaise: time.Now()}
}

func (r *rateControl) current() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	switch {
	case r.rate >= r.cap:
	case r.slowStart:
		if now.Sub(r.lastRaise) >= slowStartStep {
			r.rate = min(r.cap, r.rate+r.rate/4)
			r.lastRaise = now
		}
	case now.Sub(r.lastCut) > 100*time.Millisecond && now.Sub(r.lastRaise) >= raiseStep:
		step := r.rate / 20
		switch {
		case !r.lossCut.IsZero() && now.Sub(r.lossCut) < lossMemory:
			step = r.rate/200 + minRate/4
		case r.threshold > 0 && r.rate > r.threshold*9/10:
			step = r.rate/100 + minRate/2
		}
		r.rate = min(r.cap, r.rate+step)
		r.lastRaise = now
	}
	return r.rate
}

// stalled notes that the kernel's send queue was full: the local link is
// at its limit.
func (r *rateControl) stalled() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastCut) < 10*time.Millisecond {
		return
	}
	r.slowStart = false
	r.threshold = r.rate
	r.rate = max(minRate, r.rate*9/10)
	r.lastCut = now
}

// lossy takes the worst client's loss over an interval that began at
// since, and the rate at which that client received (its goodput). Loss
// beyond lossBackoff cuts the rate to that goodput: what the client, or
// the link to it, can take.
func (r *rateControl) lossy(worst float64, goodput int64, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	limit := lossBackoff
	if !r.lossCut.IsZero() && now.Sub(r.lossCut) < lossMemory {
		limit = lossBackoffNear
	}
	if worst < limit {
		return
	}
	if since.Before(r.holdUntil) {
		return // the reports may describe the time before the last cut
	}
	r.threshold = goodput
	r.rate = max(minRate, min(r.rate*3/4, goodput*95/100))
	r.slowStart = false
	r.lastCut, r.lossCut, r.holdUntil = now, now, now.Add(lossHold)
}
