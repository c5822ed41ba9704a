// Package mcast opens the sockets shoal's sessions use (discovery, the data
// stream's sender and receivers, and the tuning of the TCP control
// connections) on one chosen interface, with the socket options Linux needs
// for many receivers at high rates and for lossy links.
package mcast

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Interface is a network interface with the IPv4 address shoal uses on it.
type Interface struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	Addr  netip.Prefix // the interface's first IPv4 address and its prefix
}

// Broadcast is the directed broadcast address of the interface's subnet.
func (i Interface) Broadcast() netip.Addr {
	a := i.Addr.Addr().As4()
	bits := i.Addr.Bits()
	for b := bits; b < 32; b++ {
		a[b/8] |= 0x80 >> (b % 8)
	}
	return netip.AddrFrom4(a)
}

func (i Interface) String() string { return fmt.Sprintf("%s (%s)", i.Name, i.Addr) }

func (i Interface) netInterface() *net.Interface {
	return &net.Interface{Name: i.Name, Index: i.Index, HardwareAddr: i.MAC}
}

// ErrNoInterface means no usable interface could be chosen.
var ErrNoInterface = errors.New("no usable network interface")

// Pick returns the interface called name, or, if name is empty, the
// interface of the default route, or else the only interface that is up
// and has an IPv4 address.
func Pick(name string) (Interface, error) {
	if name != "" {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return Interface{}, fmt.Errorf("interface %q: %w", name, err)
		}
		return withIPv4(ifi)
	}
	if def := defaultRouteInterface(); def != "" {
		if ifi, err := net.InterfaceByName(def); err == nil {
			if i, err := withIPv4(ifi); err == nil {
				return i, nil
			}
		}
	}
	all, err := net.Interfaces()
	if err != nil {
		return Interface{}, fmt.Errorf("list interfaces: %w", err)
	}
	var found []Interface
	for k := range all {
		ifi := &all[k]
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		if i, err := withIPv4(ifi); err == nil {
			found = append(found, i)
		}
	}
	switch len(found) {
	case 0:
		return Interface{}, fmt.Errorf("%w: no interface is up with an IPv4 address", ErrNoInterface)
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for k, i := range found {
		names[k] = i.String()
	}
	return Interface{}, fmt.Errorf("%w: several interfaces could be meant (%s) and none has the default route: choose one with --interface",
		ErrNoInterface, strings.Join(names, ", "))
}

func withIPv4(ifi *net.Interface) (Interface, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return Interface{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			ones, _ := ipn.Mask.Size()
			addr := netip.AddrFrom4([4]byte(ip4))
			return Interface{Name: ifi.Name, Index: ifi.Index, MAC: ifi.HardwareAddr, Addr: netip.PrefixFrom(addr, ones)}, nil
		}
	}
	return Interface{}, fmt.Errorf("%w: %s has no IPv4 address (is it up and configured?)", ErrNoInterface, ifi.Name)
}

// defaultRouteInterface reads the interface of the IPv4 default route from
// /proc/net/route, or "" if there is none.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}

// control returns a net.ListenConfig control hook that sets SO_REUSEADDR
// (and SO_REUSEPORT if reusePort) and binds to the device if dev != "".
func control(reusePort bool, dev string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil && reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if serr == nil && dev != "" {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
				if serr != nil {
					serr = fmt.Errorf("bind to device %s: %w", dev, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

func listenUDP(ctx context.Context, addr string, reusePort bool, dev string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: control(reusePort, dev)}
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// setBuffer sets a socket buffer, forcing past the system limit when
// allowed (root), so bursts of data survive a busy receiver.
func setBuffer(conn *net.UDPConn, force, normal, bytes int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, bytes) != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, normal, bytes)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// ReceiveBuffer returns the size of conn's receive buffer as the kernel
// reports it (SO_RCVBUF: twice what was asked, for its bookkeeping).
func ReceiveBuffer(conn *net.UDPConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		gerr error
	)
	if err := rc.Control(func(fd uintptr) { n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil {
		return 0, err
	}
	return n, gerr
}

func setIPInt(conn *net.UDPConn, opt, v int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, opt, v) }); err != nil {
		return err
	}
	return serr
}

// ListenDiscovery opens the server's discovery socket: port on all
// addresses of ifi (broadcast included), joined to group. Several servers
// on one host may share the port.
func ListenDiscovery(ctx context.Context, ifi Interface, port int, group netip.Addr) (*net.UDPConn, error) {
	conn, err := listenUDP(ctx, fmt.Sprintf("0.0.0.0:%d", port), true, ifi.Name)
	if err != nil {
		return nil, fmt.Errorf("listen for discovery on %s port %d: %w", ifi.Name, port, err)
	}
	p := ipv4.NewPacketConn(conn)
	if err := p.JoinGroup(ifi.netInterface(), &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("join discovery group %s on %s: %w", group, ifi.Name, err)
	}
	return conn, nil
}

// DialDiscovery opens a client's discovery socket on ifi: an ephemeral port
// that may send to broadcast and multicast addresses out of ifi.
func DialDiscovery(ctx context.Context, ifi Interface, ttl int) (*net.UDPConn, error) {
	conn, err := listenUDP(ctx, "0.0.0.0:0", false, ifi.Name)
	if err != nil {
		return nil, fmt.Errorf("open discovery socket on %s: %w", ifi.Name, err)
	}
	if err := senderOptions(conn, ifi, ttl); err != nil {
		conn.Close()
		return nil, fmt.Errorf("discovery socket on %s: %w", ifi.Name, err)
	}
	return conn, nil
}

// senderOptions lets conn send broadcast and multicast out of ifi.
func senderOptions(conn *net.UDPConn, ifi Interface, ttl int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("allow broadcast: %w", serr)
	}
	p := ipv4.NewPacketConn(conn)
	if err := p.SetMulticastInterface(ifi.netInterface()); err != nil {
		return fmt.Errorf("multicast interface: %w", err)
	}
	if err := p.SetMulticastTTL(ttl); err != nil {
		return fmt.Errorf("multicast TTL %d: %w", ttl, err)
	}
	return nil
}

// OpenSender opens the server's data socket on ifi's address: multicast
// out of ifi with ttl, broadcast allowed, and a large send buffer.
func OpenSender(ctx context.Context, ifi Interface, ttl int, sendBuffer int) (*net.UDPConn, error) {
	conn, err := listenUDP(ctx, netip.AddrPortFrom(ifi.Addr.Addr(), 0).String(), false, "")
	if err != nil {
		return nil, fmt.Errorf("open data socket on %s: %w", ifi, err)
	}
	if err := senderOptions(conn, ifi, ttl); err != nil {
		conn.Close()
		return nil, fmt.Errorf("data socket on %s: %w", ifi.Name, err)
	}
	if err := setBuffer(conn, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sendBuffer); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send buffer: %w", err)
	}
	// Report a full interface queue as ENOBUFS instead of dropping the
	// datagram silently: the sender slows down on it.
	if err := setIPInt(conn, unix.IP_RECVERR, 1); err != nil {
		conn.Close()
		return nil, fmt.Errorf("IP_RECVERR: %w", err)
	}
	return conn, nil
}

// ListenData opens a client's data socket for the stream to group:port on
// ifi. A multicast group is joined on ifi, and the socket receives only
// that group's packets; a broadcast or unicast stream is received on port
// at any address of ifi.
func ListenData(ctx context.Context, ifi Interface, group netip.Addr, port int, recvBuffer int) (*net.UDPConn, error) {
	bind := fmt.Sprintf("0.0.0.0:%d", port)
	if group.IsMulticast() {
		bind = netip.AddrPortFrom(group, uint16(port)).String()
	}
	conn, err := listenUDP(ctx, bind, false, ifi.Name)
	if err != nil {
		return nil, fmt.Errorf("listen for data on %s %s: %w", ifi.Name, bind, err)
	}
	fail := func(err error) (*net.UDPConn, error) {
		conn.Close()
		return nil, err
	}
	if group.IsMulticast() {
		// Without this, Linux also delivers groups other sockets joined.
		if err := setIPInt(conn, unix.IP_MULTICAST_ALL, 0); err != nil {
			return fail(fmt.Errorf("IP_MULTICAST_ALL: %w", err))
		}
		p := ipv4.NewPacketConn(conn)
		if err := p.JoinGroup(ifi.netInterface(), &net.UDPAddr{IP: group.AsSlice()}); err != nil {
			return fail(fmt.Errorf("join group %s on %s: %w", group, ifi.Name, err))
		}
	}
	if err := setBuffer(conn, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, recvBuffer); err != nil {
		return fail(fmt.Errorf("receive buffer: %w", err))
	}
	return conn, nil
}
