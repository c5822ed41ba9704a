// Package server runs a shoal session: it answers discovery for its session
// name, admits clients over TCP, decides when to start (Ghost's criteria),
// multicasts the image with NACK repair and flow control bounded by the
// slowest live client, drops dead or too-slow clients, and collects every
// client's read-back report into a summary.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/protocol"
)

// SlowPolicy says what happens to a client that holds the session back.
type SlowPolicy string

// Slow-client policies.
const (
	// SlowWait lets the slowest client set the pace (Ghost's "master client").
	SlowWait SlowPolicy = "wait"
	// SlowDrop drops a client that has held the sender back for SlowAfter.
	SlowDrop SlowPolicy = "drop"
)

// Mode is how the data stream reaches the clients (Ghost's "force mode").
type Mode string

// Transfer modes.
const (
	// ModeMulticast sends once to a multicast group (the default).
	ModeMulticast Mode = "multicast"
	// ModeBroadcast sends once to the interface's directed broadcast
	// address: for networks whose switches drop multicast.
	ModeBroadcast Mode = "broadcast"
	// ModeUnicast sends one stream per client: for networks that carry
	// neither; it costs one copy of the image per client on the wire.
	ModeUnicast Mode = "unicast"
)

// Config describes one session. The zero value of every optional field
// means the documented default.
type Config struct {
	// Session is the name clients ask for. Required.
	Session string
	// Source is the image to send. Required; the caller closes it.
	Source imaging.Source
	// ImageName names the image in logs and reports.
	ImageName string

	// Interface to serve on; empty picks the default route's interface.
	Interface string
	// Groups is the range the data group is picked from at random
	// (DefaultGroups).
	Groups GroupRange
	// DataPort is the UDP port of the data stream (protocol.DefaultDataPort).
	DataPort int
	// DiscoveryPort is where clients' Discover packets arrive
	// (protocol.DiscoveryPort).
	DiscoveryPort int
	// ControlPort is the TCP port clients join on; 0 picks a free one (the
	// Offer tells clients which).
	ControlPort int
	// TTL of the data stream's packets (1: the local network only).
	TTL int
	// Mode is how data reaches the clients (ModeMulticast).
	Mode Mode
	// FallbackAfter: in multicast mode, a client that has heard nothing of
	// the group this long after joining makes the session fall back to
	// broadcast (3 s; negative: never).
	FallbackAfter time.Duration
	// MaxRate caps the send rate in bits per second on the wire; 0 means
	// no cap beyond what the link and the clients take.
	MaxRate int64
	// MTU of the path, which sets the data payload size (1500).
	MTU int

	// Key, if set, authenticates every packet of the session (and the
	// manifest and control messages); Encrypt also encrypts them.
	Key     *protocol.Key
	Encrypt bool

	// Start criteria: whichever comes first starts the session, once at
	// least one client has joined. With none set, only StartNow starts it.
	MinClients    int           // start when this many clients have joined
	WaitAfterJoin time.Duration // start this long after the last join
	StartAt       time.Time     // start at this time

	// ClientTimeout is the silence after which a client is dropped (8 s).
	ClientTimeout time.Duration
	// Heartbeat is how often clients report progress (250 ms).
	Heartbeat time.Duration
	// Slow is the policy for a client that cannot keep up (SlowWait);
	// SlowAfter is how long it may hold the sender back under SlowDrop
	// (30 s).
	Slow      SlowPolicy
	SlowAfter time.Duration

	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// OnEvent, if set, is called for every client event (joined, finished,
	// failed, …) in order. It must not block for long.
	OnEvent func(Event)
}

// DefaultMTU is the path MTU assumed unless configured.
const DefaultMTU = 1500

// ipUDPOverhead is what IPv4 and UDP headers add to a datagram.
const ipUDPOverhead = 28

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Session == "" {
		return cfg, errors.New("no session name: give --session")
	}
	if len(cfg.Session) > 255 {
		return cfg, errors.New("session name longer than 255 bytes")
	}
	if cfg.Source == nil {
		return cfg, errors.New("no image")
	}
	if !cfg.Groups.IsValid() {
		cfg.Groups = DefaultGroups
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeMulticast
	case ModeMulticast, ModeBroadcast, ModeUnicast:
	default:
		return cfg, fmt.Errorf("mode %q: want multicast, broadcast or unicast", cfg.Mode)
	}
	if cfg.FallbackAfter == 0 {
		cfg.FallbackAfter = 3 * time.Second
	}
	if cfg.DataPort == 0 {
		cfg.DataPort = protocol.DefaultDataPort
	}
	if cfg.DiscoveryPort == 0 {
		cfg.DiscoveryPort = protocol.DiscoveryPort
	}
	if cfg.TTL == 0 {
		cfg.TTL = 1
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65000 {
		return cfg, fmt.Errorf("MTU %d outside [576, 65000]", cfg.MTU)
	}
	if cfg.MaxRate < 0 {
		return cfg, fmt.Errorf("negative max rate %d", cfg.MaxRate)
	}
	if cfg.MinClients < 0 {
		return cfg, fmt.Errorf("negative client count %d", cfg.MinClients)
	}
	if cfg.ClientTimeout == 0 {
		cfg.ClientTimeout = 8 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 250 * time.Millisecond
	}
	if cfg.ClientTimeout < 4*cfg.Heartbeat {
		return cfg, fmt.Errorf("client timeout %s is shorter than 4 heartbeats of %s", cfg.ClientTimeout, cfg.Heartbeat)
	}
	switch cfg.Slow {
	case "":
		cfg.Slow = SlowWait
	case SlowWait, SlowDrop:
	default:
		return cfg, fmt.Errorf("slow-client policy %q: want %q or %q", cfg.Slow, SlowWait, SlowDrop)
	}
	if cfg.SlowAfter == 0 {
		cfg.SlowAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Encrypt && cfg.Key == nil {
		return cfg, errors.New("encryption needs a key: give --key-file")
	}
	if cfg.ImageName == "" {
		cfg.ImageName = "image"
	}
	m := cfg.Source.Manifest()
	payload := cfg.payloadSize()
	for i, ch := range m.Chunks {
		if (int(ch.WireSize)+payload-1)/payload > 0xffff {
			return cfg, fmt.Errorf("chunk %d needs more than 65535 packets at MTU %d: use smaller chunks or a larger MTU", i, cfg.MTU)
		}
	}
	return cfg, nil
}

// payloadSize is the chunk bytes one data packet carries.
func (c *Config) payloadSize() int {
	n := c.MTU - ipUDPOverhead - protocol.Overhead - protocol.DataHeaderSize
	if c.Key != nil {
		n -= protocol.SealSize
	}
	return n
}
