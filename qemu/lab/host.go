package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// filterTable is the nftables table (family inet) that SetLoss and
// BlockUDPDest keep in a host's namespace.
const filterTable = "shoal_lab"

// Host is one machine of a lab: a network namespace with one interface on
// the lab's bridge. Its methods are safe for concurrent use.
type Host struct {
	Name   string           // name given to AddHost
	NS     string           // network namespace name
	Iface  string           // interface on the lab LAN: "eth0"
	Addr   netip.Addr       // IPv4 address of Iface
	Prefix netip.Prefix     // Addr with the subnet's length, e.g. 10.77.0.1/24
	MAC    net.HardwareAddr // MAC of Iface

	log  *slog.Logger
	sw   string // the switch namespace
	port string // the host's port on the bridge (the veth's switch end)

	mu     sync.Mutex // serialises link shaping; guards loss and blocks
	loss   int
	blocks []netip.Prefix
}

// Command returns a command that runs name inside the host's namespace
// (through `ip netns exec`). Cancelling ctx SIGKILLs the process (not its
// children; Lab.Close kills whatever is left in the namespace), and Wait
// gives up on its output 5 s later.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, h.NS, name, args...)
}

// Run runs name inside the host's namespace and returns its combined output;
// the error includes the command and the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := runIn(ctx, h.NS, name, args...)
	if err != nil {
		return out, fmt.Errorf("lab: host %s: %w", h.Name, err)
	}
	return out, nil
}

// Do runs fn on a goroutine locked to an OS thread that has been switched
// into the host's namespace, waits for it, and switches the thread back. Go
// code in fn opens sockets, looks up interfaces (net.InterfaceByName) and so
// on inside the namespace; sockets keep their namespace after Do returns, so
// a common pattern is to open a connection in fn and use it outside.
//
// Goroutines started inside fn do NOT run in the namespace (they may run on
// any thread); only sockets already opened are bound to it. fn runs on its
// own goroutine: return an error instead of calling t.Fatal; a panic in fn is
// re-raised in the caller.
func (h *Host) Do(fn func() error) error {
	if err := doInNS(h.NS, fn); err != nil {
		return fmt.Errorf("lab: host %s: %w", h.Name, err)
	}
	return nil
}

// SetLoss drops a random percent (0 to 100) of the UDP packets the host
// receives, multicast and broadcast included, with nftables (the kernel has
// no netem): table inet shoal_lab, input hook. It replaces any earlier loss
// setting; 0 removes it. Blocks from BlockUDPDest stay.
func (h *Host) SetLoss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("lab: host %s: set loss: %d%% is not in 0..100", h.Name, percent)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.loss
	h.loss = percent
	if err := h.applyFilter(); err != nil {
		h.loss = old
		return fmt.Errorf("lab: host %s: set loss %d%%: %w", h.Name, percent, err)
	}
	return nil
}

// BlockUDPDest drops the UDP packets the host receives whose destination is
// in prefix, e.g. 239.1.2.3/32, the way an IGMP-snooping switch drops a
// multicast group the host did not join. Each call adds a prefix;
// ClearBlocks removes them all.
func (h *Host) BlockUDPDest(prefix netip.Prefix) error {
	if !prefix.IsValid() {
		return fmt.Errorf("lab: host %s: block: invalid prefix", h.Name)
	}
	prefix = prefix.Masked()
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.Contains(h.blocks, prefix) {
		return nil
	}
	h.blocks = append(h.blocks, prefix)
	if err := h.applyFilter(); err != nil {
		h.blocks = h.blocks[:len(h.blocks)-1]
		return fmt.Errorf("lab: host %s: block UDP to %s: %w", h.Name, prefix, err)
	}
	return nil
}

// ClearBlocks removes every prefix added by BlockUDPDest. The loss setting
// stays.
func (h *Host) ClearBlocks() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.blocks
	h.blocks = nil
	if err := h.applyFilter(); err != nil {
		h.blocks = old
		return fmt.Errorf("lab: host %s: clear blocks: %w", h.Name, err)
	}
	return nil
}

// applyFilter replaces the host's nftables table with one that holds the
// current blocks and loss, in one atomic nft transaction. With neither, the
// table is deleted. The caller holds h.mu.
func (h *Host) applyFilter() error {
	_, err := run(context.Background(), h.log, filterScript(h.loss, h.blocks), "ip", "netns", "exec", h.NS, "nft", "-f", "-")
	return err
}

// filterScript renders the nft script for a loss percentage and blocked
// destinations. "add table" then "delete table" deletes the table whether or
// not it existed (nft 1.0.6 has no "destroy").
func filterScript(loss int, blocks []netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", filterTable, filterTable)
	if loss == 0 && len(blocks) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "table inet %s {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n", filterTable)
	for _, p := range blocks {
		family := "ip"
		if p.Addr().Is6() {
			family = "ip6"
		}
		fmt.Fprintf(&b, "\t\tmeta l4proto udp %s daddr %s drop\n", family, p)
	}
	switch {
	case loss >= 100:
		// numgen's value is 0..99: "< 100" is rejected as out of range.
		b.WriteString("\t\tmeta l4proto udp drop\n")
	case loss > 0:
		fmt.Fprintf(&b, "\t\tmeta l4proto udp numgen random mod 100 < %d drop\n", loss)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// SetRate caps the rate the host sends at, in bits per second, with a tc
// tbf qdisc on its interface; 0 removes the cap. The bucket holds 32 ms of
// traffic at the rate but at least 32 KiB, and packets wait at most 100 ms
// in the queue before tbf drops them (a UDP sender is not told).
func (h *Host) SetRate(bitsPerSecond int64) error {
	if bitsPerSecond < 0 {
		return fmt.Errorf("lab: host %s: set rate: negative rate %d", h.Name, bitsPerSecond)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx := context.Background()
	if bitsPerSecond == 0 {
		_, err := run(ctx, h.log, "", "tc", "-n", h.NS, "qdisc", "delete", "dev", h.Iface, "root")
		// With no root qdisc of ours, tc says "Cannot delete qdisc with
		// handle of zero": nothing to remove.
		if err != nil && !strings.Contains(err.Error(), "handle of zero") {
			return fmt.Errorf("lab: host %s: remove rate: %w", h.Name, err)
		}
		return nil
	}
	rate, burst, latency := tbfParams(bitsPerSecond)
	if _, err := run(ctx, h.log, "", "tc", "-n", h.NS, "qdisc", "replace", "dev", h.Iface, "root",
		"tbf", "rate", rate, "burst", burst, "latency", latency); err != nil {
		return fmt.Errorf("lab: host %s: set rate: %w", h.Name, err)
	}
	return nil
}

// SetIngressRate caps the rate the host receives at, in bits per second,
// with a tc tbf qdisc on its port of the bridge (a slow link or a slow
// switch port toward this host); 0 removes the cap. What exceeds it is
// dropped at the port after 100 ms of queue.
func (h *Host) SetIngressRate(bitsPerSecond int64) error {
	if bitsPerSecond < 0 {
		return fmt.Errorf("lab: host %s: set ingress rate: negative rate %d", h.Name, bitsPerSecond)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx := context.Background()
	if bitsPerSecond == 0 {
		_, err := run(ctx, h.log, "", "tc", "-n", h.sw, "qdisc", "delete", "dev", h.port, "root")
		if err != nil && !strings.Contains(err.Error(), "handle of zero") {
			return fmt.Errorf("lab: host %s: remove ingress rate: %w", h.Name, err)
		}
		return nil
	}
	rate, burst, latency := tbfParams(bitsPerSecond)
	if _, err := run(ctx, h.log, "", "tc", "-n", h.sw, "qdisc", "replace", "dev", h.port, "root",
		"tbf", "rate", rate, "burst", burst, "latency", latency); err != nil {
		return fmt.Errorf("lab: host %s: set ingress rate: %w", h.Name, err)
	}
	return nil
}

// tbfParams returns tc's rate, burst and latency arguments for a rate in
// bits per second: a burst of rate/250 bytes (32 ms of traffic, enough for
// any timer tick) and at least 32 KiB, and a 100 ms queue.
func tbfParams(bitsPerSecond int64) (rate, burst, latency string) {
	b := max(bitsPerSecond/250, 32*1024)
	return fmt.Sprintf("%dbit", bitsPerSecond), fmt.Sprintf("%d", b), "100ms"
}

// SetMTU sets the MTU of the host's link at both ends (its eth0 and its
// port on the bridge), e.g. 9000 for jumbo frames.
func (h *Host) SetMTU(mtu int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx := context.Background()
	m := fmt.Sprint(mtu)
	if _, err := run(ctx, h.log, "", "ip", "-n", h.sw, "link", "set", "dev", h.port, "mtu", m); err != nil {
		return fmt.Errorf("lab: host %s: set mtu: %w", h.Name, err)
	}
	if _, err := run(ctx, h.log, "", "ip", "-n", h.NS, "link", "set", "dev", h.Iface, "mtu", m); err != nil {
		return fmt.Errorf("lab: host %s: set mtu: %w", h.Name, err)
	}
	return nil
}
