package protocol

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"maps"
	"reflect"
	"slices"
	"testing"
)

func testKey(t testing.TB, text string) Key {
	k, err := ParseKey([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recrc fixes the checksum after a deliberate change, so the change reaches
// the seal check instead of the CRC check.
func recrc(b []byte) []byte {
	n := len(b) - TrailerSize
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
	return b
}

func TestSealRoundTrip(t *testing.T) {
	k := testKey(t, "correct horse battery staple")
	for _, encrypt := range []bool{false, true} {
		keys := k.Session("lab1", 42, encrypt)
		for name, m := range samples() {
			t.Run(name, func(t *testing.T) {
				tx, rx := keys.Data(), keys.Data()
				b := tx.Marshal(42, FlagRepair, m)
				h, got, err := rx.OpenMessage(b)
				if err != nil {
					t.Fatalf("encrypt=%v: open: %v", encrypt, err)
				}
				if h.Flags&FlagRepair == 0 || h.Flags&FlagAuth == 0 || (h.Flags&FlagEncrypted != 0) != encrypt {
					t.Errorf("flags %08b", h.Flags)
				}
				if !reflect.DeepEqual(normalize(got), normalize(m)) {
					t.Errorf("round trip:\n got %#v\nwant %#v", got, m)
				}
			})
		}
	}
}

func TestSealRejects(t *testing.T) {
	k := testKey(t, "correct horse battery staple")
	other := testKey(t, "another key of enough length")
	msg := &Data{Chunk: 1, Frag: 0, FragCount: 2, SendPos: 1, Seq: 1, Payload: []byte("secret disk bytes")}
	tests := []struct {
		name string
		pkt  func() []byte
		rx   *Seal
		want error
	}{
		{"wrong key", func() []byte { return other.Session("lab1", 7, false).Data().Marshal(7, 0, msg) }, k.Session("lab1", 7, false).Data(), ErrForged},
		{"other session id", func() []byte { return k.Session("lab1", 8, false).Data().Marshal(7, 0, msg) }, k.Session("lab1", 7, false).Data(), ErrForged},
		{"other session name", func() []byte { return k.Session("lab2", 7, false).Data().Marshal(7, 0, msg) }, k.Session("lab1", 7, false).Data(), ErrForged},
		{"flipped body byte", func() []byte {
			b := k.Session("lab1", 7, false).Data().Marshal(7, 0, msg)
			b[HeaderSize+seqSize+3] ^= 1
			return recrc(b)
		}, k.Session("lab1", 7, false).Data(), ErrForged},
		{"flipped header flag", func() []byte {
			b := k.Session("lab1", 7, false).Data().Marshal(7, 0, msg)
			b[4] ^= FlagRepair
			return recrc(b)
		}, k.Session("lab1", 7, false).Data(), ErrForged},
		{"encryption stripped", func() []byte {
			b := k.Session("lab1", 7, true).Data().Marshal(7, 0, msg)
			b[4] &^= FlagEncrypted
			return recrc(b)
		}, k.Session("lab1", 7, true).Data(), ErrForged},
		{"unsealed to a keyed receiver", func() []byte { return Marshal(7, 0, msg) }, k.Session("lab1", 7, false).Data(), ErrUnsealed},
		{"sealed to an unkeyed receiver", func() []byte { return k.Session("lab1", 7, false).Data().Marshal(7, 0, msg) }, nil, ErrSealed},
		{"other stream of the same connection", func() []byte {
			toClient, _ := k.Session("lab1", 7, false).Conn([16]byte{1})
			return toClient.Marshal(7, 0, msg)
		}, func() *Seal { _, toServer := k.Session("lab1", 7, false).Conn([16]byte{1}); return toServer }(), ErrForged},
		{"other connection nonce", func() []byte {
			toClient, _ := k.Session("lab1", 7, false).Conn([16]byte{1})
			return toClient.Marshal(7, 0, msg)
		}, func() *Seal { toClient, _ := k.Session("lab1", 7, false).Conn([16]byte{2}); return toClient }(), ErrForged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := tt.rx.Open(tt.pkt()); !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSealDropsReplays(t *testing.T) {
	keys := testKey(t, "correct horse battery staple").Session("lab1", 7, true)
	tx, rx := keys.Data(), keys.Data()
	var pkts [][]byte
	for i := range 5 {
		pkts = append(pkts, tx.Marshal(7, 0, &Beacon{SendPos: uint32(i)}))
	}
	// Out of order is fine, a second copy is not.
	for _, i := range []int{1, 0, 3, 2} {
		if _, _, err := rx.Open(append([]byte(nil), pkts[i]...)); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	if _, _, err := rx.Open(append([]byte(nil), pkts[3]...)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v, want ErrReplayed", err)
	}
	if _, _, err := rx.Open(pkts[4]); err != nil {
		t.Fatalf("packet 4: %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	steps := []struct {
		seq  uint64
		want bool
	}{
		{0, false}, {1, true}, {1, false}, {5, true}, {3, true}, {3, false},
		{windowBits + 10, true}, {5, false}, // fell out of the window
		{windowBits + 9, true}, {windowBits + 10, false},
		{3 * windowBits, true}, {2*windowBits + 1, true}, {2 * windowBits, false},
	}
	for i, s := range steps {
		if got := w.accept(s.seq); got != s.want {
			t.Fatalf("step %d: accept(%d) = %v, want %v", i, s.seq, got, s.want)
		}
	}
}

func TestParseKey(t *testing.T) {
	if _, err := ParseKey([]byte("  short  ")); err == nil {
		t.Fatal("accepted a short key")
	}
	a, _ := ParseKey([]byte(GenerateKeyText() + "\n"))
	b, _ := ParseKey([]byte(GenerateKeyText()))
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	c, _ := ParseKey([]byte("  the same text of some length\n"))
	d, _ := ParseKey([]byte("the same text of some length"))
	if c != d {
		t.Fatal("surrounding white space changes the key")
	}
}

// FuzzOpen feeds arbitrary bytes to a keyed receiver: no panic, and
// nothing is accepted but packets the sealer made from the sample messages
// (the fuzzer cannot forge a tag). The check compares message contents,
// not bytes, since a cached corpus may hold genuine packets sealed under
// other sequence numbers.
func FuzzOpen(f *testing.F) {
	k, _ := ParseKey([]byte("fuzzing key of enough length"))
	all := samples()
	for _, encrypt := range []bool{false, true} {
		tx := k.Session("s", 1, encrypt).Data()
		for _, name := range slices.Sorted(maps.Keys(all)) {
			f.Add(tx.Marshal(1, 0, all[name]), encrypt)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, encrypt bool) {
		rx := k.Session("s", 1, encrypt).Data()
		h, body, err := rx.Open(append([]byte(nil), b...))
		if err != nil {
			return
		}
		m, err := NewMessage(h.Type)
		if err == nil {
			err = m.decodeBody(body)
		}
		if err == nil {
			for _, s := range all {
				if reflect.DeepEqual(normalize(m), normalize(s)) {
					return
				}
			}
		}
		t.Fatalf("accepted a packet that was never sealed: %x", b)
	})
}

func TestUnverifiedReadsSealedDiscovery(t *testing.T) {
	seal := testKey(t, "correct horse battery staple").DiscoverySeal("lab1")
	d := &Discover{Nonce: 5, Name: "lab1", MAC: []byte{1, 2, 3, 4, 5, 6}}
	for _, b := range [][]byte{Marshal(0, 0, d), seal.Marshal(0, 0, d)} {
		_, m, err := Unverified(b)
		if err != nil || !reflect.DeepEqual(m, d) {
			t.Fatalf("Unverified = %#v, %v", m, err)
		}
	}
	enc := testKey(t, "correct horse battery staple").Session("lab1", 1, true).Data().Marshal(0, 0, d)
	if _, _, err := Unverified(enc); !errors.Is(err, ErrSealed) {
		t.Fatalf("Unverified(encrypted) = %v, want ErrSealed", err)
	}
}
