package server

import (
	"sync"
	"time"
)

// Rate limits in bits per second.
const (
	minRate = 1_000_000
	// uncappedRate stands for "no cap": the link and the clients set the
	// pace through the kernel's queue and the flow-control window.
	uncappedRate = 100_000_000_000
)

// rateControl holds the send rate: never above the cap, lowered when the
// kernel's queue overflows (the link is full), raised again when it does
// not.
type rateControl struct {
	mu        sync.Mutex
	cap       int64
	rate      int64
	lastCut   time.Time
	lastRaise time.Time
}

func newRateControl(maxRate int64) *rateControl {
	if maxRate <= 0 {
		maxRate = uncappedRate
	}
	return &rateControl{cap: maxRate, rate: maxRate}
}

func (r *rateControl) current() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	// Climb back toward the cap when no stall happened for a while.
	if r.rate < r.cap && now.Sub(r.lastCut) > 100*time.Millisecond && now.Sub(r.lastRaise) > 20*time.Millisecond {
		r.rate = min(r.cap, r.rate+r.rate/50+minRate)
		r.lastRaise = now
	}
	return r.rate
}

// stalled notes that the kernel's send queue was full.
func (r *rateControl) stalled() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastCut) < 10*time.Millisecond {
		return
	}
	if r.rate >= uncappedRate {
		r.rate = 1_000_000_000
	}
	r.rate = max(minRate, r.rate*9/10)
	r.lastCut = now
}
