package impair

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults for zero Rules fields.
const (
	// DefaultReorderDepth is how many later frames overtake a frame held
	// back for reordering when Rules.ReorderDepth is 0.
	DefaultReorderDepth = 1
	// DefaultReorderWait is how long a held frame waits for the frames that
	// should overtake it when Rules.ReorderWait is 0.
	DefaultReorderWait = 10 * time.Millisecond
)

// Rules are the impairments of one direction. Probabilities are in [0, 1].
// The zero value forwards every frame unharmed.
//
// For every frame the rules apply to, in this order: the Gilbert-Elliott
// state may change (good → bad with BurstEnter, bad → good with
// BurstLeave); the frame is dropped with probability Loss in the good state
// or BurstLoss in the bad state; a frame not dropped is sent twice with
// probability Duplicate, held back with probability Reorder, and delayed by
// Delay plus a uniform jitter in [-Jitter, +Jitter] (at least 0).
type Rules struct {
	// Loss is the probability of dropping a frame in the good state, that
	// is always when BurstEnter is 0 (independent random loss).
	Loss float64
	// BurstEnter is the probability, at each frame in the good state, of
	// entering the bad (burst) state. 0 disables bursts.
	BurstEnter float64
	// BurstLeave is the probability, at each frame in the bad state, of
	// returning to the good state: a burst lasts 1/BurstLeave frames on
	// average. It must not be 0 when BurstEnter is not.
	BurstLeave float64
	// BurstLoss is the probability of dropping a frame in the bad state.
	BurstLoss float64

	// Duplicate is the probability of sending a frame twice, the copy
	// right after the original.
	Duplicate float64

	// Reorder is the probability of holding a frame back until
	// ReorderDepth later frames have gone out, or ReorderWait has passed,
	// whichever comes first.
	Reorder float64
	// ReorderDepth is how many later frames overtake a held frame (0:
	// DefaultReorderDepth).
	ReorderDepth int
	// ReorderWait is the longest a held frame waits for them, after its
	// own delay (0: DefaultReorderWait).
	ReorderWait time.Duration

	// Delay is added to every frame's trip.
	Delay time.Duration
	// Jitter varies each frame's delay uniformly by up to ±Jitter (never
	// below 0); frames leave in order of their delayed times, so jitter
	// reorders frames as a real network with several paths would.
	Jitter time.Duration

	// UDPOnly limits the rules to IPv4 and IPv6 UDP frames (multicast
	// included): every other frame (ARP, TCP, ICMP) passes unharmed.
	UDPOnly bool
}

// BurstyLoss returns rules that lose a mean share loss (0 to 1) of the
// frames in bursts of meanBurst frames on average (at least 1): a
// Gilbert-Elliott model whose bad state loses every frame and whose good
// state loses none.
func BurstyLoss(loss, meanBurst float64) Rules {
	if loss <= 0 {
		return Rules{}
	}
	if loss >= 1 {
		return Rules{Loss: 1}
	}
	meanBurst = max(meanBurst, 1)
	leave := 1 / meanBurst
	// Stationary share of the bad state: enter / (enter + leave) = loss.
	enter := min(1, loss*leave/(1-loss))
	return Rules{BurstEnter: enter, BurstLeave: leave, BurstLoss: 1}
}

// MeanLoss returns the long-run share of frames the rules drop.
func (r Rules) MeanLoss() float64 {
	if r.BurstEnter <= 0 {
		return r.Loss
	}
	bad := r.BurstEnter / (r.BurstEnter + r.BurstLeave)
	return (1-bad)*r.Loss + bad*r.BurstLoss
}

// IsZero reports whether the rules change nothing.
func (r Rules) IsZero() bool {
	return r.Loss == 0 && (r.BurstEnter == 0 || r.BurstLoss == 0) && r.Duplicate == 0 &&
		r.Reorder == 0 && r.Delay == 0 && r.Jitter == 0
}

// timed reports whether frames may have to wait: some delay or reordering.
func (r Rules) timed() bool {
	return r.Delay > 0 || r.Jitter > 0 || r.Reorder > 0
}

func (r Rules) depth() int {
	if r.ReorderDepth > 0 {
		return r.ReorderDepth
	}
	return DefaultReorderDepth
}

func (r Rules) wait() time.Duration {
	if r.ReorderWait > 0 {
		return r.ReorderWait
	}
	return DefaultReorderWait
}

// Validate reports the first field out of range.
func (r Rules) Validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", r.Loss}, {"BurstEnter", r.BurstEnter}, {"BurstLeave", r.BurstLeave},
		{"BurstLoss", r.BurstLoss}, {"Duplicate", r.Duplicate}, {"Reorder", r.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) { // also catches NaN
			errs = append(errs, fmt.Errorf("%s %v is not a probability in [0, 1]", p.name, p.v))
		}
	}
	if r.BurstEnter > 0 && r.BurstLeave == 0 {
		errs = append(errs, errors.New("BurstLeave is 0 with bursts on: the first burst would never end"))
	}
	if r.ReorderDepth < 0 {
		errs = append(errs, fmt.Errorf("ReorderDepth %d is negative", r.ReorderDepth))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ReorderWait", r.ReorderWait}, {"Delay", r.Delay}, {"Jitter", r.Jitter}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// String renders the rules briefly, for logs: "none" for zero rules.
func (r Rules) String() string {
	var parts []string
	pct := func(v float64) string { return fmt.Sprintf("%.4g%%", v*100) }
	if r.Loss > 0 {
		parts = append(parts, "loss "+pct(r.Loss))
	}
	if r.BurstEnter > 0 {
		parts = append(parts, fmt.Sprintf("bursts enter %s leave %s loss %s (mean loss %s, mean burst %.3g frames)",
			pct(r.BurstEnter), pct(r.BurstLeave), pct(r.BurstLoss), pct(r.MeanLoss()), 1/r.BurstLeave))
	}
	if r.Duplicate > 0 {
		parts = append(parts, "duplicate "+pct(r.Duplicate))
	}
	if r.Reorder > 0 {
		parts = append(parts, fmt.Sprintf("reorder %s depth %d wait %s", pct(r.Reorder), r.depth(), r.wait()))
	}
	if r.Delay > 0 || r.Jitter > 0 {
		parts = append(parts, fmt.Sprintf("delay %s±%s", r.Delay, r.Jitter))
	}
	if len(parts) == 0 {
		return "none"
	}
	if r.UDPOnly {
		parts = append(parts, "UDP only")
	}
	return strings.Join(parts, ", ")
}
