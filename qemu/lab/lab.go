package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// ErrClosed is returned by Lab methods called after Close.
var ErrClosed = errors.New("lab: closed")

// ErrUnavailable is wrapped by Available's error when the machine cannot run
// a lab.
var ErrUnavailable = errors.New("lab: virtual lab unavailable")

// Config configures a Lab. The zero value is usable.
type Config struct {
	// Subnet is the IPv4 subnet of the hosts, e.g.
	// netip.MustParsePrefix("10.77.0.0/24"); host N gets address N in it.
	// Zero value: a 10.x.y.0/24 made from the process ID and the lab's
	// number. Every lab is isolated, so subnets of parallel labs may overlap.
	Subnet netip.Prefix
	// Logger receives the commands the lab runs (debug) and its life cycle
	// (info). Nil: discard.
	Logger *slog.Logger
}

// Lab is one private virtual LAN: a switch namespace with a bridge, and the
// hosts and taps attached to it. Its methods are safe for concurrent use.
// Close it when done.
type Lab struct {
	log    *slog.Logger
	owner  owner
	seq    uint64
	subnet netip.Prefix
	sw     string // switch namespace

	mu       sync.Mutex
	made     []string // namespaces created, in order
	hosts    []*Host
	taps     []string
	devSeq   int // numbers veth and tap names; never reused
	closed   bool
	closeErr error
}

// New sweeps namespaces left by dead processes (see Sweep), then creates a
// lab: a switch namespace holding a bridge with no address, STP off and
// multicast snooping off. ctx bounds the setup only. If New fails, whatever
// it made is removed.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	log := orDiscard(cfg.Logger)
	if err := Sweep(log); err != nil {
		// Stale namespaces of other runs do not stop a new lab.
		log.Warn("lab: sweep failed", "err", err)
	}
	o, err := selfOwner()
	if err != nil {
		return nil, fmt.Errorf("lab: new: %w", err)
	}
	seq := labSeq.Add(1)
	subnet := cfg.Subnet
	if !subnet.IsValid() {
		subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + o.pid%128), byte(seq % 256), 0}), 24)
	}
	if !subnet.Addr().Is4() || subnet.Bits() < 8 || subnet.Bits() > 30 {
		return nil, fmt.Errorf("lab: new: subnet %s: want an IPv4 prefix from /8 to /30", subnet)
	}
	l := &Lab{
		log:    log.With("lab", seq),
		owner:  o,
		seq:    seq,
		subnet: subnet.Masked(),
		sw:     nsName(o, seq, switchRole),
	}
	if err := l.setupSwitch(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("lab: new: %w", err), l.Close())
	}
	l.log.Info("lab: created", "switch", l.sw, "subnet", l.subnet)
	return l, nil
}

// setupSwitch creates the switch namespace and its bridge.
func (l *Lab) setupSwitch(ctx context.Context) error {
	if err := l.addNS(ctx, l.sw); err != nil {
		return err
	}
	// The switch only forwards frames: keep it from speaking IPv6 (router
	// solicitations, MLD) on the lab LAN.
	if err := disableIPv6(l.sw); err != nil {
		return err
	}
	script := "link set lo up\n" +
		"link add " + bridgeName + " type bridge stp_state 0 forward_delay 0 mcast_snooping 0\n" +
		"link set " + bridgeName + " up\n"
	if _, err := run(ctx, l.log, script, "ip", "-n", l.sw, "-batch", "-"); err != nil {
		return fmt.Errorf("set up bridge: %w", err)
	}
	return nil
}

// disableIPv6 turns IPv6 off in namespace ns, if the kernel has it.
func disableIPv6(ns string) error {
	return doInNS(ns, func() error {
		for _, p := range []string{"all", "default"} {
			f := filepath.Join("/proc/sys/net/ipv6/conf", p, "disable_ipv6")
			err := os.WriteFile(f, []byte("1\n"), 0)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("disable IPv6 in %s: %w", ns, err)
			}
		}
		return nil
	})
}

// addNS creates namespace ns and records it for Close. The caller holds
// l.mu or is New.
func (l *Lab) addNS(ctx context.Context, ns string) error {
	if _, err := run(ctx, l.log, "", "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	l.made = append(l.made, ns)
	return nil
}

// dropNS removes namespace ns and forgets it. The caller holds l.mu.
func (l *Lab) dropNS(ns string) error {
	l.made = slices.DeleteFunc(l.made, func(s string) bool { return s == ns })
	return removeNS(context.Background(), l.log, ns)
}

// SwitchNS returns the name of the switch namespace, where the bridge and
// the taps live.
func (l *Lab) SwitchNS() string { return l.sw }

// Bridge returns the name of the bridge inside the switch namespace.
func (l *Lab) Bridge() string { return bridgeName }

// Subnet returns the hosts' subnet.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// Hosts returns the lab's hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts)
}

// AddHost adds a host: a namespace whose "eth0" is a veth to the bridge,
// with address N of the subnet (N = 1, 2, 3… in the order of AddHost), lo
// and eth0 up, a route to 224.0.0.0/4 and a default route through eth0, so
// that multicast and 255.255.255.255 broadcast work with no more setup. Its
// MAC is 02:00 followed by the four address bytes. name (1 to 12 letters,
// digits, '_' or '-', not "sw") must be unique in the lab. If AddHost fails,
// whatever it made is removed.
func (l *Lab) AddHost(name string) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("lab: add host: %w", err)
	}
	if name == switchRole {
		return nil, fmt.Errorf("lab: add host: name %q is reserved", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("lab: add host %s: %w", name, ErrClosed)
	}
	for _, h := range l.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("lab: add host %s: name already used", name)
		}
	}
	n := len(l.hosts) + 1
	addr, ok := nthAddr(l.subnet, n)
	if !ok {
		return nil, fmt.Errorf("lab: add host %s: subnet %s is full", name, l.subnet)
	}
	a4 := addr.As4()
	h := &Host{
		Name:   name,
		NS:     nsName(l.owner, l.seq, name),
		Iface:  "eth0",
		Addr:   addr,
		Prefix: netip.PrefixFrom(addr, l.subnet.Bits()),
		MAC:    net.HardwareAddr{0x02, 0x00, a4[0], a4[1], a4[2], a4[3]},
		log:    l.log.With("host", name),
	}
	l.devSeq++
	peer := ifname("shv", l.devSeq, name)
	h.sw, h.port = l.sw, peer
	if peerMade, err := l.setupHost(h, peer); err != nil {
		if peerMade {
			// Delete the switch end at once: a namespace's devices go away
			// asynchronously after ip netns delete.
			if _, delErr := run(context.Background(), l.log, "", "ip", "-n", l.sw, "link", "delete", peer); delErr != nil {
				err = errors.Join(err, delErr)
			}
		}
		if slices.Contains(l.made, h.NS) {
			err = errors.Join(err, l.dropNS(h.NS))
		}
		return nil, fmt.Errorf("lab: add host %s: %w", name, err)
	}
	l.hosts = append(l.hosts, h)
	l.log.Info("lab: host added", "host", name, "netns", h.NS, "addr", h.Addr, "port", peer)
	return h, nil
}

// setupHost creates h's namespace and wires it to the bridge through peer.
// peerMade tells whether the veth pair exists, for the caller's cleanup.
func (l *Lab) setupHost(h *Host, peer string) (peerMade bool, err error) {
	ctx := context.Background()
	if err := l.addNS(ctx, h.NS); err != nil {
		return false, err
	}
	// Created from the switch namespace, with its other end born in the
	// host namespace: no device ever exists in the root namespace.
	if _, err := run(ctx, l.log, "", "ip", "-n", l.sw, "link", "add", peer, "type", "veth",
		"peer", "name", h.Iface, "address", h.MAC.String(), "netns", h.NS); err != nil {
		return false, fmt.Errorf("create veth: %w", err)
	}
	if _, err := run(ctx, l.log, "", "ip", "-n", l.sw, "link", "set", peer, "master", bridgeName, "up"); err != nil {
		return true, fmt.Errorf("attach veth to bridge: %w", err)
	}
	script := "link set lo up\n" +
		"addr add " + h.Prefix.String() + " brd + dev " + h.Iface + "\n" +
		"link set " + h.Iface + " up\n" +
		"route add 224.0.0.0/4 dev " + h.Iface + "\n" +
		"route add default dev " + h.Iface + "\n"
	if _, err := run(ctx, l.log, script, "ip", "-n", h.NS, "-batch", "-"); err != nil {
		return true, fmt.Errorf("configure host: %w", err)
	}
	return true, nil
}

// nthAddr returns address n of subnet p, or false if it is the broadcast
// address or beyond.
func nthAddr(p netip.Prefix, n int) (netip.Addr, bool) {
	size := uint64(1) << (32 - p.Bits())
	if n <= 0 || uint64(n) >= size-1 {
		return netip.Addr{}, false
	}
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// AddTap creates a tap device in the switch namespace, attaches it to the
// bridge, sets it up and returns its interface name (at most 15 bytes). The
// tap is persistent and single-queue; start QEMU inside the switch namespace
// (SwitchCommand) with -netdev tap,ifname=<name>,script=no,downscript=no.
// name follows AddHost's rules.
func (l *Lab) AddTap(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("lab: add tap: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", fmt.Errorf("lab: add tap %s: %w", name, ErrClosed)
	}
	l.devSeq++
	tap := ifname("sht", l.devSeq, name)
	ctx := context.Background()
	if _, err := run(ctx, l.log, "", "ip", "-n", l.sw, "tuntap", "add", "dev", tap, "mode", "tap"); err != nil {
		return "", fmt.Errorf("lab: add tap %s: %w", name, err)
	}
	if _, err := run(ctx, l.log, "", "ip", "-n", l.sw, "link", "set", tap, "master", bridgeName, "up"); err != nil {
		_, delErr := run(ctx, l.log, "", "ip", "-n", l.sw, "link", "delete", tap)
		return "", errors.Join(fmt.Errorf("lab: add tap %s: %w", name, err), delErr)
	}
	l.taps = append(l.taps, tap)
	l.log.Info("lab: tap added", "tap", tap)
	return tap, nil
}

// Taps returns the names of the taps made by AddTap.
func (l *Lab) Taps() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.taps)
}

// SwitchCommand returns a command that runs name inside the switch
// namespace, e.g. QEMU using a tap from AddTap. Cancelling ctx SIGKILLs it;
// Close kills it too if it still runs.
func (l *Lab) SwitchCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, l.sw, name, args...)
}

// Close removes the lab: it SIGKILLs every process still running in the
// lab's namespaces, waits until they are gone, and deletes the namespaces,
// which removes the veths, taps and the bridge. It is idempotent (a second
// call returns the first call's result) and works on a lab that New or
// AddHost left half-made.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	var errs []error
	// Hosts first, the switch last: the reverse order of creation.
	for i := len(l.made) - 1; i >= 0; i-- {
		if err := removeNS(context.Background(), l.log, l.made[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.made = nil
	if err := errors.Join(errs...); err != nil {
		l.closeErr = fmt.Errorf("lab: close: %w", err)
	}
	l.log.Info("lab: closed", "switch", l.sw, "err", l.closeErr)
	return l.closeErr
}

// Available returns nil if this machine can run a lab: we are root, ip, nft
// and tc are installed, and a namespace with a bridge and an nftables table
// can be made. Otherwise its error (wrapping ErrUnavailable) says what is
// missing.
func Available() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("%w: need root, running as uid %d", ErrUnavailable, uid)
	}
	var missing []string
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"nft", "nftables"}, {"tc", "iproute2"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", tool.name, tool.pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing tools: %s", ErrUnavailable, strings.Join(missing, ", "))
	}
	o, err := selfOwner()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// The probe namespace follows the naming scheme, so Sweep removes it
	// should this process die before deleting it.
	ns := nsName(o, labSeq.Add(1), "probe")
	ctx := context.Background()
	log := orDiscard(nil)
	if _, err := run(ctx, log, "", "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("%w: cannot create a network namespace: %w", ErrUnavailable, err)
	}
	var errs []error
	if _, err := run(ctx, log, "", "ip", "-n", ns, "link", "add", bridgeName, "type", "bridge"); err != nil {
		errs = append(errs, fmt.Errorf("cannot create a bridge: %w", err))
	}
	if _, err := run(ctx, log, "add table inet shoal_probe\n", "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		errs = append(errs, fmt.Errorf("cannot use nftables: %w", err))
	}
	if err := removeNS(ctx, log, ns); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
