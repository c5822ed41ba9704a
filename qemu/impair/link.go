package impair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// LinkConfig configures Insert.
type LinkConfig struct {
	// ToHost are the rules for the frames the host receives.
	ToHost Rules
	// FromHost are the rules for the frames the host sends. On a
	// multicast sender's link they act on every receiver at once.
	FromHost Rules
	// Seed seeds the switch (see Config.Seed); 0: random, logged.
	Seed uint64
	// Logger receives the switch's log. Nil: discard.
	Logger *slog.Logger
}

// Link is a Switch spliced into one lab host's (or tap's) link, between
// the host and the bridge. Close it before the lab (with t.Cleanup
// registered after the lab's, that is the order tests get).
type Link struct {
	Host *lab.Host // the host, or nil for a tap
	Name string    // the host's name, or the tap

	sw     *Switch
	detour *lab.Detour
	cancel context.CancelFunc
	done   chan struct{}
	runErr error

	closeOnce sync.Once
	closeErr  error
}

// Insert cuts h's link open (lab.Detour) and runs a Switch in the switch
// namespace, on a goroutine of this process, between the host's port and
// the bridge: every frame h sends or receives crosses it. If Insert fails,
// the host is put back on the bridge.
func Insert(l *lab.Lab, h *lab.Host, cfg LinkConfig) (*Link, error) {
	d, err := l.Detour(h)
	if err != nil {
		return nil, fmt.Errorf("impair: insert on %s: %w", h.Name, err)
	}
	k, err := insert(l, d, h.Name, cfg)
	if err != nil {
		return nil, err
	}
	k.Host = h
	return k, nil
}

// InsertTap is Insert for a tap made by lab.AddTap, e.g. a running VM's
// NIC (vm.VM.Tap): ToHost rules act on what the VM receives. QEMU's tap
// backend passes the guest's segmentation offload through by default, so a
// guest's TCP may cross the switch in super-frames (up to 64 KiB) that
// count as one frame; start QEMU with vnet_hdr=off for wire-sized frames.
func InsertTap(l *lab.Lab, tap string, cfg LinkConfig) (*Link, error) {
	d, err := l.DetourTap(tap)
	if err != nil {
		return nil, fmt.Errorf("impair: insert on %s: %w", tap, err)
	}
	return insert(l, d, tap, cfg)
}

// insert runs a switch across detour d.
func insert(l *lab.Lab, d *lab.Detour, name string, cfg LinkConfig) (*Link, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var sw *Switch
	err := l.SwitchDo(func() error {
		var err error
		sw, err = New(Config{
			A: d.HostSide, B: d.BridgeSide,
			AtoB: cfg.FromHost, BtoA: cfg.ToHost,
			Seed: cfg.Seed, Logger: log.With("link", name),
		})
		return err
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("impair: insert on %s: %w", name, err), d.Close())
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Link{Name: name, sw: sw, detour: d, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(k.done)
		if err := sw.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("impair: link stopped forwarding", "link", name, "err", err)
			k.runErr = err
		}
	}()
	return k, nil
}

// Seed returns the seed of the link's switch.
func (k *Link) Seed() uint64 { return k.sw.Seed() }

// Stats returns the counters of the frames the host received (toHost) and
// sent (fromHost).
func (k *Link) Stats() (toHost, fromHost Counters) {
	fromHost, toHost = k.sw.Stats()
	return toHost, fromHost
}

// Close stops the switch, waits for it, and puts the host back on the
// bridge. It returns the error that stopped forwarding early, if any. It is
// idempotent.
func (k *Link) Close() error {
	k.closeOnce.Do(func() {
		k.cancel()
		<-k.done
		k.closeErr = errors.Join(k.runErr, k.sw.Close(), k.detour.Close())
	})
	return k.closeErr
}
