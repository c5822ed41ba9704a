package protocol

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// Well-known addresses. The data port and group are chosen per session by
// the server and announced in Accept.
const (
	// DiscoveryPort is the UDP port servers listen on for Discover.
	DiscoveryPort = 9940
	// DefaultDataPort is the UDP port of the data stream unless configured.
	DefaultDataPort = 9941
)

// DiscoveryGroup is the administratively scoped multicast group clients also
// send Discover to, for networks that filter broadcast.
var DiscoveryGroup = netip.AddrFrom4([4]byte{239, 255, 83, 72})

// ReadPacket reads one whole packet from a stream (the TCP control
// connection) without checking more than its framing. Packets whose body
// exceeds maxBody are refused before their body is read.
func ReadPacket(r io.Reader, maxBody int) ([]byte, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != magic[0] || hdr[1] != magic[1] {
		return nil, ErrMagic
	}
	if hdr[2] != Version {
		return nil, fmt.Errorf("%w %d (this build speaks %d): use matching shoal and shoal-client builds", ErrVersion, hdr[2], Version)
	}
	n := binary.BigEndian.Uint32(hdr[16:])
	if uint64(n) > uint64(maxBody)+SealSize || n > MaxBody {
		return nil, fmt.Errorf("%w: %d-byte body, at most %d", ErrLength, n, maxBody)
	}
	buf := make([]byte, HeaderSize+int(n)+TrailerSize)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[HeaderSize:]); err != nil {
		return nil, fmt.Errorf("read %d-byte body: %w", n, noEOF(err))
	}
	return buf, nil
}

// ReadMessage reads one packet from a stream and opens it with seal (nil
// for an unkeyed session).
func ReadMessage(r io.Reader, maxBody int, seal *Seal) (Header, Message, error) {
	b, err := ReadPacket(r, maxBody)
	if err != nil {
		return Header{}, nil, err
	}
	return seal.OpenMessage(b)
}

// WriteMessage encodes m, sealed with seal unless it is nil, and writes it
// as one packet.
func WriteMessage(w io.Writer, session uint64, seal *Seal, m Message) error {
	_, err := w.Write(seal.Marshal(session, 0, m))
	return err
}

// noEOF turns a clean EOF inside a packet into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
