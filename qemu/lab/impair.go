package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// SwitchDo runs fn on a goroutine locked to an OS thread that has been
// switched into the switch namespace, like Host.Do: sockets fn opens (for
// example AF_PACKET sockets on the bridge's ports) stay in the switch
// namespace after SwitchDo returns.
func (l *Lab) SwitchDo(fn func() error) error {
	if err := doInNS(l.sw, fn); err != nil {
		return fmt.Errorf("lab: switch namespace: %w", err)
	}
	return nil
}

// Detour is a host's (or a tap's) link cut open so that a device in the
// switch namespace (an impairment switch, a capture) sits between it and
// the bridge:
//
//	host eth0 ═══ HostSide   [device]   BridgeSide ═══ shb…  ─ bridge
//
// HostSide is the host's own port (or the tap), taken off the bridge;
// BridgeSide is the free end of a new veth pair whose other end is a bridge
// port. Until something forwards frames between the two, the host is cut
// off.
//
// The host's eth0 and the new bridge port send every frame on its own
// (gso_max_segs 1), so that a device sees wire-sized frames, not TCP
// segmentation super-frames; a tap gets what QEMU writes (with its default
// vnet_hdr, possibly super-frames). Checksums may still be left to offload
// (partial): read and write the ports with PACKET_VNET_HDR to keep them
// right.
type Detour struct {
	Host       *Host  // the detoured host; nil for a tap
	HostSide   string // host's port (or the tap) in the switch namespace, off the bridge
	BridgeSide string // free end of the new veth pair, in the switch namespace

	l          *Lab
	name       string // host or tap, for logs
	bridgePort string // the new pair's end on the bridge
	segs       int    // eth0's gso_max_segs before the detour

	mu     sync.Mutex
	closed bool
	err    error
}

// Detour takes h's port off the bridge and adds a veth pair with one end on
// the bridge, both in the switch namespace, and returns the two free ends.
// Close puts the host back on the bridge; closing the lab removes the pair
// too. A host can have one detour at a time.
func (l *Lab) Detour(h *Host) (*Detour, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("lab: detour %s: %w", h.Name, ErrClosed)
	}
	ctx := context.Background()
	port, err := l.hostPort(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("lab: detour %s: %w", h.Name, err)
	}
	hl, err := linkInfo(ctx, l, h.NS, h.Iface)
	if err != nil {
		return nil, fmt.Errorf("lab: detour %s: %w", h.Name, err)
	}
	d, err := l.detour(ctx, h.Name, port)
	if err != nil {
		return nil, err
	}
	d.Host, d.segs = h, hl.GSOMaxSegs
	if _, err := run(ctx, l.log, "", "ip", "-n", h.NS, "link", "set", h.Iface, "gso_max_segs", "1"); err != nil {
		return nil, errors.Join(fmt.Errorf("lab: detour %s: %w", h.Name, err), d.restore())
	}
	return d, nil
}

// DetourTap is Detour for a tap made by AddTap, e.g. a VM's NIC: HostSide
// is the tap.
func (l *Lab) DetourTap(tap string) (*Detour, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("lab: detour %s: %w", tap, ErrClosed)
	}
	if !slices.Contains(l.taps, tap) {
		return nil, fmt.Errorf("lab: detour %s: not a tap of this lab", tap)
	}
	ctx := context.Background()
	port, err := linkInfo(ctx, l, l.sw, tap)
	if err != nil {
		return nil, fmt.Errorf("lab: detour %s: %w", tap, err)
	}
	return l.detour(ctx, tap, port)
}

// detour takes port off the bridge and adds the veth pair. The caller
// holds l.mu.
func (l *Lab) detour(ctx context.Context, name string, port ipLink) (*Detour, error) {
	if port.Master != bridgeName {
		return nil, fmt.Errorf("lab: detour %s: port %s is not on the bridge (master %q): already detoured?", name, port.Name, port.Master)
	}
	l.devSeq++
	d := &Detour{
		HostSide:   port.Name,
		BridgeSide: ifname("shd", l.devSeq, name),
		l:          l,
		name:       name,
		bridgePort: ifname("shb", l.devSeq, name),
	}
	script := "link add " + d.bridgePort + " type veth peer name " + d.BridgeSide + "\n" +
		"link set " + d.bridgePort + " gso_max_segs 1\n" +
		"link set " + d.BridgeSide + " gso_max_segs 1\n" +
		"link set " + d.HostSide + " nomaster\n" +
		"link set " + d.BridgeSide + " up\n" +
		"link set " + d.bridgePort + " master " + bridgeName + " up\n"
	if _, err := run(ctx, l.log, script, "ip", "-n", l.sw, "-batch", "-"); err != nil {
		return nil, errors.Join(fmt.Errorf("lab: detour %s: %w", name, err), d.restore())
	}
	l.log.Info("lab: detoured", "name", name, "host_side", d.HostSide, "bridge_side", d.BridgeSide)
	return d, nil
}

// Close puts the host's port (or the tap) back on the bridge and deletes the detour's
// veth pair. It is idempotent, and does nothing once the lab is closed
// (closing the lab removed everything). Stop whatever forwards between the
// two ends first.
func (d *Detour) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.err
	}
	d.closed = true
	d.l.mu.Lock()
	defer d.l.mu.Unlock()
	if d.l.closed {
		return nil
	}
	if err := d.restore(); err != nil {
		d.err = fmt.Errorf("lab: restore detour of %s: %w", d.name, err)
	}
	d.l.log.Info("lab: detour removed", "name", d.name, "err", d.err)
	return d.err
}

// restore undoes what Detour did, ignoring what was not done. The caller
// holds l.mu.
func (d *Detour) restore() error {
	ctx := context.Background()
	var errs []error
	// Deleting one end of a veth pair deletes both.
	if _, err := run(ctx, d.l.log, "", "ip", "-n", d.l.sw, "link", "delete", d.bridgePort); err != nil {
		if _, e := linkInfo(ctx, d.l, d.l.sw, d.bridgePort); e == nil {
			errs = append(errs, err)
		}
	}
	if _, err := run(ctx, d.l.log, "", "ip", "-n", d.l.sw, "link", "set", d.HostSide, "master", bridgeName, "up"); err != nil {
		errs = append(errs, err)
	}
	if d.Host != nil && d.segs > 0 {
		if _, err := run(ctx, d.l.log, "", "ip", "-n", d.Host.NS, "link", "set", d.Host.Iface, "gso_max_segs", strconv.Itoa(d.segs)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ipLink is the part of `ip -d -j link show` the lab reads.
type ipLink struct {
	Index      int    `json:"ifindex"`
	Name       string `json:"ifname"`
	LinkIndex  int    `json:"link_index"`
	Master     string `json:"master"`
	GSOMaxSegs int    `json:"gso_max_segs"`
}

// linkInfo describes interface dev of namespace ns.
func linkInfo(ctx context.Context, l *Lab, ns, dev string) (ipLink, error) {
	out, err := run(ctx, l.log, "", "ip", "-n", ns, "-d", "-j", "link", "show", "dev", dev)
	if err != nil {
		return ipLink{}, err
	}
	var links []ipLink
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return ipLink{}, fmt.Errorf("parse ip link output for %s in %s: %v: %q", dev, ns, err, out)
	}
	return links[0], nil
}

// hostPort finds h's veth peer in the switch namespace: the interface whose
// index is the link index of h's eth0.
func (l *Lab) hostPort(ctx context.Context, h *Host) (ipLink, error) {
	hl, err := linkInfo(ctx, l, h.NS, h.Iface)
	if err != nil {
		return ipLink{}, err
	}
	out, err := run(ctx, l.log, "", "ip", "-n", l.sw, "-j", "link", "show")
	if err != nil {
		return ipLink{}, err
	}
	var links []ipLink
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return ipLink{}, fmt.Errorf("parse ip link output of the switch: %w", err)
	}
	for _, sl := range links {
		if hl.LinkIndex != 0 && sl.Index == hl.LinkIndex {
			return sl, nil
		}
	}
	return ipLink{}, fmt.Errorf("no port with index %d for host %s in the switch namespace", hl.LinkIndex, h.Name)
}
