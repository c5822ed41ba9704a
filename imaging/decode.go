package imaging

import "fmt"

// Decoder turns a chunk's wire bytes back into its uncompressed bytes and
// checks them against the manifest. A Decoder is not safe for concurrent
// use; give each goroutine its own.
type Decoder struct{}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{} }

// Decode returns chunk i's uncompressed bytes from its wire bytes, after
// checking their SHA-256 against the manifest. The result may alias wire
// or the decoder's own buffer, and is valid until the next call.
func (d *Decoder) Decode(m *Manifest, i int, wire []byte) ([]byte, error) {
	if i < 0 || i >= len(m.Chunks) {
		return nil, fmt.Errorf("chunk %d out of range", i)
	}
	var data []byte
	switch enc := m.Chunks[i].Encoding; enc {
	case EncodingRaw:
		data = wire
	default:
		return nil, fmt.Errorf("chunk %d: %s chunks are not supported by this build", i, enc)
	}
	if err := m.CheckChunk(i, data); err != nil {
		return nil, err
	}
	return data, nil
}

// Close releases the decoder's resources.
func (d *Decoder) Close() {}
