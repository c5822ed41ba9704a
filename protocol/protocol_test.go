package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", os.Getenv("UPDATE_TESTDATA") != "", "rewrite the golden packets in testdata/")

// samples holds one filled-in message of every type.
func samples() map[string]Message {
	return map[string]Message{
		"discover": &Discover{Nonce: 0x0102030405060708, Name: "lab1", MAC: []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}},
		"offer": &Offer{Nonce: 7, Name: "lab1", SessionID: 0x1122334455667788, ControlPort: 40001, ImageSize: 64 << 20,
			Sending: true, Clients: 3, Encrypted: true},
		"not-served": &NotServed{Nonce: 9, Served: "lab2", Reason: "the session needs a key"},
		"challenge":  &Challenge{Nonce: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
		"join": &Join{Name: "lab1", MAC: []byte{0x52, 0x54, 0, 1, 2, 3}, Hostname: "pc17", Disk: "/dev/sda",
			DiskSize: 256 << 30, BufferChunks: 64, ImageSHA256: [32]byte{9, 9}, Have: []ChunkRange{{First: 0, Count: 10}, {First: 12, Count: 3}},
			RejoinSession: 0x99, RejoinClient: 4},
		"accept": &Accept{ClientID: 3, Group: netip.MustParseAddr("239.12.34.56"), DataPort: 9941, PayloadSize: 1432,
			HeartbeatMillis: 250, TimeoutMillis: 8000},
		"refuse":   &Refuse{Code: RefuseDiskTooSmall, Reason: "disk is 32 MiB, image is 64 MiB"},
		"manifest": &Manifest{Data: []byte("opaque manifest bytes")},
		"start":    &Start{Clients: 3, Rate: 500e6},
		"progress": &Progress{LowWater: 12, Written: 11, BytesWritten: 11 << 20, Received: 9000, Lost: 17, Phase: PhaseReceiving, Heard: 9100, Expected: 9200},
		"redirect": &Redirect{Group: netip.MustParseAddr("10.77.0.255"), Port: 9941, Why: "no client hears the multicast group"},
		"nack": &Nack{Ranges: []NackRange{{Chunk: 4, First: 0, Count: 3}, {Chunk: 5, First: 700, Count: 33}},
			Stripes: []StripeNeed{{Chunk: 4, Stripe: 0, Need: 3}, {Chunk: 5, Stripe: 11, Need: 1}}},
		"parity": &Parity{Chunk: 5, Stripe: 3, Index: 1, SendPos: 9, Seq: 77, Payload: []byte("parity shard bytes")},
		"report": &Report{OK: true, Bytes: 64 << 20, SHA256: [32]byte{1, 2, 3}, ElapsedMillis: 12345,
			BadChunk: NoChunk, Error: "", Verified: true},
		"close":  &Close{Code: CloseDropped, Reason: "no feedback for 8s"},
		"data":   &Data{Chunk: 5, Frag: 2, FragCount: 733, SendPos: 5, Seq: 99, Payload: []byte("hello, disk")},
		"beacon": &Beacon{SendPos: 64, Seq: 100, State: BeaconFinished, Rate: 1e9},
	}
}

func TestRoundTripAndGolden(t *testing.T) {
	for name, m := range samples() {
		t.Run(name, func(t *testing.T) {
			b := Marshal(0xfeedface, FlagRepair, m)
			h, got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if h.Session != 0xfeedface || h.Flags != FlagRepair || h.Type != m.Type() || h.Version != Version {
				t.Errorf("header = %+v", h)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("round trip:\n got %#v\nwant %#v", got, m)
			}
			golden := filepath.Join("testdata", name+".hex")
			if *update {
				if err := os.WriteFile(golden, []byte(hex.Dump(b)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden packet missing (run with UPDATE_TESTDATA=1): %v", err)
			}
			if hex.Dump(b) != string(want) {
				t.Errorf("encoding changed from %s:\n%s", golden, hex.Dump(b))
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good := Marshal(1, 0, &Beacon{SendPos: 1, State: BeaconSending})
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", good[:10], ErrShort},
		{"magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"version", mutate(func(b []byte) []byte { b[2] = 99; return b }), ErrVersion},
		{"flipped body bit", mutate(func(b []byte) []byte { b[HeaderSize] ^= 1; return b }), ErrChecksum},
		{"flipped crc bit", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), ErrChecksum},
		{"truncated", good[:len(good)-1], ErrLength},
		{"trailing", append(append([]byte(nil), good...), 0), ErrLength},
		{"unknown type", Marshal(1, 0, fakeType{}), ErrType},
		{"bad body", Marshal(1, 0, &Beacon{State: 77}), ErrBody},
		{"nack zero count", Marshal(1, 0, &Nack{Ranges: []NackRange{{Chunk: 1, First: 1, Count: 0}}}), ErrBody},
		{"data frag past count", Marshal(1, 0, &Data{Frag: 5, FragCount: 5, Payload: []byte{1}}), ErrBody},
		{"accept no group", Marshal(1, 0, &Accept{DataPort: 1, PayloadSize: 1, HeartbeatMillis: 1, TimeoutMillis: 1}), ErrBody},
		{"join no buffer", Marshal(1, 0, &Join{Name: "x"}), ErrBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
		})
	}
}

// fakeType encodes as a type no decoder knows.
type fakeType struct{}

func (fakeType) Type() Type                 { return 200 }
func (fakeType) appendBody(b []byte) []byte { return append(b, 1, 2, 3) }
func (fakeType) decodeBody([]byte) error    { return nil }

func TestReadMessageStream(t *testing.T) {
	var stream bytes.Buffer
	var want []Message
	for _, name := range []string{"join", "accept", "manifest", "progress", "nack", "report"} {
		m := samples()[name]
		if err := WriteMessage(&stream, 42, nil, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	for i, w := range want {
		h, m, err := ReadMessage(&stream, 1<<20, nil)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if h.Session != 42 || !reflect.DeepEqual(m, w) {
			t.Fatalf("message %d = %#v, want %#v", i, m, w)
		}
	}
	if _, _, err := ReadMessage(&stream, 1<<20, nil); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}

	big := Marshal(1, 0, &Manifest{Data: make([]byte, 5000)})
	if _, _, err := ReadMessage(bytes.NewReader(big), 4000, nil); !errors.Is(err, ErrLength) {
		t.Fatalf("oversized body: %v, want ErrLength", err)
	}
	if _, _, err := ReadMessage(bytes.NewReader(big[:100]), 1<<20, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut body: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestDataAppendNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 2048)
	d := &Data{Chunk: 1, Frag: 2, FragCount: 3, Payload: make([]byte, 1400)}
	var parsed Data
	allocs := testing.AllocsPerRun(100, func() {
		b := Append(buf[:0], 7, 0, d)
		h, body, err := ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodeBody(h, body, &parsed); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("data encode+decode allocates %.0f times per packet, want 0", allocs)
	}
}
