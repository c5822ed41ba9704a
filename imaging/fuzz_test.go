package imaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzManifestUnmarshal: any input either fails cleanly or decodes to a
// valid manifest that encodes back to the same bytes.
func FuzzManifestUnmarshal(f *testing.F) {
	img := syntheticImage(2, 4096, 8, 100)
	_, m := packBytes(f, img, PackOptions{ChunkSize: 4096})
	good := mustMarshal(f, m)
	f.Add(good, false)
	f.Add(good, true)
	f.Add(good[:len(good)-1], true)
	f.Add([]byte("SHMF"), false)
	flagged := bytes.Clone(good)
	flagged[7] = 1 // a non-zero reserved field must be refused, not dropped
	f.Add(flagged, true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		// With fixCRC the trailing checksum is made right, so the fuzzer
		// reaches the decoder behind it instead of stopping at the CRC.
		if fixCRC && len(b) >= 4 {
			b = append([]byte(nil), b...)
			n := len(b) - 4
			binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], crc32.MakeTable(crc32.Castagnoli)))
		}
		var m Manifest
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid manifest: %v", err)
		}
		again, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs (err %v)", err)
		}
	})
}

// FuzzPackedHeader: any 64 bytes either fail cleanly or decode to a header
// whose sections are sane and which encodes back to the same bytes.
func FuzzPackedHeader(f *testing.F) {
	h := packedHeader{Version: 1, ManifestOffset: 64, ManifestLength: 200, DataOffset: 4096, DataLength: 12345, ManifestCRC: 7}
	f.Add(h.marshal())
	h.ManifestOffset, h.DataOffset = 4096+12345, 4096
	f.Add(h.marshal())
	f.Add(make([]byte, packedHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parsePackedHeader(b)
		if err != nil {
			if !errors.Is(err, ErrPacked) {
				t.Fatalf("error %v does not wrap ErrPacked", err)
			}
			return
		}
		if h.ManifestOffset < packedHeaderSize || h.ManifestLength <= 0 || h.end() < h.ManifestOffset+h.ManifestLength || h.end() < 0 {
			t.Fatalf("accepted a header with bad sections: %+v", h)
		}
		if !bytes.Equal(h.marshal(), b[:packedHeaderSize]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// FuzzDecodeZstd feeds arbitrary wire bytes to a zstd chunk of a manifest:
// the decoder must never return data that does not match the manifest's
// hash, never return more than the chunk's length, and never panic.
func FuzzDecodeZstd(f *testing.F) {
	const n = 8192
	chunk := bytes.Repeat([]byte("shoal fuzz "), n/11+1)[:n]
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	if err != nil {
		f.Fatal(err)
	}
	wire := enc.EncodeAll(chunk, nil)
	big := enc.EncodeAll(make([]byte, 4<<20), nil) // a "bomb": 4 MiB of zeros
	enc.Close()
	f.Add(wire, false)
	f.Add(big, false)
	f.Add(wire, true)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, false)
	f.Fuzz(func(t *testing.T, wire []byte, hashOfData bool) {
		if len(wire) == 0 || len(wire) >= n {
			return
		}
		m := &Manifest{ImageSize: n, ChunkSize: n, Chunks: []ChunkInfo{{Encoding: EncodingZstd, WireSize: uint32(len(wire)), SHA256: sha256.Sum256(chunk)}}}
		d := NewDecoder()
		defer d.Close()
		data, err := d.Decode(m, 0, wire)
		if err != nil {
			var ce *ChunkError
			if !errors.As(err, &ce) || ce.Chunk != 0 {
				t.Fatalf("error %v is not a ChunkError for chunk 0", err)
			}
			return
		}
		if len(data) != n || sha256.Sum256(data) != m.Chunks[0].SHA256 {
			t.Fatal("returned data that does not match the manifest")
		}
	})
}
