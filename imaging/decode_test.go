package imaging

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestDecoder(t *testing.T) {
	const n = 64 << 10
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	wire := enc.EncodeAll(data, nil)
	bomb := enc.EncodeAll(make([]byte, 8<<20), nil) // claims 8 MiB: more than the chunk
	twoFrames := append(bytes.Clone(wire), wire...)
	corrupt := bytes.Clone(wire)
	corrupt[len(corrupt)/2] ^= 0x55
	sum := sha256.Sum256(data)
	otherSum := sha256.Sum256([]byte("other"))

	tests := []struct {
		name    string
		enc     Encoding
		sum     [32]byte
		wire    []byte
		wireLen int // manifest's wire size; 0 means len(wire)
		want    error
	}{
		{name: "zstd", enc: EncodingZstd, sum: sum, wire: wire},
		{name: "raw", enc: EncodingRaw, sum: sum, wire: data},
		{name: "zero", enc: EncodingZero, sum: sha256.Sum256(make([]byte, n)), wire: nil},
		{name: "zstd wrong hash", enc: EncodingZstd, sum: otherSum, wire: wire, want: ErrChunkHash},
		{name: "raw wrong hash", enc: EncodingRaw, sum: otherSum, wire: data, want: ErrChunkHash},
		{name: "raw short", enc: EncodingRaw, sum: sum, wire: data[:n-1], want: ErrChunkHash},
		{name: "zstd corrupt frame", enc: EncodingZstd, sum: sum, wire: corrupt, want: ErrChunkData},
		{name: "zstd bomb", enc: EncodingZstd, sum: sum, wire: bomb, want: ErrChunkData},
		{name: "zstd two frames", enc: EncodingZstd, sum: sum, wire: twoFrames, want: ErrChunkData},
		{name: "zstd wire size mismatch", enc: EncodingZstd, sum: sum, wire: wire, wireLen: len(wire) + 1, want: ErrChunkData},
		{name: "zero with bytes", enc: EncodingZero, sum: sum, wire: []byte{1}, want: ErrChunkData},
	}
	d := NewDecoder() // one decoder for all: state must not leak between chunks
	defer d.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := tc.wireLen
			if ws == 0 {
				ws = len(tc.wire)
			}
			switch tc.enc {
			case EncodingZero:
				ws = 0
			case EncodingRaw:
				ws = n
			}
			m := &Manifest{ImageSize: n, ChunkSize: n, Chunks: []ChunkInfo{{Encoding: tc.enc, WireSize: uint32(ws), SHA256: tc.sum}}}
			got, err := d.Decode(m, 0, tc.wire)
			if tc.want != nil {
				var ce *ChunkError
				if !errors.Is(err, tc.want) || !errors.As(err, &ce) || ce.Chunk != 0 {
					t.Fatalf("error %v, want a ChunkError wrapping %v", err, tc.want)
				}
				if got != nil {
					t.Fatal("returned data with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.enc != EncodingZero && !bytes.Equal(got, data) {
				t.Fatal("decoded data differs")
			}
		})
	}
	if _, err := d.Decode(&Manifest{ImageSize: n, ChunkSize: n, Chunks: make([]ChunkInfo, 1)}, 3, nil); err == nil {
		t.Error("chunk out of range accepted")
	}
}
