package protocol

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Discover asks which server serves a session. Clients send it by
// broadcast, by multicast to DiscoveryGroup, or by unicast to a known
// server.
type Discover struct {
	Nonce uint64 // echoed in the answer, so a client matches answers to its questions
	Name  string // the session name asked for
	MAC   []byte // the client's hardware address, for the operator's logs
}

// Offer answers a Discover whose session name matches. The client connects
// to ControlPort on the address the Offer came from.
type Offer struct {
	Nonce       uint64
	Name        string
	SessionID   uint64 // the session's random ID; with a key, its keys derive from it
	ControlPort uint16
	ImageSize   uint64
	Sending     bool   // the session has started; late joins are refused
	Clients     uint16 // clients joined so far
	Encrypted   bool   // the session's data is encrypted (keyed sessions)
}

// NotServed answers a Discover for another session name, so a client can
// tell the operator which sessions it does hear.
type NotServed struct {
	Nonce  uint64
	Served string // the session this server serves
	Reason string // why it did not answer with an offer, for people
}

// Challenge is the server's first message on a control connection: with a
// key, the connection's keys are bound to its nonce, so a recorded
// connection cannot be replayed.
type Challenge struct {
	Nonce [16]byte
}

// Join is a client's first message on the control connection.
type Join struct {
	Name     string
	MAC      []byte
	Hostname string
	Disk     string // target path on the client
	DiskSize uint64 // bytes; 0 means the target grows (a regular file)
	// BufferChunks is how many chunks the client can hold that are received
	// but not yet written; the sender never runs further ahead of it.
	BufferChunks uint32
	// Resuming a session the server lost: the image the client was
	// receiving, and the chunks it has already written and verified.
	ImageSHA256 [32]byte
	Have        []ChunkRange
	// Rejoining after a lost control connection: the session and client
	// ID the client had. The server gives it back its place.
	RejoinSession uint64
	RejoinClient  uint32
}

// ChunkRange is Count consecutive chunks from First.
type ChunkRange struct {
	First, Count uint32
}

// MaxHaveRanges bounds Join.Have.
const MaxHaveRanges = 1 << 16

// Accept admits a client to the session.
type Accept struct {
	ClientID    uint32
	Group       netip.Addr // IPv4 multicast group (or broadcast address) of the data stream
	DataPort    uint16
	PayloadSize uint16 // bytes of chunk data per data packet
	// HeartbeatMillis is how often the client must send Progress;
	// TimeoutMillis is the silence after which the server drops it.
	HeartbeatMillis uint32
	TimeoutMillis   uint32
}

// Refusal reasons.
const (
	RefuseOther        uint8 = 0
	RefuseName         uint8 = 1
	RefuseDiskTooSmall uint8 = 2
	RefuseSending      uint8 = 3
	RefuseFull         uint8 = 4
	RefuseKey          uint8 = 5
)

// Refuse turns a client away; Reason is written for a person.
type Refuse struct {
	Code   uint8
	Reason string
}

// Manifest carries the image manifest in imaging's binary encoding.
type Manifest struct {
	Data []byte
}

// Start tells joined clients that sending begins.
type Start struct {
	Clients uint16
	Rate    uint64 // initial send rate in bits per second
}

// Client phases in Progress.
const (
	PhaseWaiting   uint8 = 0
	PhaseReceiving uint8 = 1
	PhaseVerifying uint8 = 2
	PhaseDone      uint8 = 3
)

// Progress is the client's feedback and heartbeat.
type Progress struct {
	// LowWater is the lowest chunk index not yet written to disk: the
	// sender's window is bounded by the smallest LowWater among clients.
	LowWater     uint32
	Written      uint32 // chunks written
	BytesWritten uint64
	Received     uint64 // data packets received, first copies only
	Lost         uint64 // data packets found missing and asked for again
	Phase        uint8
	// Heard counts every packet of the session's data stream the client
	// received, beacons included: the server learns from it whether the
	// client hears the multicast group at all.
	Heard uint64
	// Expected counts the stream's packets sent since the client heard the
	// first one, from their sequence numbers: Expected - Heard were lost,
	// repairs included. The rate control watches it.
	Expected uint64
}

// Redirect moves a client's data stream to another address and port
// before sending starts (the fallback from multicast to broadcast).
type Redirect struct {
	Group netip.Addr
	Port  uint16
	Why   string
}

// NackRange names Count consecutive missing fragments of one chunk,
// starting at First.
type NackRange struct {
	Chunk uint32
	First uint16
	Count uint16
}

// StripeNeed asks for Need more parity shards of one stripe of a chunk
// (see package fec): the client lacks that many shards to rebuild it.
type StripeNeed struct {
	Chunk  uint32
	Stripe uint16
	Need   uint16
}

// Nack asks the server to send fragments again: by fragment, and, in a
// session with FEC, by how many parity shards each stripe still needs.
// The server answers a stripe need with parity while it has parity left,
// and with the fragments named in Ranges after that.
type Nack struct {
	Ranges  []NackRange
	Stripes []StripeNeed
}

// Parity carries one Reed-Solomon parity shard of one stripe of a chunk.
type Parity struct {
	Chunk   uint32
	Stripe  uint16
	Index   uint16 // parity shard index within the stripe
	SendPos uint32
	Seq     uint32
	Payload []byte
}

// ParityHeaderSize is the part of a parity body before the shard.
const ParityHeaderSize = 16

// NoChunk is Report.BadChunk when no chunk is to blame.
const NoChunk = ^uint32(0)

// Report is a client's final word: what it read back from its disk.
type Report struct {
	OK            bool
	Bytes         uint64
	SHA256        [32]byte
	ElapsedMillis uint64
	BadChunk      uint32 // NoChunk, or the first chunk that read back wrong
	Error         string
	// Verified is true when Bytes and SHA256 were read back from the disk;
	// a client told not to verify reports OK without them.
	Verified bool
}

// Close reasons.
const (
	CloseDone    uint8 = 0 // the session finished
	CloseDropped uint8 = 1 // the server gave up on this client
	CloseAborted uint8 = 2 // the session was stopped by the operator or an error
)

// Close ends a client's part in the session.
type Close struct {
	Code   uint8
	Reason string
}

// Data carries one fragment of one chunk's wire bytes.
type Data struct {
	Chunk     uint32
	Frag      uint16
	FragCount uint16
	// SendPos is the sender's position: every chunk below it has been sent
	// once in full, so a client may ask for what it misses there.
	SendPos uint32
	Seq     uint32 // per-session packet counter
	Payload []byte
}

// DataHeaderSize is the part of a data body before the payload.
const DataHeaderSize = 16

// Beacon states.
const (
	BeaconWaiting  uint8 = 0 // not started yet
	BeaconSending  uint8 = 1 // sending; SendPos is valid
	BeaconFinished uint8 = 2 // every chunk sent once; ask for what is missing
	BeaconAborted  uint8 = 3 // the session was stopped
)

// Beacon tells clients the sender's position when it has no data to send.
type Beacon struct {
	SendPos uint32
	Seq     uint32
	State   uint8
	Rate    uint64
}

func (*Discover) Type() Type  { return TypeDiscover }
func (*Offer) Type() Type     { return TypeOffer }
func (*NotServed) Type() Type { return TypeNotServed }
func (*Challenge) Type() Type { return TypeChallenge }
func (*Join) Type() Type      { return TypeJoin }
func (*Accept) Type() Type    { return TypeAccept }
func (*Refuse) Type() Type    { return TypeRefuse }
func (*Manifest) Type() Type  { return TypeManifest }
func (*Start) Type() Type     { return TypeStart }
func (*Progress) Type() Type  { return TypeProgress }
func (*Nack) Type() Type      { return TypeNack }
func (*Report) Type() Type    { return TypeReport }
func (*Close) Type() Type     { return TypeClose }
func (*Data) Type() Type      { return TypeData }
func (*Beacon) Type() Type    { return TypeBeacon }
func (*Redirect) Type() Type  { return TypeRedirect }
func (*Parity) Type() Type    { return TypeParity }

// maxMAC bounds a hardware address (InfiniBand's is 20 bytes).
const maxMAC = 32

func (m *Discover) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Nonce)
	b = appendStr(b, m.Name)
	return appendBlob(b, m.MAC)
}

func (m *Discover) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Nonce = r.u64("nonce")
	m.Name = r.str("session name")
	m.MAC = r.blob("mac", maxMAC)
	return r.done()
}

func (m *Offer) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Nonce)
	b = appendStr(b, m.Name)
	b = binary.BigEndian.AppendUint64(b, m.SessionID)
	b = binary.BigEndian.AppendUint16(b, m.ControlPort)
	b = binary.BigEndian.AppendUint64(b, m.ImageSize)
	b = appendBool(b, m.Sending)
	b = binary.BigEndian.AppendUint16(b, m.Clients)
	return appendBool(b, m.Encrypted)
}

func (m *Offer) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Nonce = r.u64("nonce")
	m.Name = r.str("session name")
	m.SessionID = r.u64("session id")
	m.ControlPort = r.u16("control port")
	m.ImageSize = r.u64("image size")
	m.Sending = r.bool("sending")
	m.Clients = r.u16("clients")
	m.Encrypted = r.bool("encrypted")
	if r.err == nil && m.ControlPort == 0 {
		r.fail("control port 0")
	}
	return r.done()
}

func (m *NotServed) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Nonce)
	b = appendStr(b, m.Served)
	return appendStr(b, m.Reason)
}

func (m *NotServed) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Nonce = r.u64("nonce")
	m.Served = r.str("served session")
	m.Reason = r.str("reason")
	return r.done()
}

func (m *Challenge) appendBody(b []byte) []byte { return append(b, m.Nonce[:]...) }

func (m *Challenge) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	r.fixed(m.Nonce[:], "nonce")
	return r.done()
}

func (m *Join) appendBody(b []byte) []byte {
	b = appendStr(b, m.Name)
	b = appendBlob(b, m.MAC)
	b = appendStr(b, m.Hostname)
	b = appendStr(b, m.Disk)
	b = binary.BigEndian.AppendUint64(b, m.DiskSize)
	b = binary.BigEndian.AppendUint32(b, m.BufferChunks)
	b = append(b, m.ImageSHA256[:]...)
	have := m.Have
	if len(have) > MaxHaveRanges {
		have = have[:MaxHaveRanges]
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(have)))
	for _, h := range have {
		b = binary.BigEndian.AppendUint32(b, h.First)
		b = binary.BigEndian.AppendUint32(b, h.Count)
	}
	b = binary.BigEndian.AppendUint64(b, m.RejoinSession)
	return binary.BigEndian.AppendUint32(b, m.RejoinClient)
}

func (m *Join) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Name = r.str("session name")
	m.MAC = r.blob("mac", maxMAC)
	m.Hostname = r.str("hostname")
	m.Disk = r.str("disk")
	m.DiskSize = r.u64("disk size")
	m.BufferChunks = r.u32("buffer chunks")
	if r.err == nil && m.BufferChunks == 0 {
		r.fail("buffer of 0 chunks")
	}
	r.fixed(m.ImageSHA256[:], "image sha256")
	n := r.u32("have count")
	if n > MaxHaveRanges {
		r.fail("%d have ranges, at most %d", n, MaxHaveRanges)
	}
	if r.err == nil && len(r.b) != 8*int(n)+12 {
		r.fail("%d have ranges need %d bytes, have %d", n, 8*n+12, len(r.b))
	}
	m.Have = m.Have[:0]
	for i := uint32(0); i < n && r.err == nil; i++ {
		h := ChunkRange{First: r.u32("first"), Count: r.u32("count")}
		if h.Count == 0 || uint64(h.First)+uint64(h.Count) > 1<<32 {
			r.fail("have range %d: first %d count %d", i, h.First, h.Count)
		}
		m.Have = append(m.Have, h)
	}
	m.RejoinSession = r.u64("rejoin session")
	m.RejoinClient = r.u32("rejoin client")
	return r.done()
}

func (m *Accept) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.ClientID)
	var g [4]byte
	if m.Group.Is4() {
		g = m.Group.As4()
	}
	b = append(b, g[:]...)
	b = binary.BigEndian.AppendUint16(b, m.DataPort)
	b = binary.BigEndian.AppendUint16(b, m.PayloadSize)
	b = binary.BigEndian.AppendUint32(b, m.HeartbeatMillis)
	return binary.BigEndian.AppendUint32(b, m.TimeoutMillis)
}

func (m *Accept) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.ClientID = r.u32("client id")
	var g [4]byte
	r.fixed(g[:], "group")
	m.Group = netip.AddrFrom4(g)
	m.DataPort = r.u16("data port")
	m.PayloadSize = r.u16("payload size")
	m.HeartbeatMillis = r.u32("heartbeat")
	m.TimeoutMillis = r.u32("timeout")
	if r.err == nil {
		switch {
		case m.Group.IsUnspecified():
			r.fail("group 0.0.0.0")
		case m.DataPort == 0:
			r.fail("data port 0")
		case m.PayloadSize == 0:
			r.fail("payload size 0")
		case m.HeartbeatMillis == 0 || m.TimeoutMillis == 0:
			r.fail("heartbeat or timeout 0")
		}
	}
	return r.done()
}

func (m *Refuse) appendBody(b []byte) []byte {
	b = append(b, m.Code)
	return appendStr(b, m.Reason)
}

func (m *Refuse) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Code = r.u8("code")
	m.Reason = r.str("reason")
	return r.done()
}

func (m *Manifest) appendBody(b []byte) []byte { return append(b, m.Data...) }

func (m *Manifest) decodeBody(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty manifest", ErrBody)
	}
	m.Data = b
	return nil
}

func (m *Start) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, m.Clients)
	return binary.BigEndian.AppendUint64(b, m.Rate)
}

func (m *Start) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Clients = r.u16("clients")
	m.Rate = r.u64("rate")
	return r.done()
}

func (m *Progress) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.LowWater)
	b = binary.BigEndian.AppendUint32(b, m.Written)
	b = binary.BigEndian.AppendUint64(b, m.BytesWritten)
	b = binary.BigEndian.AppendUint64(b, m.Received)
	b = binary.BigEndian.AppendUint64(b, m.Lost)
	b = append(b, m.Phase)
	b = binary.BigEndian.AppendUint64(b, m.Heard)
	return binary.BigEndian.AppendUint64(b, m.Expected)
}

func (m *Progress) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.LowWater = r.u32("low water")
	m.Written = r.u32("written")
	m.BytesWritten = r.u64("bytes written")
	m.Received = r.u64("received")
	m.Lost = r.u64("lost")
	m.Phase = r.u8("phase")
	m.Heard = r.u64("heard")
	m.Expected = r.u64("expected")
	if r.err == nil && m.Phase > PhaseDone {
		r.fail("phase %d", m.Phase)
	}
	return r.done()
}

func (m *Redirect) appendBody(b []byte) []byte {
	var g [4]byte
	if m.Group.Is4() {
		g = m.Group.As4()
	}
	b = append(b, g[:]...)
	b = binary.BigEndian.AppendUint16(b, m.Port)
	return appendStr(b, m.Why)
}

func (m *Redirect) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	var g [4]byte
	r.fixed(g[:], "group")
	m.Group = netip.AddrFrom4(g)
	m.Port = r.u16("port")
	m.Why = r.str("why")
	if r.err == nil && (m.Port == 0 || m.Group.IsUnspecified()) {
		r.fail("redirect to %s port %d", m.Group, m.Port)
	}
	return r.done()
}

// MaxNackRanges bounds one Nack.
const MaxNackRanges = 8192

func (m *Nack) appendBody(b []byte) []byte {
	ranges := m.Ranges
	if len(ranges) > MaxNackRanges {
		ranges = ranges[:MaxNackRanges]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(ranges)))
	for _, nr := range ranges {
		b = binary.BigEndian.AppendUint32(b, nr.Chunk)
		b = binary.BigEndian.AppendUint16(b, nr.First)
		b = binary.BigEndian.AppendUint16(b, nr.Count)
	}
	stripes := m.Stripes
	if len(stripes) > MaxNackRanges {
		stripes = stripes[:MaxNackRanges]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(stripes)))
	for _, sn := range stripes {
		b = binary.BigEndian.AppendUint32(b, sn.Chunk)
		b = binary.BigEndian.AppendUint16(b, sn.Stripe)
		b = binary.BigEndian.AppendUint16(b, sn.Need)
	}
	return b
}

func (m *Nack) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	n := int(r.u16("range count"))
	if n > MaxNackRanges {
		r.fail("%d ranges, at most %d", n, MaxNackRanges)
	}
	if r.err == nil && len(r.b) < 8*n+2 {
		r.fail("%d ranges need %d bytes, have %d", n, 8*n+2, len(r.b))
	}
	m.Ranges = m.Ranges[:0]
	for i := 0; i < n && r.err == nil; i++ {
		nr := NackRange{Chunk: r.u32("chunk"), First: r.u16("first"), Count: r.u16("count")}
		if nr.Count == 0 || int(nr.First)+int(nr.Count) > 0xffff+1 {
			r.fail("range %d: first %d count %d", i, nr.First, nr.Count)
		}
		m.Ranges = append(m.Ranges, nr)
	}
	ns := int(r.u16("stripe count"))
	if ns > MaxNackRanges {
		r.fail("%d stripes, at most %d", ns, MaxNackRanges)
	}
	if r.err == nil && len(r.b) != 8*ns {
		r.fail("%d stripes need %d bytes, have %d", ns, 8*ns, len(r.b))
	}
	m.Stripes = m.Stripes[:0]
	for i := 0; i < ns && r.err == nil; i++ {
		sn := StripeNeed{Chunk: r.u32("chunk"), Stripe: r.u16("stripe"), Need: r.u16("need")}
		if sn.Need == 0 {
			r.fail("stripe need %d is 0", i)
		}
		m.Stripes = append(m.Stripes, sn)
	}
	return r.done()
}

func (m *Report) appendBody(b []byte) []byte {
	b = appendBool(b, m.OK)
	b = binary.BigEndian.AppendUint64(b, m.Bytes)
	b = append(b, m.SHA256[:]...)
	b = binary.BigEndian.AppendUint64(b, m.ElapsedMillis)
	b = binary.BigEndian.AppendUint32(b, m.BadChunk)
	b = appendStr(b, m.Error)
	return appendBool(b, m.Verified)
}

func (m *Report) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.OK = r.bool("ok")
	m.Bytes = r.u64("bytes")
	r.fixed(m.SHA256[:], "sha256")
	m.ElapsedMillis = r.u64("elapsed")
	m.BadChunk = r.u32("bad chunk")
	m.Error = r.str("error")
	m.Verified = r.bool("verified")
	return r.done()
}

func (m *Close) appendBody(b []byte) []byte {
	b = append(b, m.Code)
	return appendStr(b, m.Reason)
}

func (m *Close) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.Code = r.u8("code")
	m.Reason = r.str("reason")
	return r.done()
}

func (m *Data) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.Chunk)
	b = binary.BigEndian.AppendUint16(b, m.Frag)
	b = binary.BigEndian.AppendUint16(b, m.FragCount)
	b = binary.BigEndian.AppendUint32(b, m.SendPos)
	b = binary.BigEndian.AppendUint32(b, m.Seq)
	return append(b, m.Payload...)
}

func (m *Data) decodeBody(b []byte) error {
	if len(b) < DataHeaderSize+1 {
		return fmt.Errorf("%w: data body of %d bytes", ErrBody, len(b))
	}
	m.Chunk = binary.BigEndian.Uint32(b)
	m.Frag = binary.BigEndian.Uint16(b[4:])
	m.FragCount = binary.BigEndian.Uint16(b[6:])
	m.SendPos = binary.BigEndian.Uint32(b[8:])
	m.Seq = binary.BigEndian.Uint32(b[12:])
	m.Payload = b[DataHeaderSize:]
	if m.FragCount == 0 || m.Frag >= m.FragCount {
		return fmt.Errorf("%w: fragment %d of %d", ErrBody, m.Frag, m.FragCount)
	}
	return nil
}

func (m *Parity) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.Chunk)
	b = binary.BigEndian.AppendUint16(b, m.Stripe)
	b = binary.BigEndian.AppendUint16(b, m.Index)
	b = binary.BigEndian.AppendUint32(b, m.SendPos)
	b = binary.BigEndian.AppendUint32(b, m.Seq)
	return append(b, m.Payload...)
}

func (m *Parity) decodeBody(b []byte) error {
	if len(b) < ParityHeaderSize+1 {
		return fmt.Errorf("%w: parity body of %d bytes", ErrBody, len(b))
	}
	m.Chunk = binary.BigEndian.Uint32(b)
	m.Stripe = binary.BigEndian.Uint16(b[4:])
	m.Index = binary.BigEndian.Uint16(b[6:])
	m.SendPos = binary.BigEndian.Uint32(b[8:])
	m.Seq = binary.BigEndian.Uint32(b[12:])
	m.Payload = b[ParityHeaderSize:]
	return nil
}

func (m *Beacon) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.SendPos)
	b = binary.BigEndian.AppendUint32(b, m.Seq)
	b = append(b, m.State)
	return binary.BigEndian.AppendUint64(b, m.Rate)
}

func (m *Beacon) decodeBody(b []byte) error {
	r := bodyReader{b: b}
	m.SendPos = r.u32("send position")
	m.Seq = r.u32("seq")
	m.State = r.u8("state")
	m.Rate = r.u64("rate")
	if r.err == nil && m.State > BeaconAborted {
		r.fail("state %d", m.State)
	}
	return r.done()
}
