package protocol

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParse feeds whole packets to the decoder: it must never panic, and
// whatever it accepts must encode back to the same bytes.
func FuzzParse(f *testing.F) {
	for _, m := range samples() {
		f.Add(Marshal(3, 0, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, m, err := Parse(b)
		if err != nil {
			return
		}
		again := Marshal(h.Session, h.Flags, m)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, again)
		}
	})
}

// FuzzDecodeBody skips the checksum, so the fuzzer reaches every body
// decoder directly. An accepted body must survive a round trip.
func FuzzDecodeBody(f *testing.F) {
	for _, m := range samples() {
		f.Add(uint8(m.Type()), m.appendBody(nil))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m, err := NewMessage(Type(typ))
		if err != nil {
			return
		}
		if err := m.decodeBody(body); err != nil {
			return
		}
		again, _ := NewMessage(Type(typ))
		if err := again.decodeBody(m.appendBody(nil)); err != nil {
			t.Fatalf("re-decoding an accepted %s body: %v", Type(typ), err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(again)) {
			t.Fatalf("%s body changed in a round trip:\n%#v\n%#v", Type(typ), m, again)
		}
	})
}

// normalize maps empty byte slices to nil so DeepEqual compares contents.
func normalize(m Message) Message {
	switch v := m.(type) {
	case *Discover:
		if len(v.MAC) == 0 {
			v.MAC = nil
		}
	case *Join:
		if len(v.MAC) == 0 {
			v.MAC = nil
		}
		if len(v.Have) == 0 {
			v.Have = nil
		}
	case *Nack:
		if len(v.Ranges) == 0 {
			v.Ranges = nil
		}
		if len(v.Stripes) == 0 {
			v.Stripes = nil
		}
	}
	return m
}

// FuzzReadMessage reads a stream of packets as the control connection does.
func FuzzReadMessage(f *testing.F) {
	var stream []byte
	for _, m := range samples() {
		stream = Append(stream, 5, 0, m)
	}
	f.Add(stream)
	f.Add(stream[:len(stream)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for i := 0; i < 64; i++ {
			if _, _, err := ReadMessage(r, 1<<16, nil); err != nil {
				return
			}
		}
	})
}
