// Package client joins a named shoal session and images one disk: it finds
// the server by discovery, joins over TCP, receives the image from the
// multicast stream, checks every chunk against the manifest before it
// writes it, reads the disk back and reports the result to the server.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/ctxtime"
	"github.com/shoal-lab/shoal/internal/mcast"
	"github.com/shoal-lab/shoal/protocol"
)

// Config says which session to join and where to write. The zero value of
// every optional field means the documented default.
type Config struct {
	// Session is the name of the session to join. Required.
	Session string
	// Disk is the target: a block device or a regular file, or "auto" for
	// the first non-removable disk large enough that the system did not
	// boot from. Required.
	Disk string
	// SkipZeros leaves zero chunks alone instead of zeroing them, for
	// disks known to be blank (--zero=skip).
	SkipZeros bool
	// NoVerify skips reading the disk back (--verify=off); the report then
	// says the disk was not verified.
	NoVerify bool
	// VerifyFull reads the whole disk back after the transfer and hashes it
	// in one pass (--verify=full). By default each chunk is read back and
	// checked right after it is written, during the transfer, and the head
	// (written last) after it.
	VerifyFull bool
	// Grow extends the last partition of a GPT image to the end of a
	// larger disk.
	Grow bool
	// BootDevices and BootPaths name the medium the system booted from
	// (device paths, and files on it): --disk auto never picks it.
	BootDevices []string
	BootPaths   []string
	// CorruptChunk, if not zero, flips a byte of chunk CorruptChunk-1 on
	// the disk right after it is written: fault injection, so tests can
	// prove a disk that stores wrong bytes is reported.
	CorruptChunk int
	// Server, if set, is asked directly instead of by broadcast and
	// multicast (for servers behind a router).
	Server netip.Addr
	// Interface to use; empty picks the default route's interface, or the
	// only configured one.
	Interface string
	// Key, if set, is the session's key: the client then accepts only
	// packets sealed with it, and refuses servers without it.
	Key *protocol.Key
	// DiscoveryPort is the server's discovery port (protocol.DiscoveryPort).
	DiscoveryPort int
	// DiscoveryTTL is the TTL of multicast discovery packets (1).
	DiscoveryTTL int
	// BufferChunks is how many chunks may be received ahead of the disk
	// (DefaultBufferChunks). It bounds memory: BufferChunks × chunk size.
	BufferChunks int
	// ServerTimeout is how long the server may stay silent before the
	// client gives up (15 s).
	ServerTimeout time.Duration
	// Logger receives the client's log; nil discards it.
	Logger *slog.Logger
	// Status, if set, is called about four times a second with the
	// client's state, for a console display. It must not block.
	Status func(Status)
}

// DefaultBufferChunks is the receive window in chunks when none is set.
const DefaultBufferChunks = 64

// Phase is where a client is in its session.
type Phase string

// Client phases, as shown to people.
const (
	PhaseDiscovering Phase = "discovering"
	PhaseJoining     Phase = "joining"
	PhaseWaiting     Phase = "waiting for start"
	PhaseReceiving   Phase = "receiving"
	PhaseVerifying   Phase = "verifying"
	PhaseDone        Phase = "done"
	PhaseFailed      Phase = "failed"
)

// Status is a snapshot of the client's progress.
type Status struct {
	Phase        Phase
	Session      string
	Server       string
	Message      string // what the client is doing or waiting for, for people
	ImageBytes   int64
	BytesWritten int64
	BytesRead    int64 // during read-back verification
	Received     uint64
	Lost         uint64
	Elapsed      time.Duration
}

// Result is the outcome of a session on this client.
type Result struct {
	Session  string
	Server   netip.AddrPort
	ClientID uint32
	// OK is true only if every byte read back from the disk matched (or,
	// with NoVerify, if everything was written).
	OK       bool
	Verified bool // the disk was read back
	Bytes    int64
	SHA256   [32]byte
	BadChunk int // first chunk that read back wrong, or -1
	Elapsed  time.Duration
	Stats    Stats
}

// Stats counts what the receiver saw.
type Stats struct {
	Received   uint64 // data packets taken, first copies
	Duplicates uint64 // data packets we already had
	Forged     uint64 // packets whose seal did not verify (keyed sessions)
	Replayed   uint64 // sealed packets seen before (keyed sessions)
	Lost       uint64 // fragments asked for again
	Nacks      uint64 // NACK messages sent
	BadPackets uint64 // packets with a bad checksum or malformed body
	Foreign    uint64 // packets of another session
	BadChunks  uint64 // chunks whose SHA-256 did not match, fetched again
	Heard      uint64 // packets of our session's stream, beacons included
	Parity     uint64 // parity shards taken
	Rebuilt    uint64 // fragments rebuilt from parity
}

// ErrRefused wraps a server's refusal.
var ErrRefused = errors.New("server refused to join")

// RefusedError is a refusal with the server's code and reason.
type RefusedError struct {
	Code   uint8
	Reason string
}

func (e *RefusedError) Error() string { return "server refused: " + e.Reason }
func (e *RefusedError) Unwrap() error { return ErrRefused }

// ErrServerGone means the server stopped talking mid-session.
var ErrServerGone = errors.New("server went away")

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Session == "" {
		return cfg, errors.New("no session name: give --session (shoal.session= at boot)")
	}
	if cfg.Disk == "" {
		return cfg, errors.New("no target disk: give --disk (shoal.disk= at boot)")
	}
	if cfg.DiscoveryPort == 0 {
		cfg.DiscoveryPort = protocol.DiscoveryPort
	}
	if cfg.DiscoveryTTL == 0 {
		cfg.DiscoveryTTL = 1
	}
	if cfg.BufferChunks == 0 {
		cfg.BufferChunks = DefaultBufferChunks
	}
	if cfg.ServerTimeout == 0 {
		cfg.ServerTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// statusBoard holds the latest Status for the display and the heartbeat.
type statusBoard struct {
	mu    sync.Mutex
	s     Status
	start time.Time
}

func (b *statusBoard) update(f func(*Status)) {
	b.mu.Lock()
	f(&b.s)
	b.mu.Unlock()
}

func (b *statusBoard) get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	if !b.start.IsZero() {
		s.Elapsed = time.Since(b.start)
	}
	return s
}

// Run joins the session and images the disk. It returns a Result whenever
// the session got as far as writing; err is non-nil whenever the disk is
// not known to be good.
func Run(ctx context.Context, cfgIn Config) (*Result, error) {
	cfg, err := cfgIn.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	board := &statusBoard{s: Status{Phase: PhaseDiscovering, Session: cfg.Session}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Status != nil {
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					cfg.Status(board.get())
				}
			}
		}()
		defer func() { cfg.Status(board.get()) }()
	}

	var target *imaging.Target
	if cfg.Disk != DiskAuto {
		// Open it now, so a wrong path is reported before any network work.
		if target, err = imaging.OpenTarget(cfg.Disk); err != nil {
			board.update(func(s *Status) { s.Phase, s.Message = PhaseFailed, err.Error() })
			return nil, err
		}
	}
	defer func() {
		if target != nil {
			target.Close()
		}
	}()

	ifi, err := mcast.Pick(cfg.Interface)
	if err != nil {
		board.update(func(s *Status) { s.Phase, s.Message = PhaseFailed, err.Error() })
		return nil, err
	}
	log.Info("client starting", "session", cfg.Session, "disk", cfg.Disk, "interface", ifi.String())

	var resume *resumeState
	retries := 0
	for {
		res, kept, err := runOnce(ctx, &cfg, ifi, &target, board, resume)
		if errors.Is(err, ErrServerGone) && ctx.Err() == nil {
			// Keep what is on disk and wait for the server to come back.
			if kept != nil {
				resume = kept
			}
			msg := fmt.Sprintf("%v; waiting for the server to come back (will resume", err)
			if resume != nil {
				msg += fmt.Sprintf(" with %d of %d chunks already on disk)", resume.count(), len(resume.written))
			} else {
				msg += ")"
			}
			log.Warn(msg)
			board.update(func(s *Status) { s.Phase, s.Message = PhaseDiscovering, msg })
			if err := ctxtime.Sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			continue
		}
		var again retryable
		if errors.As(err, &again) && ctx.Err() == nil {
			retries++
			wait := min(time.Duration(retries)*time.Second, 10*time.Second)
			msg := fmt.Sprintf("%v; trying again in %s", err, wait)
			log.Warn(msg)
			board.update(func(s *Status) { s.Phase, s.Message = PhaseDiscovering, msg })
			if err := ctxtime.Sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		var refused *RefusedError
		if errors.As(err, &refused) && refused.Code == protocol.RefuseSending {
			log.Warn("session already sending; waiting for the next round", "reason", refused.Reason)
			board.update(func(s *Status) { s.Phase, s.Message = PhaseDiscovering, refused.Reason })
			if err := ctxtime.Sleep(ctx, 2*time.Second); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			board.update(func(s *Status) { s.Phase, s.Message = PhaseFailed, err.Error() })
		} else {
			board.update(func(s *Status) { s.Phase, s.Message = PhaseDone, "disk verified" })
		}
		return res, err
	}
}

// runOnce discovers, joins and runs one session, resuming from what an
// earlier session left on disk. When the server goes away it returns what
// is on disk now, for the next try.
func runOnce(ctx context.Context, cfg *Config, ifi mcast.Interface, targetp **imaging.Target, board *statusBoard, resume *resumeState) (*Result, *resumeState, error) {
	found, err := discover(ctx, cfg, ifi, board)
	if err != nil {
		return nil, nil, err
	}
	board.update(func(s *Status) {
		s.Phase, s.Server, s.ImageBytes = PhaseJoining, found.control.String(), int64(found.offer.ImageSize)
		s.Message = "joining " + found.control.String()
	})
	// Refuse early, before talking further, when the disk is too small.
	if *targetp == nil {
		t, err := selectTarget(cfg, int64(found.offer.ImageSize))
		if err != nil {
			return nil, nil, err
		}
		*targetp = t
	}
	target := *targetp
	if err := target.CheckFits(int64(found.offer.ImageSize)); err != nil {
		return nil, nil, err
	}
	sess, err := join(ctx, cfg, ifi, target, found, resume)
	if err != nil {
		return nil, nil, err
	}
	defer sess.close()
	res, err := sess.run(ctx, board)
	return res, sess.kept, err
}

// resumeState is what a client keeps of a session whose server went away:
// which chunks of which image are written and verified, and the writer
// that holds the first MiB back until the end.
type resumeState struct {
	imageSHA256 [32]byte
	written     []bool
	writer      *imaging.Writer
	// The session and client ID it had, to rejoin the same session.
	sessionID uint64
	clientID  uint32
}

// retryable marks an error after which the client starts again from
// discovery: the network failed, not the disk or the image.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

func (r *resumeState) count() int {
	n := 0
	for _, w := range r.written {
		if w {
			n++
		}
	}
	return n
}

// ranges lists the written chunks as ranges for Join.Have.
func (r *resumeState) ranges() []protocol.ChunkRange {
	var out []protocol.ChunkRange
	for i := 0; i < len(r.written); {
		if !r.written[i] {
			i++
			continue
		}
		start := i
		for i < len(r.written) && r.written[i] {
			i++
		}
		out = append(out, protocol.ChunkRange{First: uint32(start), Count: uint32(i - start)})
	}
	return out
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// DiskAuto is the Disk value that picks the disk by itself.
const DiskAuto = "auto"

// selectTarget picks the disk for --disk auto, saying which disks it saw
// and why it chose one.
func selectTarget(cfg *Config, imageSize int64) (*imaging.Target, error) {
	chosen, all, err := imaging.SelectDisk(imageSize, imaging.SelectOptions{BootDevices: cfg.BootDevices, BootPaths: cfg.BootPaths})
	for _, c := range all {
		cfg.Logger.Info("disk candidate", "disk", c.String())
	}
	if err != nil {
		return nil, fmt.Errorf("--disk auto: %w", err)
	}
	cfg.Logger.Warn("--disk auto chose a disk", "disk", chosen.String())
	t, err := imaging.OpenTarget(chosen.Path)
	if err != nil {
		return nil, fmt.Errorf("--disk auto: %w", err)
	}
	return t, nil
}
