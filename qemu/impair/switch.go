package impair

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ErrClosed is returned by Run on a switch that was closed.
var ErrClosed = errors.New("impair: switch closed")

// aLongTimeAgo is a read deadline in the past: it ends pending reads.
var aLongTimeAgo = time.Unix(1, 0)

// PCG streams of the two directions, so that they draw independent
// sequences from one seed.
const (
	streamAtoB = 0xa2b
	streamBtoA = 0xb2a
)

// Config configures a Switch.
type Config struct {
	// A and B are the interfaces to forward between, in the network
	// namespace of the thread that calls New. Both must exist and be up;
	// neither should be a bridge port (the switch is their only path).
	A, B string
	// AtoB are the rules for frames read on A and written to B; BtoA for
	// the other way. Zero rules forward unharmed.
	AtoB, BtoA Rules
	// Seed seeds the pseudo-random generators; the same seed and the same
	// frames give the same decisions. 0: a random seed, which New logs
	// (Switch.Seed returns it) so that a failure can be replayed.
	Seed uint64
	// NoVnetHdr turns off PACKET_VNET_HDR. By default the sockets carry
	// the kernel's checksum and segmentation offload state with each
	// frame, so frames whose checksum is left to offload (the norm on veth
	// and tap devices) stay valid; without it, turn offloads off on the
	// interfaces that send into A and B.
	NoVnetHdr bool
	// Logger receives the seed, the rules and the final counters (info)
	// and link events (debug). Nil: discard.
	Logger *slog.Logger
}

// Switch forwards frames between two interfaces, applying each direction's
// rules. Create it with New, forward with Run, and Close it.
type Switch struct {
	log  *slog.Logger
	seed uint64
	a, b *port
	dirs [2]*direction // A→B, B→A

	mu      sync.Mutex
	running bool
	closed  bool
	stop    chan struct{} // closed by Close
	runDone chan struct{} // closed when Run returns

	closeOnce sync.Once
	closeErr  error
}

// New opens AF_PACKET sockets on cfg.A and cfg.B (every protocol,
// promiscuous, ignoring the frames the switch itself sends). Frames are
// queued by the kernel from then on, but only forwarded once Run runs.
// The sockets stay in the network namespace New was called in.
func New(cfg Config) (*Switch, error) {
	if cfg.A == "" || cfg.B == "" || cfg.A == cfg.B {
		return nil, fmt.Errorf("impair: new: need two different interfaces, got %q and %q", cfg.A, cfg.B)
	}
	for _, r := range []struct {
		name  string
		rules Rules
	}{{"AtoB", cfg.AtoB}, {"BtoA", cfg.BtoA}} {
		if err := r.rules.Validate(); err != nil {
			return nil, fmt.Errorf("impair: new: %s rules: %w", r.name, err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seed := cfg.Seed
	for seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails
		seed = binary.LittleEndian.Uint64(b[:])
	}
	a, b, err := openPair(cfg.A, cfg.B, !cfg.NoVnetHdr, log)
	if err != nil {
		return nil, fmt.Errorf("impair: new: %w", err)
	}
	s := &Switch{
		log:     log,
		seed:    seed,
		a:       a,
		b:       b,
		stop:    make(chan struct{}),
		runDone: make(chan struct{}),
	}
	s.dirs[0] = newDirection(cfg.A+"→"+cfg.B, a, b, cfg.AtoB, seed, streamAtoB)
	s.dirs[1] = newDirection(cfg.B+"→"+cfg.A, b, a, cfg.BtoA, seed, streamBtoA)
	log.Info("impair: switch ready", "a", cfg.A, "b", cfg.B, "seed", seed,
		"a_to_b", cfg.AtoB.String(), "b_to_a", cfg.BtoA.String(), "vnet_hdr", a.vnet)
	return s, nil
}

// openPair opens the two ports, both with the virtio header or neither.
func openPair(nameA, nameB string, vnet bool, log *slog.Logger) (a, b *port, err error) {
	for {
		a, err = openPort(nameA, vnet)
		if err == nil {
			b, err = openPort(nameB, vnet)
			if err != nil {
				a.close()
			}
		}
		if err == nil || !vnet {
			return a, b, err
		}
		log.Warn("impair: without PACKET_VNET_HDR: turn checksum offload off on the interfaces", "err", err)
		vnet = false
	}
}

// Seed returns the seed of the switch's generators.
func (s *Switch) Seed() uint64 { return s.seed }

// Run forwards frames until ctx is done or Close is called. It returns
// ctx's error, nil after Close, or the error that stopped forwarding (a
// socket failing otherwise than by its link going down). Run can be called
// once; the switch forwards nothing after it returns.
func (s *Switch) Run(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.running:
		s.mu.Unlock()
		return errors.New("impair: run: already called")
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.runDone)

	var wg sync.WaitGroup
	errc := make(chan error, len(s.dirs))
	quit := make(chan struct{}) // ends the timer loops
	for _, d := range s.dirs {
		wg.Go(func() {
			if err := d.readLoop(s.log); err != nil {
				errc <- err
			}
		})
		if d.rules.timed() {
			wg.Go(func() { d.timerLoop(quit) })
		}
	}
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.stop:
	case err = <-errc:
	}
	close(quit)
	for _, p := range []*port{s.a, s.b} {
		// Fails only if Close already closed the socket, which ends the
		// read as well.
		_ = p.stopReads()
	}
	wg.Wait()
	if err != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("impair: run: %w", err)
	}
	return err
}

// Stats returns the counters of each direction so far.
func (s *Switch) Stats() (atob, btoa Counters) {
	return s.dirs[0].stats(), s.dirs[1].stats()
}

// Close stops Run, waits for it to return and closes the sockets. It is
// idempotent: later calls return the first call's result.
func (s *Switch) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		running := s.running
		s.mu.Unlock()
		close(s.stop)
		if running {
			<-s.runDone
		}
		atob, btoa := s.Stats()
		s.closeErr = errors.Join(s.a.close(), s.b.close())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("impair: close: %w", s.closeErr)
		}
		for i, c := range []Counters{atob, btoa} {
			s.log.Info("impair: counters", "dir", s.dirs[i].name, "seed", s.seed, "counters", c.String())
		}
	})
	return s.closeErr
}

// String renders counters on one line.
func (c Counters) String() string {
	return fmt.Sprintf("received %d forwarded %d dropped %d duplicated %d reordered %d delayed %d exempt %d overruns %d send-errors %d",
		c.Received, c.Forwarded, c.Dropped, c.Duplicated, c.Reordered, c.Delayed, c.Exempt, c.Overruns, c.SendErrors)
}

// direction forwards one way: it reads frames from in and writes them to
// out, as its shaper decides.
type direction struct {
	name    string
	in, out *port
	rules   Rules
	wake    chan struct{} // tells the timer loop a frame waits

	mu         sync.Mutex // guards the fields below and serialises writes to out
	sh         *shaper
	forwarded  uint64
	sendErrors uint64
	batch      [][]byte
}

func newDirection(name string, in, out *port, rules Rules, seed, stream uint64) *direction {
	return &direction{
		name: name, in: in, out: out, rules: rules,
		wake: make(chan struct{}, 1),
		sh:   newShaper(rules, seed, stream),
	}
}

// readLoop forwards frames until the input socket's reads are stopped or
// closed. It returns nil then, or the read error that stopped it.
func (d *direction) readLoop(log *slog.Logger) error {
	buf := make([]byte, maxFrame)
	hdr := 0
	if d.in.vnet {
		hdr = vnetHdrLen
	}
	for {
		n, err := d.in.read(buf)
		switch {
		case errors.Is(err, os.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		case isDown(err):
			// The link went down (or its peer left); the kernel says so
			// once and delivers again when it comes back up.
			log.Debug("impair: input link down", "dir", d.name, "err", err)
			continue
		case err != nil:
			return fmt.Errorf("read %s: %w", d.in.name, err)
		case n > len(buf) || n < hdr:
			continue // cut (cannot happen with a 64 KiB frame limit) or malformed
		}
		frame := buf[:n]
		eligible := !d.rules.UDPOnly || isUDP(frame[hdr:])
		now := time.Now()
		d.mu.Lock()
		switch dec := d.sh.admit(eligible); {
		case dec.drop:
		case dec.delay == 0 && !dec.hold && d.sh.waiting() == 0:
			// Fast path: nothing waits, so nothing is overtaken; send
			// from the read buffer.
			for range dec.copies {
				d.send(frame)
			}
		default:
			d.sh.schedule(now, bytes.Clone(frame), dec)
		}
		d.flush(now)
		waiting := d.sh.waiting() > 0
		d.mu.Unlock()
		if waiting {
			select {
			case d.wake <- struct{}{}:
			default:
			}
		}
	}
}

// timerLoop sends the frames that wait for their time, until quit.
func (d *direction) timerLoop(quit <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		d.mu.Lock()
		d.flush(time.Now())
		next, ok := d.sh.next()
		d.mu.Unlock()
		if ok {
			t.Reset(time.Until(next))
		}
		select {
		case <-quit:
			t.Stop()
			return
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// flush sends the frames due by now. The caller holds d.mu.
func (d *direction) flush(now time.Time) {
	if d.sh.waiting() == 0 {
		return
	}
	d.batch = d.sh.due(now, d.batch[:0])
	for i, f := range d.batch {
		d.send(f)
		d.batch[i] = nil
	}
}

// send writes one frame to the output. Errors lose the frame, as a real
// link would; they are counted. The caller holds d.mu.
func (d *direction) send(frame []byte) {
	if err := d.out.write(frame); err != nil {
		d.sendErrors++
		return
	}
	d.forwarded++
}

// stats returns the direction's counters.
func (d *direction) stats() Counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sh.c
	c.Forwarded = d.forwarded
	c.SendErrors = d.sendErrors
	c.Overruns += d.in.overruns()
	return c
}
