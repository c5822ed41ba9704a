//go:build !linux

package impair

import (
	"errors"
	"syscall"
)

// vnetHdrLen and maxFrame match the Linux values.
const (
	vnetHdrLen = 10
	maxFrame   = vnetHdrLen + 64<<10 + 64
)

// errUnsupported is returned by openPort: AF_PACKET sockets need Linux.
var errUnsupported = errors.New("impair: AF_PACKET sockets need Linux")

// port stands for the Linux packet socket.
type port struct {
	name string
	vnet bool
}

func openPort(name string, vnet bool) (*port, error) { return nil, errUnsupported }
func (p *port) read(buf []byte) (int, error)         { return 0, errUnsupported }
func (p *port) write(b []byte) error                 { return errUnsupported }
func (p *port) overruns() uint64                     { return 0 }
func (p *port) stopReads() error                     { return nil }
func (p *port) close() error                         { return nil }
func isDown(err error) bool                          { return errors.Is(err, syscall.ENETDOWN) }
