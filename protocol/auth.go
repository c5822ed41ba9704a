package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// Keyed sessions.
//
// With a key, every packet is sealed with AES-256-GCM: the packet gets
// FlagAuth, and between header and CRC it carries
//
//	seq (8 bytes) | body (n bytes, encrypted with FlagEncrypted) | tag (16 bytes)
//
// The header's body length counts all three. The tag covers the header, the
// sequence number and the body, so nothing of a packet can be changed. The
// GCM nonce is the stream ID (4 bytes) and the sequence number: each stream
// (the multicast data, each direction of each control connection, discovery)
// has its own key or its own nonce space, and receivers drop a sequence
// number they have seen (replays).
//
// Keys are derived with HKDF-SHA256 from the master key, which is the
// SHA-256 of the key text the operator gives (a key file or shoal.key= at
// boot): per session name for discovery, and per session name and session
// ID for everything after it, so a packet of one session is worthless in
// any other.

// Flags of sealed packets.
const (
	FlagAuth      uint8 = 1 << 6 // sealed: seq and tag present
	FlagEncrypted uint8 = 1 << 7 // the body is encrypted
)

// Sizes of the seal.
const (
	seqSize  = 8
	tagSize  = 16
	SealSize = seqSize + tagSize // bytes a seal adds to a packet
)

// Stream IDs for nonces.
const (
	streamData      uint32 = 0
	streamToClient  uint32 = 1
	streamToServer  uint32 = 2
	streamDiscovery uint32 = 0xffffffff
)

// Errors of sealed packets.
var (
	ErrUnsealed = errors.New("packet is not authenticated, but the session has a key")
	ErrSealed   = errors.New("packet is authenticated, but this side has no key")
	ErrForged   = errors.New("authentication failed (forged, corrupted, or another key)")
	ErrReplayed = errors.New("replayed packet")
)

// Key is a session's shared secret.
type Key struct {
	master [32]byte
}

// MinKeyText is the shortest key text accepted.
const MinKeyText = 16

// ParseKey derives a key from key text: any text of at least MinKeyText
// bytes after trimming white space, e.g. what GenerateKeyText returns.
func ParseKey(text []byte) (Key, error) {
	t := strings.TrimSpace(string(text))
	if len(t) < MinKeyText {
		return Key{}, fmt.Errorf("key is %d bytes; use at least %d (shoal key new makes one)", len(t), MinKeyText)
	}
	return Key{master: sha256.Sum256([]byte("shoal key v1\x00" + t))}, nil
}

// LoadKeyFile reads and parses a key file.
func LoadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("key file: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// GenerateKeyText returns 256 random bits as hex, for a new key file.
func GenerateKeyText() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (k Key) derive(info string) []byte {
	out, err := hkdf.Key(sha256.New, k.master[:], nil, info, 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce; 32 always works
	}
	return out
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // 32-byte keys are always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// DiscoverySeal returns the seal for discovery packets of a session name.
// Discovery is authenticated but never encrypted.
func (k Key) DiscoverySeal(name string) *Seal {
	return &Seal{aead: newGCM(k.derive("shoal/v1/discovery/" + name)), stream: streamDiscovery, randomSeq: true}
}

// SessionKeys holds the keys of one session.
type SessionKeys struct {
	key     Key
	prefix  string
	encrypt bool
}

// Session returns the keys of the session with this name and ID; encrypt
// selects confidentiality as well as authentication.
func (k Key) Session(name string, id uint64, encrypt bool) *SessionKeys {
	return &SessionKeys{key: k, prefix: fmt.Sprintf("shoal/v1/session/%s/%016x/", name, id), encrypt: encrypt}
}

// Data returns the seal of the multicast data stream.
func (s *SessionKeys) Data() *Seal {
	return &Seal{aead: newGCM(s.key.derive(s.prefix + "data")), stream: streamData, encrypt: s.encrypt}
}

// Conn returns the seals of one control connection, bound to the nonce the
// server chose for it: server to client, and client to server.
func (s *SessionKeys) Conn(nonce [16]byte) (toClient, toServer *Seal) {
	base := s.prefix + "conn/" + hex.EncodeToString(nonce[:]) + "/"
	return &Seal{aead: newGCM(s.key.derive(base + "to-client")), stream: streamToClient, encrypt: s.encrypt},
		&Seal{aead: newGCM(s.key.derive(base + "to-server")), stream: streamToServer, encrypt: s.encrypt}
}

// Seal seals and opens the packets of one stream. A nil *Seal stands for
// an unkeyed session: packets go out plain and sealed ones are refused.
// Methods are safe for concurrent use.
type Seal struct {
	aead      cipher.AEAD
	stream    uint32
	encrypt   bool
	randomSeq bool // discovery: no shared counter, a random seq per packet
	next      atomic.Uint64
	mu        sync.Mutex
	replay    replayWindow
}

func (s *Seal) nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint32(n[:], s.stream)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// Append encodes m as one packet, sealed unless s is nil.
func (s *Seal) Append(dst []byte, session uint64, flags uint8, m Message) []byte {
	if s == nil {
		return Append(dst, session, flags, m)
	}
	var seq uint64
	if s.randomSeq {
		var b [8]byte
		rand.Read(b[:])
		seq = binary.BigEndian.Uint64(b[:])
	} else {
		seq = s.next.Add(1)
	}
	flags |= FlagAuth
	if s.encrypt {
		flags |= FlagEncrypted
	}
	start := len(dst)
	dst = append(dst, magic[0], magic[1], Version, byte(m.Type()), flags, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, session)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	bodyStart := len(dst)
	dst = m.appendBody(dst)
	body := len(dst) - bodyStart
	binary.BigEndian.PutUint32(dst[start+16:], uint32(seqSize+body+tagSize))
	if s.encrypt {
		// Encrypt the body in place; the tag follows it.
		dst = s.aead.Seal(dst[:bodyStart], s.nonce(seq), dst[bodyStart:], dst[start:bodyStart])
	} else {
		var tag [tagSize]byte
		dst = append(dst, s.aead.Seal(tag[:0], s.nonce(seq), nil, dst[start:])...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// Marshal is Append to a new slice.
func (s *Seal) Marshal(session uint64, flags uint8, m Message) []byte {
	return s.Append(nil, session, flags, m)
}

// Open checks a whole packet (framing, checksum, seal, replay) and returns
// its header and plain body. An encrypted body is decrypted in place in b.
// With a nil s, sealed packets are refused and plain ones pass.
func (s *Seal) Open(b []byte) (Header, []byte, error) {
	h, payload, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	sealed := h.Flags&FlagAuth != 0
	switch {
	case s == nil && sealed:
		return h, nil, ErrSealed
	case s == nil:
		return h, payload, nil
	case !sealed:
		return h, nil, ErrUnsealed
	case len(payload) < SealSize:
		return h, nil, fmt.Errorf("%w: sealed packet of %d bytes", ErrShort, len(b))
	case h.Flags&FlagEncrypted != 0 != s.encrypt:
		return h, nil, fmt.Errorf("%w: encryption flag differs from the session's", ErrForged)
	}
	seq := binary.BigEndian.Uint64(payload)
	headerAndSeq := b[:HeaderSize+seqSize]
	sealedBody := payload[seqSize:]
	var body []byte
	if s.encrypt {
		body, err = s.aead.Open(sealedBody[:0], s.nonce(seq), sealedBody, headerAndSeq)
	} else {
		n := len(sealedBody) - tagSize
		_, err = s.aead.Open(nil, s.nonce(seq), sealedBody[n:], b[:HeaderSize+seqSize+n])
		body = sealedBody[:n]
	}
	if err != nil {
		return h, nil, ErrForged
	}
	if !s.randomSeq {
		s.mu.Lock()
		fresh := s.replay.accept(seq)
		s.mu.Unlock()
		if !fresh {
			return h, nil, ErrReplayed
		}
	}
	return h, body, nil
}

// OpenMessage is Open followed by decoding the body into a new message.
func (s *Seal) OpenMessage(b []byte) (Header, Message, error) {
	h, body, err := s.Open(b)
	if err != nil {
		return h, nil, err
	}
	m, err := NewMessage(h.Type)
	if err != nil {
		return h, nil, err
	}
	if err := m.decodeBody(body); err != nil {
		return h, nil, fmt.Errorf("%s packet: %w", h.Type, err)
	}
	return h, m, nil
}

// replayWindow remembers which of the last windowBits sequence numbers
// were seen; older ones are refused.
type replayWindow struct {
	top  uint64 // highest seen
	bits [windowBits / 64]uint64
}

const windowBits = 1 << 16

func (w *replayWindow) accept(seq uint64) bool {
	if seq == 0 {
		return false
	}
	switch {
	case seq > w.top:
		// Clear the slots between the old top and the new one.
		if seq-w.top >= windowBits {
			w.bits = [windowBits / 64]uint64{}
		} else {
			for s := w.top + 1; s <= seq; s++ {
				w.bits[(s/64)%(windowBits/64)] &^= 1 << (s % 64)
			}
		}
		w.top = seq
	case w.top-seq >= windowBits:
		return false
	}
	slot, bit := (seq/64)%(windowBits/64), uint64(1)<<(seq%64)
	if w.bits[slot]&bit != 0 {
		return false
	}
	w.bits[slot] |= bit
	return true
}

// Unverified decodes a packet without checking its seal: a server reads
// the session name of a sealed Discover with it, to know which key to
// check it with. Nothing else may trust what it returns.
func Unverified(b []byte) (Header, Message, error) {
	h, payload, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if h.Flags&FlagAuth != 0 {
		if h.Flags&FlagEncrypted != 0 || len(payload) < SealSize {
			return h, nil, ErrSealed
		}
		payload = payload[seqSize : len(payload)-tagSize]
	}
	m, err := NewMessage(h.Type)
	if err != nil {
		return h, nil, err
	}
	if err := m.decodeBody(payload); err != nil {
		return h, nil, fmt.Errorf("%s packet: %w", h.Type, err)
	}
	return h, m, nil
}
