package impair

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// vnetHdrLen is the size of struct virtio_net_hdr, which the kernel
	// puts before every frame of a socket with PACKET_VNET_HDR.
	vnetHdrLen = 10
	// maxFrame is the read buffer: a virtio header and a 64 KiB frame (a
	// segmentation offload super-frame at most).
	maxFrame = vnetHdrLen + 64<<10 + 64
	// sockBuf is the socket buffer size asked for, in bytes.
	sockBuf = 32 << 20
)

// port is an AF_PACKET raw socket bound to one interface, receiving every
// protocol in promiscuous mode, non-blocking behind the Go poller so that
// closing it ends a pending read.
type port struct {
	name    string
	ifindex int
	f       *os.File
	rc      syscall.RawConn
	vnet    bool // frames carry a virtio_net_hdr on both read and write
	// ownFiltered says the kernel filters out the socket's own frames
	// (PACKET_IGNORE_OUTGOING), so reads need not look at the frame type.
	ownFiltered bool
	drops       uint64
}

// openPort opens a packet socket on interface name of the calling thread's
// network namespace. With vnet, frames carry a virtio_net_hdr, so that
// checksum and segmentation offload state survive the trip through user
// space; if the kernel refuses it, vnet is off and the error says so.
func openPort(name string, vnet bool) (p *port, err error) {
	// Protocol 0: receive nothing until bind names the interface.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket for %s: %w", name, err)
	}
	defer func() {
		if err != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	p = &port{name: name, ifindex: int(ifr.Uint32())}
	if vnet {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return nil, fmt.Errorf("%s: PACKET_VNET_HDR: %w", name, err)
		}
		p.vnet = true
	}
	// Our own writes come back as PACKET_OUTGOING: ask the kernel not to
	// deliver them (Linux ≥ 4.20); read drops any that still arrive.
	p.ownFiltered = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1) == nil
	for _, o := range []struct{ force, plain int }{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.force, sockBuf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.plain, sockBuf)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.ifindex}); err != nil {
		return nil, fmt.Errorf("bind packet socket to %s: %w", name, err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(p.ifindex), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return nil, fmt.Errorf("%s: promiscuous mode: %w", name, err)
	}
	// A non-blocking descriptor makes a pollable file.
	p.f = os.NewFile(uintptr(fd), "packet:"+name)
	fd = -1 // owned by p.f now
	if p.rc, err = p.f.SyscallConn(); err != nil {
		p.f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// read reads one frame (with its virtio header if vnet is on) into buf. It
// skips the frames the socket itself sent. buf must hold maxFrame bytes;
// n larger than len(buf) means the frame was cut.
func (p *port) read(buf []byte) (int, error) {
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := p.rc.Read(func(fd uintptr) bool {
			if p.ownFiltered {
				// No source address needed: read allocates nothing.
				n, rerr = unix.Read(int(fd), buf)
			} else {
				n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			}
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return 0, err
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return n, nil
	}
}

// write sends one frame (with its virtio header if vnet is on), waiting
// while the socket's send buffer is full.
func (p *port) write(b []byte) error {
	var werr error
	err := p.rc.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), b)
		return !errors.Is(werr, unix.EAGAIN)
	})
	if err == nil {
		err = werr
	}
	return err
}

// overruns returns how many frames the kernel dropped on this socket
// (buffer full) since it was opened.
func (p *port) overruns() uint64 {
	_ = p.rc.Control(func(fd uintptr) {
		if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			// The kernel resets its counters at every read.
			p.drops += uint64(st.Drops)
		}
	})
	return p.drops
}

// stopReads makes a pending and any later read return at once.
func (p *port) stopReads() error {
	return p.f.SetReadDeadline(aLongTimeAgo)
}

func (p *port) close() error {
	return p.f.Close()
}

// isDown reports whether a read or write error means the interface is down
// or gone: the switch carries on, the link may come back.
func isDown(err error) bool {
	return errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
