package imaging

// Stats counts a manifest's chunks and bytes by encoding.
type Stats struct {
	Chunks                    int
	Zero, Raw, Zstd           int   // chunks of each encoding
	ZeroBytes, RawBytes       int64 // uncompressed bytes of zero and raw chunks
	ZstdBytes, ZstdWireBytes  int64 // uncompressed and compressed bytes of zstd chunks
	ImageBytes, WireBytes     int64
	LargestWire, SmallestWire int // wire sizes of the chunks that have bytes
}

// Stats counts the manifest's chunks by encoding.
func (m *Manifest) Stats() Stats {
	s := Stats{Chunks: len(m.Chunks), ImageBytes: m.ImageSize}
	for i, c := range m.Chunks {
		_, n := m.ChunkRange(i)
		switch c.Encoding {
		case EncodingZero:
			s.Zero++
			s.ZeroBytes += int64(n)
			continue
		case EncodingRaw:
			s.Raw++
			s.RawBytes += int64(n)
		case EncodingZstd:
			s.Zstd++
			s.ZstdBytes += int64(n)
			s.ZstdWireBytes += int64(c.WireSize)
		}
		w := int(c.WireSize)
		s.WireBytes += int64(w)
		s.LargestWire = max(s.LargestWire, w)
		if s.SmallestWire == 0 || w < s.SmallestWire {
			s.SmallestWire = w
		}
	}
	return s
}

// Ratio is the uncompressed size over the wire size (how much smaller
// the wire makes the image), or 0 for an image with no wire bytes.
func (s Stats) Ratio() float64 {
	if s.WireBytes == 0 {
		return 0
	}
	return float64(s.ImageBytes) / float64(s.WireBytes)
}
