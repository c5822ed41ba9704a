package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Version is the protocol version this build speaks. Peers with another
// version are refused with ErrVersion.
const Version = 1

// Sizes of the fixed parts of every packet.
const (
	HeaderSize  = 20
	TrailerSize = 4
	// Overhead is what a packet adds around its body.
	Overhead = HeaderSize + TrailerSize
	// MaxBody bounds the body of any packet; a manifest of a 2 TiB image in
	// 1 MiB chunks fits.
	MaxBody = 256 << 20
)

var magic = [2]byte{'S', 'H'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Type identifies what a packet's body holds.
type Type uint8

// Packet types. Discovery uses UDP, control uses TCP, data uses UDP
// multicast.
const (
	TypeDiscover  Type = 1  // client → broadcast/multicast: which server serves this session?
	TypeOffer     Type = 2  // server → client: I do, join me here
	TypeNotServed Type = 3  // server → client: not this one; I serve another session (a hint for the operator)
	TypeChallenge Type = 9  // server → client (TCP), first: the connection's nonce
	TypeJoin      Type = 10 // client → server (TCP): who I am and where I write
	TypeAccept    Type = 11 // server → client: welcome, here are the group and your ID
	TypeRefuse    Type = 12 // server → client: refused, with a reason
	TypeManifest  Type = 13 // server → client: the image's manifest
	TypeStart     Type = 14 // server → client: sending begins
	TypeProgress  Type = 15 // client → server: how far I am (also the heartbeat)
	TypeNack      Type = 16 // client → server: fragments I miss
	TypeReport    Type = 17 // client → server: final result, read back from my disk
	TypeClose     Type = 18 // server → client: the session is over for you, and why
	TypeRedirect  Type = 19 // server → client: the data stream moves (multicast → broadcast fallback)
	TypeData      Type = 20 // server → group: one fragment of one chunk
	TypeBeacon    Type = 21 // server → group: sender position while idle, and state
	TypeParity    Type = 22 // server → group: a Reed-Solomon repair shard
)

func (t Type) String() string {
	switch t {
	case TypeDiscover:
		return "discover"
	case TypeOffer:
		return "offer"
	case TypeNotServed:
		return "not-served"
	case TypeChallenge:
		return "challenge"
	case TypeJoin:
		return "join"
	case TypeAccept:
		return "accept"
	case TypeRefuse:
		return "refuse"
	case TypeManifest:
		return "manifest"
	case TypeStart:
		return "start"
	case TypeProgress:
		return "progress"
	case TypeNack:
		return "nack"
	case TypeReport:
		return "report"
	case TypeClose:
		return "close"
	case TypeRedirect:
		return "redirect"
	case TypeData:
		return "data"
	case TypeBeacon:
		return "beacon"
	case TypeParity:
		return "parity"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags modify a packet's meaning.
const (
	// FlagRepair marks a data packet sent again because a client asked.
	FlagRepair uint8 = 1 << 0
)

// Errors a decoder returns; callers branch on them with errors.Is.
var (
	ErrShort    = errors.New("packet too short")
	ErrMagic    = errors.New("not a shoal packet")
	ErrVersion  = errors.New("unsupported protocol version")
	ErrChecksum = errors.New("checksum mismatch")
	ErrLength   = errors.New("length field does not match packet")
	ErrType     = errors.New("unknown packet type")
	ErrBody     = errors.New("malformed body")
)

// Header is the fixed part of a packet.
type Header struct {
	Version uint8
	Type    Type
	Flags   uint8
	Session uint64
}

// Message is one packet body. Every packet type has a struct that
// implements it.
type Message interface {
	// Type is the packet type this body travels as.
	Type() Type
	appendBody(b []byte) []byte
	decodeBody(b []byte) error
}

// Append encodes m as one complete packet (header, body, checksum) for
// session with the given flags, appended to dst.
func Append(dst []byte, session uint64, flags uint8, m Message) []byte {
	start := len(dst)
	dst = append(dst, magic[0], magic[1], Version, byte(m.Type()), flags, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, session)
	dst = append(dst, 0, 0, 0, 0) // body length, patched below
	dst = m.appendBody(dst)
	body := len(dst) - start - HeaderSize
	binary.BigEndian.PutUint32(dst[start+16:], uint32(body))
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// Marshal is Append to a new slice.
func Marshal(session uint64, flags uint8, m Message) []byte {
	return Append(nil, session, flags, m)
}

// ParseHeader checks a whole packet's framing and checksum and returns its
// header and body. The body aliases b.
func ParseHeader(b []byte) (Header, []byte, error) {
	if len(b) < Overhead {
		return Header{}, nil, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return Header{}, nil, ErrMagic
	}
	h := Header{Version: b[2], Type: Type(b[3]), Flags: b[4], Session: binary.BigEndian.Uint64(b[8:])}
	if h.Version != Version {
		return h, nil, fmt.Errorf("%w %d (this build speaks %d): use matching shoal and shoal-client builds", ErrVersion, h.Version, Version)
	}
	n := binary.BigEndian.Uint32(b[16:])
	if uint64(n)+Overhead != uint64(len(b)) {
		return h, nil, fmt.Errorf("%w: body length %d in a %d-byte packet", ErrLength, n, len(b))
	}
	end := HeaderSize + int(n)
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.BigEndian.Uint32(b[end:]); got != want {
		return h, nil, ErrChecksum
	}
	return h, b[HeaderSize:end], nil
}

// Parse decodes a whole unsealed packet into its header and a freshly
// allocated message of the right type. Byte slices in the message alias b.
// Sealed packets are refused with ErrSealed: open them with a Seal.
func Parse(b []byte) (Header, Message, error) {
	return (*Seal)(nil).OpenMessage(b)
}

// DecodeBody decodes body (as returned by ParseHeader) into m, which must
// be of the packet's type. It lets hot paths reuse one message value.
func DecodeBody(h Header, body []byte, m Message) error {
	if h.Type != m.Type() {
		return fmt.Errorf("%w: got %s, want %s", ErrType, h.Type, m.Type())
	}
	if err := m.decodeBody(body); err != nil {
		return fmt.Errorf("%s packet: %w", h.Type, err)
	}
	return nil
}

// NewMessage returns an empty message of type t.
func NewMessage(t Type) (Message, error) {
	switch t {
	case TypeDiscover:
		return new(Discover), nil
	case TypeOffer:
		return new(Offer), nil
	case TypeNotServed:
		return new(NotServed), nil
	case TypeChallenge:
		return new(Challenge), nil
	case TypeJoin:
		return new(Join), nil
	case TypeAccept:
		return new(Accept), nil
	case TypeRefuse:
		return new(Refuse), nil
	case TypeManifest:
		return new(Manifest), nil
	case TypeStart:
		return new(Start), nil
	case TypeProgress:
		return new(Progress), nil
	case TypeNack:
		return new(Nack), nil
	case TypeReport:
		return new(Report), nil
	case TypeClose:
		return new(Close), nil
	case TypeRedirect:
		return new(Redirect), nil
	case TypeData:
		return new(Data), nil
	case TypeBeacon:
		return new(Beacon), nil
	case TypeParity:
		return new(Parity), nil
	}
	return nil, fmt.Errorf("%w %d", ErrType, uint8(t))
}
