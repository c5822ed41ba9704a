package mcast

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// controlRTOMax caps TCP's retransmission timeout on control connections.
const controlRTOMax = time.Second

// TuneControl prepares a TCP control connection for a lossy LAN. The
// connection is thin: a heartbeat, a NACK now and then. Standard TCP backs
// off exponentially, and on such a stream a burst of loss can stop it for
// many seconds, long enough for a healthy client to be dropped as dead.
// Linear timeouts for thin streams and an RTO cap keep it retrying every
// second. Options the kernel lacks are skipped.
func TuneControl(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, 1)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MAX_MS, int(controlRTOMax.Milliseconds()))
	})
}
